"""PDrop (PyramidDrop) — drop visual tokens in stages inside the LLM.

Paper: Xing et al., *PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual Redundancy
Reduction*, CVPR 2025, arXiv 2410.17247. Official code: github.com/Cooperx521/PyramidDrop
(``llava/model/modeling_llama_pdrop.py``: ``pdrop_forward``, ``pdrop_rank_drop``).

At each stage boundary ``l`` (official ``[8, 16, 24]`` of 32 layers; here quarter depth ``round(L*[1/4,1/2,3/4])``
unless given) the visual tokens are ranked by the attention of the last instruction token, recomputed with layer
``l``'s own input norm and query/key projections (asked of the adapter) at the current positions, and stage ``s`` keeps
``count(lambda**s, N)`` of the original ``N``. ``lambda`` from ``budget_mode``: ``final`` (default;
``lambda = r**(1/S)``, so the deepest layers hold ``r``) or ``layer_avg`` (solved so that the layer-averaged
retention is ``r``; error below the floor ``l_1/L``). Positions are renumbered contiguously after each drop
(the official behaviour). The official per-stage count truncates (``int``); this project's one rule rounds.

The official schedule (``scripts/v1_5/pdrop_eval/*.sh`` at 6444f30: ``--layer_list '[8,16,24]'
--image_token_ratio_list "[0.5,0.25,0.125]"``, i.e. lambda = 0.5 on a 32-layer LLM) is this method with
``layers=(8, 16, 24)`` (or the quarter-depth default, equal at L = 32) and ``retention_ratio=0.125`` in ``final``
mode: ``lambda = 0.125**(1/3) = 0.5`` exactly, fractions 0.5 / 0.25 / 0.125 of ``N``. In float32 the one remaining
difference is the count: :func:`stage_counts` gives both rules; they agree whenever ``N * lambda**s`` is an integer
or its fractional part is below 0.5 (LLaVA-OV: ``N = 196 F`` with F even), otherwise ``round`` keeps one token
more per stage. :meth:`PDrop.plan` applies the project's ``count`` (or ``counting="truncate"``), and the stages'
score is :class:`RecomputedRow`; ``vidcom2.stages.in_llm`` runs the plan.

dtype: the score row is computed in float32 from the model-dtype query and keys (after RoPE in the model dtype, as
upstream); the official ``pdrop_rank_drop`` rounds the logits and the probabilities to the model dtype, so in bf16
near-equal tokens at the cut-off may differ (the one documented difference: ``tests/vidcom2/methods/test_llm_rows_bf16.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import count
from vidcom2.methods._topk import keep_top_global
from vidcom2.registry import register
from vidcom2.stages.attention import last_row, rope
from vidcom2.types import MethodInfo, Plan, Selection, Stage


def stage_layers(num_layers: int, layers: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Stage boundaries: the given ones, or quarter depth ``round(L * [1/4, 1/2, 3/4])``."""
    if layers is None:
        layers = tuple(int(round(num_layers * q)) for q in (0.25, 0.5, 0.75))
    layers = tuple(int(x) for x in layers)
    if not layers or list(layers) != sorted(set(layers)) or layers[0] < 1 or layers[-1] >= num_layers:
        raise ValueError(f"pdrop: layers must be strictly increasing within [1, {num_layers - 1}], got {layers}")
    return layers


def layer_average(lam: float, num_layers: int, layers: tuple[int, ...]) -> float:
    """``R_avg = (l_1 + sum_s (l_{s+1} - l_s) * lam**s) / L`` (baselines.md 1.2)."""
    bounds = list(layers) + [num_layers]
    total = layers[0]
    for s in range(len(layers)):
        total += (bounds[s + 1] - bounds[s]) * lam ** (s + 1)
    return total / num_layers


def solve_lambda(retention_ratio: float, num_layers: int, layers: tuple[int, ...], budget_mode: str) -> float:
    if budget_mode == "final":
        return float(retention_ratio) ** (1.0 / len(layers))
    if budget_mode != "layer_avg":
        raise ValueError(f"pdrop: budget_mode must be 'final' or 'layer_avg', got {budget_mode!r}")
    floor = layers[0] / num_layers
    if retention_ratio <= floor:
        raise ValueError(
            f"pdrop: layer-averaged retention {retention_ratio} is not above the floor l_1/L = {layers[0]}/{num_layers} "
            f"= {floor:.4f}; set an earlier first stage (layers=...) or use budget_mode='final'"
        )
    lo, hi = 0.0, 1.0
    for _ in range(100):  # R_avg is increasing in lambda: bisection to float precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if layer_average(mid, num_layers, layers) < retention_ratio else (lo, mid)
    return (lo + hi) / 2


def schedule(retention_ratio: float, num_layers: int, layers=None, budget_mode: str = "final") -> list[tuple[int, float]]:
    """``[(layer, fraction of the original N kept from that layer on), ...]``; the last fraction is ``r`` in final mode."""
    layers = stage_layers(num_layers, layers)
    lam = solve_lambda(retention_ratio, num_layers, layers, budget_mode)
    fractions = [lam ** (s + 1) for s in range(len(layers))]
    if budget_mode == "final":
        fractions[-1] = float(retention_ratio)  # exact, not lambda**S with rounding error
    return list(zip(layers, fractions))


#: The official scripts' stage boundaries and ratio list (32-layer LLaMA; lambda = 0.5).
OFFICIAL_LAYERS = (8, 16, 24)
OFFICIAL_RATIOS = (0.5, 0.25, 0.125)


def stage_counts(sched: list[tuple[int, float]], num_visual: int, counting: str = "round") -> list[int]:
    """Visual tokens kept per stage of ``sched`` (from :func:`schedule`): ``round`` (the project's
    :func:`vidcom2.budget.count`, the default) or ``truncate`` (the official ``int(N * ratio)``)."""
    if counting == "round":
        return [count(frac, num_visual) for _, frac in sched]
    if counting == "truncate":  # at least one token: a stage that keeps none cannot be attended (N * ratio < 1)
        return [max(1, int(num_visual * frac)) for _, frac in sched]
    raise ValueError(f"pdrop: counting must be 'round' or 'truncate', got {counting!r}")


@register
@dataclass(frozen=True)
class PDrop:
    """layers: stage boundaries (None = quarter depth). num_layers: LLM depth (the adapter passes the real one;
    on tensors only ``layer_avg`` needs it). On tensors, ``select`` returns the final stage's tokens."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="pdrop",
        stage="in_llm",
        paper="PyramidDrop (CVPR 2025, arXiv 2410.17247)",
        code="github.com/Cooperx521/PyramidDrop llava/model/modeling_llama_pdrop.py",
        needs=("scores",),
    )
    layers: tuple[int, ...] | None = None
    budget_mode: str = "final"
    num_layers: int | None = None
    counting: str = "round"  # per-stage counts: the project's rounding, or the official ``truncate`` (int(N * ratio))

    def __post_init__(self):
        if self.counting not in ("round", "truncate"):
            raise ValueError(f"pdrop: counting must be 'round' or 'truncate', got {self.counting!r}")

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if self.budget_mode == "final" and self.num_layers is None:
            final = float(retention_ratio)
            stats = {}
        else:
            if self.num_layers is None:
                raise ValueError("pdrop budget_mode='layer_avg' needs num_layers (the LLM depth)")
            sched = schedule(retention_ratio, self.num_layers, self.layers, self.budget_mode)
            final, stats = sched[-1][1], {"schedule": sched}
        return Selection(keep=keep_top_global(scores, final).to(features.device), stats=stats)

    def plan(self, retention_ratio: float, num_layers: int, num_visual: int, *, mrope: bool) -> Plan:
        """One stage per boundary of :func:`schedule`, counts by :func:`stage_counts`; positions renumbered
        (official) on 1-D RoPE models and, having no official M-RoPE code, original M-RoPE positions on Qwen."""
        sched = schedule(retention_ratio, num_layers, self.layers, self.budget_mode)
        kept = stage_counts(sched, num_visual, self.counting)
        stages = tuple(Stage(int(layer), k) for (layer, _), k in zip(sched, kept))
        mode = "original" if mrope else "contiguous"
        return Plan("pdrop", stages, RecomputedRow(), mode, {"schedule": [(int(a), float(b)) for a, b in sched]})


@dataclass(frozen=True)
class RecomputedRow:
    """PDrop's score recipe (official code, PDrop#17): before stage layer ``l``, the last token's attention row
    recomputed from that layer's own input norm and query / key projections (what the adapter's
    ``layer_query_key`` returns: last-token query, every key, + Qwen3 q/k norms) and RoPE at the current positions:
    one extra k projection per stage, no second pass."""

    where: ClassVar[str] = "layer_input"

    def start(self, embeds, visual, *, text_start, prompt_len) -> dict:
        return {}

    def layer_row(self, q: torch.Tensor, k: torch.Tensor, scaling: float, cos, sin, mask) -> torch.Tensor:
        """``[n]`` float32 from the pre-RoPE ``q [1, h, 1, d]`` (last token) and ``k [1, kv, n, d]`` of the layer's
        input, with ``cos/sin [1, n, d]`` and its mask."""
        q = rope(q, cos[:, -1:], sin[:, -1:])
        k = rope(k, cos, sin)
        return last_row(q, k, scaling, mask)
