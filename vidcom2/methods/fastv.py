"""FastV — prune visual tokens inside the LLM once, before layer K, by the last token's attention.

Paper: Chen et al., *An Image is Worth 1/2 Tokens After Layer 2*, ECCV 2024, arXiv 2403.06764.
Official code: github.com/pkunlp-icler/FastV (``fastv_forward``; ``src/FastV/lmms-eval/fastv_kvcache.py``).

Score: attention probabilities of the last prompt token (last query row) at layer ``K-1``, mean over heads,
restricted to visual key columns (the code's rule; the paper text says "average attention", FastV#14). Keep the top
``count(rho, n_vis)`` visual tokens and all text, in original order and with original position ids; layers ``< K``
keep the full KV cache. Defaults: ``K = 2`` (paper title setting). ``retention_ratio`` maps to ``rho`` by
``budget_mode``: ``final`` (default, ``rho = r``: the deep layers hold ``r`` of the tokens) or ``layer_avg``
(``rho = (r*L - K) / (L - K)``, so the layer-averaged retention is ``r``; error below the floor ``K/L``).

dtype: the row is computed in float32 from the model-dtype query and keys; the official code ranks by eager attention
weights in the model dtype (logits and probabilities rounded to bf16, a bf16 head mean), so in bf16 near-equal
tokens at the cut-off may differ (the one documented difference: ``tests/vidcom2/methods/test_llm_rows_bf16.py``).

``budget``: ``global`` (default, official: the top tokens over the whole video), or per-frame budgets, ``uniform``
(``count(rho, N)`` per frame) or ``fca`` (VidCom2's Frame Compression Adjustment, paper Figure 5 "FastV + FCA").
The paper does not say how it grafted FCA onto FastV; the reading here: the per-frame budgets come from FCA on the
pre-LLM visual features (the projector outputs the LLM receives) at FastV's keep fraction ``rho``, and inside each
frame FastV keeps its own highest-attention tokens.

This module is the model-agnostic math and the method's in-LLM plan (:meth:`FastV.plan`: one stage at layer K, scored
by :class:`LastQueryRow`); ``vidcom2.stages.in_llm`` runs it, obtaining the attention row without eager attention
(a registered attention function that computes only that row) and slicing the sequence at layer K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import count, frame_budgets, keep_highest
from vidcom2.methods._topk import keep_top_global
from vidcom2.registry import register
from vidcom2.stages.attention import last_row
from vidcom2.types import MethodInfo, Plan, Selection, Stage


def keep_fraction(retention_ratio: float, num_layers: int | None, prune_layer: int, budget_mode: str) -> float:
    """``rho``, the fraction of visual tokens kept from layer K on, for a ``retention_ratio`` under ``budget_mode``."""
    if budget_mode == "final":
        return float(retention_ratio)
    if budget_mode == "layer_avg":
        if num_layers is None:
            raise ValueError("fastv budget_mode='layer_avg' needs num_layers (the LLM depth)")
        floor = prune_layer / num_layers
        if retention_ratio < floor:
            raise ValueError(
                f"fastv: layer-averaged retention {retention_ratio} is below the floor K/L = {prune_layer}/{num_layers} "
                f"= {floor:.4f} (layers before K see every token); lower prune_layer or use budget_mode='final'"
            )
        return (retention_ratio * num_layers - prune_layer) / (num_layers - prune_layer)
    raise ValueError(f"fastv: budget_mode must be 'final' or 'layer_avg', got {budget_mode!r}")


def layer_average(rho: float, num_layers: int, prune_layer: int) -> float:
    """``R_avg = (K + (L - K) * rho) / L`` (baselines.md 1.1)."""
    return (prune_layer + (num_layers - prune_layer) * rho) / num_layers


def top_visual(scores: torch.Tensor, rho: float) -> torch.Tensor:
    """Indices (ascending) of the ``count(rho, n)`` highest of ``scores [n]`` (visual columns of the attention row)."""
    n = scores.shape[0]
    keep = keep_highest(scores.float().view(1, n), torch.tensor([count(rho, n)])).view(n)
    return keep.nonzero().squeeze(1)


@register
@dataclass(frozen=True)
class FastV:
    """prune_layer: K (scores from layer K-1, pruned before layer K). num_layers: only for ``layer_avg`` on tensors
    (attached to a model, the adapter passes the real depth). budget: ``global`` | ``uniform`` | ``fca`` (above)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="fastv",
        stage="in_llm",
        paper="FastV (ECCV 2024, arXiv 2403.06764)",
        code="github.com/pkunlp-icler/FastV",
        needs=("scores",),
    )
    prune_layer: int = 2
    budget_mode: str = "final"
    num_layers: int | None = None
    budget: str = "global"

    def __post_init__(self):
        check_budget("fastv", self.budget)

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        rho = keep_fraction(retention_ratio, self.num_layers, self.prune_layer, self.budget_mode)
        return Selection(keep=select(features, scores, rho, self.budget), stats={"rho": rho, "budget": self.budget})

    def plan(self, retention_ratio: float, num_layers: int, num_visual: int, *, mrope: bool) -> Plan:
        """One stage before layer K keeping ``count(rho, num_visual)`` (per frame: ``budget``), original positions."""
        k = int(self.prune_layer)
        if not 1 <= k < num_layers:
            raise ValueError(f"fastv: prune_layer must be in [1, {num_layers - 1}] for a {num_layers}-layer LLM, got {k}")
        rho = keep_fraction(retention_ratio, num_layers, k, self.budget_mode)
        stage = Stage(k, count(rho, num_visual), fraction=rho)
        hp = {"rho": rho, **budget_hparams(self.budget)}
        return Plan("fastv", (stage,), LastQueryRow(), "original", hp, budget=self.budget)


@dataclass(frozen=True)
class LastQueryRow:
    """FastV's score recipe: inside layer ``K-1``'s attention, the last prompt query's attention row over the
    sequence, mean over heads (``[kv_len]``; visual columns ranked)."""

    where: ClassVar[str] = "attention"

    def start(self, embeds, visual, *, text_start, prompt_len) -> dict:
        return {}

    def attention_row(self, scoring, query, key, scaling, mask, *, ids, visual, positions) -> torch.Tensor:
        return last_row(query, key, scaling, mask)


BUDGETS = ("global", "uniform", "fca")


def check_budget(name: str, budget: str) -> None:
    if budget not in BUDGETS:
        raise ValueError(f"{name}: budget must be one of {BUDGETS} (global = the official top-k over the video), got {budget!r}")


def budget_hparams(budget: str) -> dict:
    """``{"budget": ...}`` when a plan selects per frame (``uniform``/``fca``), else nothing (global top-k)."""
    return {} if budget == "global" else {"budget": budget}


def select(features: torch.Tensor, scores: torch.Tensor, fraction: float, budget: str) -> torch.Tensor:
    """Bool ``[F, N]``: the top ``fraction`` of ``scores`` over the video (``global``) or per frame, with the frame
    budgets of ``budget`` (``uniform`` | ``fca``) computed from ``features [F, N, D]``."""
    if budget == "global":
        return keep_top_global(scores, fraction).to(features.device)
    return keep_highest(scores.float(), frame_budgets(features, fraction, budget)).to(features.device)
