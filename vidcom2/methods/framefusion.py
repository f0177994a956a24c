"""FrameFusion — merge similar tokens of consecutive frames inside the LLM, then prune once by importance.

Paper: Fu et al., *FrameFusion: Combining Similarity and Importance for Video Token Reduction on Large Vision Language
Models*, ICCV 2025, arXiv 2501.01986. Official code: github.com/thu-nics/FrameFusion at fbec1d2
(``framefusion/main.py``: ``FrameFusion.forward``, ``compute_similarity_and_token_index_by_patch``,
``merge_tokens_and_get_mask``, ``_compute_pruning_ratio``; ``framefusion/models/qwen2/modeling_qwen2.py``: where it
runs). Defaults: ``apply_framefusion(model, cost=0.3, similarity_lower_bound=0.6, ratio_lower_bound=0.1)`` (README).

The official recipe, on the hidden states of the visual tokens (batch 1):

1. **Similarity**: each visual token against the same in-frame position of the previous frame still present
   (tokens sorted by position, then by sequence index), ``dot / (|a| |b|)`` in the hidden dtype; the first frame of
   each position gets -2.
2. **Merge**: tokens with similarity ``>= similarity_lower_bound`` join the nearest earlier unmerged token of their
   position (a run of consecutive merged tokens all join the token before the run), which becomes the plain average
   of itself and its run; merged tokens leave the sequence.
3. **Budget**: ``p = _compute_pruning_ratio(ratios so far, cost)``, the pruning ratio the remaining layers need so
   that the layer-averaged share of visual tokens is ``cost``. If this layer's merge ratio is ``>= p`` only the
   ``int(p * n)`` most similar merge and FrameFusion is finished (no prune); otherwise the ratio is appended and,
   when it is ``< ratio_lower_bound``, merging stops.
4. **Prune** (once, at the next layer): keep ``round(n (1 - p))`` visual tokens by the last query's attention row
   (mean over heads) inside that layer's attention.

Upstream it merges at layer 0 before attention, then after the attention + residual (before the MLP) of every layer
until it stops, and prunes after the next layer's attention. **Here** (the labelled approximation) every step runs
at a decoder-layer boundary: merge ``k`` before layer ``k`` (the first on the LLM input embeddings, as upstream; the
others on layer ``k-1``'s output, i.e. after its MLP instead of before it), the prune before layer ``m + 1`` scored
by layer ``m``'s attention (upstream: before layer ``m``'s MLP). The ``k``-th merge of both sees the same attention
history, and the cost formula charges layer ``k`` with the tokens left after merge ``k`` in both.

Deliberate differences, besides the placement: the cost formula uses the model's real depth (upstream hard-codes
``num_layers=28``: the 7B Qwen2 LLMs it supports, where both agree); the prune count is the project's
:func:`vidcom2.budget.count` of ``1 - p`` (half-to-even, at least one token; upstream ``round`` may keep none); where
upstream raises "The cost is too small" the prune keeps the minimum; merged states are accumulated in at least float32
(upstream adds in the hidden dtype); layout tokens (LLaVA's newlines, which upstream gives a patch index) are never
merged or pruned; the attention row is computed in float32 (upstream: in the model dtype).

``retention_ratio`` maps to ``cost`` one to one (``cost`` is a layer-averaged retention; the official ``cost=0.3`` is
``retention_ratio=0.3``); the records carry the realised final retention (visual tokens in the deepest layer) and
the layer-averaged one. Floor: ``retention_ratio >= 1 / num_layers`` (layer 0 is charged in full when nothing
merges there). On tensors (no LLM), ``select`` runs merge 0 on the features, then prunes by ``scores`` with ``p``
over ``num_layers`` (default 28, upstream's): the in-LLM run keeps merging layer by layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import count, keep_highest
from vidcom2.methods.fastv import LastQueryRow
from vidcom2.registry import register
from vidcom2.types import MergeStep, MethodInfo, Plan, Selection

#: upstream's hard-coded LLM depth in ``_compute_pruning_ratio`` (used on tensors when ``num_layers`` is not given)
OFFICIAL_LAYERS = 28
IGNORE = -2.0  # the similarity of a position's first token (upstream ``IGNORE_TOKEN``)


def pruning_ratio(ratios: list[float], cost: float, num_layers: int) -> float:
    """Upstream ``_compute_pruning_ratio``: layer ``i < len(ratios)`` costs ``prod_{j<=i} (1 - ratios[j])``; the
    share ``p`` the remaining ``num_layers - len(ratios)`` layers must prune so that the mean cost is ``cost``.
    0 when no pruning is needed; 1 (prune to the minimum) where upstream raises "The cost is too small"."""
    s, total = 1.0, 0.0
    for r in ratios:
        s *= 1.0 - r
        total += s
    remain, left = num_layers * cost - total, num_layers - len(ratios)
    if remain < 0 or left <= 0 or s <= 0:
        return 1.0
    share = remain / (left * s)
    return 0.0 if share > 1 else 1.0 - share


def previous_frame_similarity(hidden: torch.Tensor, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order [m], sim [m])``: the visual tokens (``patch >= 0``) sorted by in-frame position then sequence index,
    and each one's cosine to the previous token of its position in that order (``IGNORE`` for a position's first).
    hidden ``[n, D]``; patch ``[n]`` long (-1: not visual). Cosine in the hidden dtype, as upstream."""
    idx = (patch >= 0).nonzero().squeeze(1)
    order = idx[torch.argsort(patch[idx], stable=True)]
    a, b = hidden[order[:-1]], hidden[order[1:]]
    sim = (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    sim = torch.where(patch[order[:-1]] == patch[order[1:]], sim, torch.full_like(sim, IGNORE))
    return order, torch.cat([torch.full((1,), IGNORE, dtype=sim.dtype, device=sim.device), sim])[: order.numel()]


def merge_runs(hidden: torch.Tensor, order: torch.Tensor, merged: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the tokens at positions ``merged`` (into ``order``) into the last unmerged token before them; returns
    ``(keep [n] bool, hidden [n, D])`` with each representative the plain mean of itself and its run (accumulated in
    at least float32, cast back). A position's first token is never merged (its similarity is ``IGNORE``)."""
    m = order.numel()
    mark = torch.zeros(m, dtype=torch.bool, device=hidden.device)
    mark[merged] = True
    pos = torch.arange(m, device=hidden.device)
    rep = torch.where(mark, torch.full_like(pos, -1), pos).cummax(dim=0).values  # last unmarked position <= j
    keep = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    out = hidden.clone()
    if not bool(mark.any()):
        return keep, out
    if int(rep.min()) < 0:
        raise ValueError("framefusion: the first token of an in-frame position cannot be merged (nothing before it)")
    keep[order[mark]] = False
    acc = torch.promote_types(hidden.dtype, torch.float32)
    sums = torch.zeros(m, hidden.shape[1], dtype=acc, device=hidden.device).index_add_(0, rep, hidden[order].to(acc))
    sizes = torch.bincount(rep, minlength=m)
    grown = (sizes > 1).nonzero().squeeze(1)
    out[order[grown]] = (sums[grown] / sizes[grown].unsqueeze(1).to(acc)).to(hidden.dtype)
    return keep, out


@dataclass(frozen=True)
class FrameFusionMerge:
    """FrameFusion's merge recipe (``Plan.merge``), run by ``vidcom2.stages`` before each decoder layer until done:
    merges while the merge ratio stays in ``[ratio_lower_bound, p)``; after the last merge it asks for the score row
    of that layer (``want_row``) and prunes to ``state["prune"]`` visual tokens before the next one."""

    cost: float
    similarity_lower_bound: float = 0.6
    ratio_lower_bound: float = 0.1
    needs_frames: ClassVar[bool] = True

    def start(self, num_layers: int) -> dict:
        return {"ratios": [], "num_layers": int(num_layers), "prune": None}

    def prune_count(self, state: dict, num_visual: int) -> int | None:
        """Visual tokens the one prune keeps out of ``num_visual``; ``None`` when no layer is left to prune for."""
        if len(state["ratios"]) >= state["num_layers"]:
            return None
        return count(1.0 - pruning_ratio(state["ratios"], self.cost, state["num_layers"]), num_visual)

    def step(self, state: dict, layer: int, hidden: torch.Tensor, patch: torch.Tensor, row=None) -> MergeStep:
        """One merge (or the prune) on ``hidden [n, D]``, the tokens entering ``layer``; ``patch [n]`` their in-frame
        positions (-1: not visual); ``row [n]``: the score row of the previous layer, for the prune."""
        everyone = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        vis = patch >= 0
        if state["prune"] is not None:  # the one prune: the top visual tokens by the previous layer's row
            if row is None:
                raise RuntimeError("framefusion: the prune needs the previous layer's attention row")
            keep = everyone.clone()
            top = keep_highest(row[vis].float().view(1, -1), torch.tensor([min(state["prune"], int(vis.sum()))]))
            keep[vis] = top.view(-1).to(keep.device)
            state["prune"] = None
            return MergeStep(keep, hidden, done=True)
        n_vis = int(vis.sum())
        if n_vis == 0:
            return MergeStep(everyone, hidden, done=True)
        upper = pruning_ratio(state["ratios"], self.cost, state["num_layers"])
        order, sim = previous_frame_similarity(hidden, patch)
        merged = (sim >= self.similarity_lower_bound).nonzero().squeeze(1)
        ratio = merged.numel() / n_vis
        if ratio < upper:
            state["ratios"].append(ratio)
            if ratio < self.ratio_lower_bound:  # merging stops; the prune comes at the next layer
                state["prune"] = self.prune_count(state, n_vis - merged.numel())
            done = ratio < self.ratio_lower_bound and state["prune"] is None
        else:  # merging alone meets the budget: the int(p * n) most similar merge, and nothing is pruned
            top = keep_highest(sim.float().view(1, -1), torch.tensor([int(upper * n_vis)])).view(-1)
            merged, done = top.nonzero().squeeze(1), True
        keep, out = merge_runs(hidden, order, merged)
        return MergeStep(keep, out, done=done, want_row=state["prune"] is not None)


@register
@dataclass(frozen=True)
class FrameFusion:
    """similarity_lower_bound (``S_th``): merge threshold (above 1 nothing merges); ratio_lower_bound: merging stops below this merge ratio;
    num_layers: the LLM depth for the cost formula on tensors (attached to a model, the adapter passes the real one).
    ``retention_ratio`` is the ``cost`` (a layer-averaged retention)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="framefusion",
        stage="in_llm",
        paper="FrameFusion (ICCV 2025, arXiv 2501.01986)",
        code="github.com/thu-nics/FrameFusion framefusion/main.py (fbec1d2)",
        needs=("scores",),
        approximation="merges and prunes at decoder-layer boundaries (after a layer's MLP) instead of after the "
        "attention + residual, before the MLP; cost over the model's real depth (upstream: 28); layout tokens "
        "never merged",
    )
    similarity_lower_bound: float = 0.6
    ratio_lower_bound: float = 0.1
    num_layers: int | None = None

    def _recipe(self, retention_ratio: float, num_layers: int) -> FrameFusionMerge:
        if not math.isfinite(float(self.similarity_lower_bound)):  # above 1: nothing merges (a prune after layer 0)
            raise ValueError(f"framefusion: similarity_lower_bound must be a finite number, got {self.similarity_lower_bound}")
        if not 0.0 <= float(self.ratio_lower_bound) <= 1.0:
            raise ValueError(f"framefusion: ratio_lower_bound must be in [0, 1], got {self.ratio_lower_bound}")
        if retention_ratio * num_layers < 1.0:
            raise ValueError(
                f"framefusion: retention_ratio (cost) {retention_ratio} is below the floor 1/num_layers = "
                f"1/{num_layers} = {1 / num_layers:.4f} (layer 0 is charged in full); raise retention_ratio"
            )
        return FrameFusionMerge(float(retention_ratio), float(self.similarity_lower_bound), float(self.ratio_lower_bound))

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        f, n, d = features.shape
        layers = int(self.num_layers) if self.num_layers is not None else OFFICIAL_LAYERS
        recipe = self._recipe(retention_ratio, layers)
        state = recipe.start(layers)
        patch = torch.arange(n, device=features.device).repeat(f)
        step = recipe.step(state, 0, features.reshape(f * n, d), patch)
        keep = step.keep.clone()
        k = None if step.done else recipe.prune_count(state, int(keep.sum()))
        if k is not None:  # no deeper layer on tensors: merging ends here, the prune ranks the survivors by scores
            idx = keep.nonzero().squeeze(1)
            top = keep_highest(scores.reshape(-1)[idx.to(scores.device)].float().view(1, -1), torch.tensor([k]))
            keep[idx[~top.view(-1).to(idx.device)]] = False
        stats = {"cost": float(retention_ratio), "num_layers": layers, "merge_ratios": list(state["ratios"]),
                 "merged": int((~step.keep).sum()), "retention_realised": float(keep.sum()) / (f * n)}  # fmt: skip
        return Selection(keep=keep.view(f, n), features=step.hidden.view(f, n, d), stats=stats)

    def plan(self, retention_ratio: float, num_layers: int, num_visual: int, *, mrope: bool) -> Plan:
        """No static stage: the merge recipe runs from layer 0 on and makes its one prune at run time, by the last
        query's attention row (:class:`~vidcom2.methods.fastv.LastQueryRow`) of the layer before; original positions."""
        recipe = self._recipe(retention_ratio, num_layers)
        hp = {"cost": recipe.cost, "num_layers": int(num_layers), "similarity_lower_bound": recipe.similarity_lower_bound,
              "ratio_lower_bound": recipe.ratio_lower_bound}  # fmt: skip
        return Plan("framefusion", (), LastQueryRow(), "original", hp, merge=recipe)
