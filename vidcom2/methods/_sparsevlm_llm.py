"""SparseVLM's in-LLM parts (next to ``vidcom2.methods.sparsevlm``, run by ``vidcom2.stages.in_llm``): the text
raters, the rater-row score computed inside the attention function (:class:`RaterRows`), v2's RoPE gravity
correction and head selection, and v1's recycling (:class:`ClusterRecycler`: DPC-kNN cluster centres of the best
pruned tokens).

Official code: github.com/Gumpest/SparseVLMs ``llava/model/language_model/modelling_sparse_llama.py`` and
``score.py`` (``attn_postprocess_topk``, ``select_attn_head_by_sum``), ``utils.py::cluster_and_merge``.
Spec: shared/spec/baselines.md 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.stages.attention import query_rows


def text_raters(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Bool ``[T]``: the text raters. visual ``[V, D]`` and text ``[T, D]`` LLM input embeddings (computed in float32).
    When no relevance is above the mean (e.g. a single text token) every text token rates (the official code would
    average over an empty set)."""
    m = torch.softmax(visual.float() @ text.float().T, dim=1).mean(dim=0)  # [T]
    chosen = m > m.mean()
    return chosen if chosen.any() else torch.ones_like(chosen)


def recycled_count(pruned: int) -> int:
    """Cluster centres inserted when ``pruned`` tokens are dropped at a stage (0 when nothing is dropped)."""
    if pruned <= 0:
        return 0
    return int((int(pruned * 0.3) + 1) / 10) + 1


def recycle_sources(scores: torch.Tensor) -> torch.Tensor:
    """Indices into the pruned tokens (``scores [p]``, visual order) of the ``int(0.3 p) + 1`` highest, highest first."""
    n = int(scores.shape[0] * 0.3) + 1
    return torch.argsort(scores.float(), descending=True, stable=True)[:n]


def cluster_and_merge(
    x: torch.Tensor, centres: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DPC-kNN clustering of ``x [n, D]`` into ``centres`` clusters; returns the cluster means ``[centres, D]``
    in the order of the centres' score (density x distance to a denser token, highest first).

    Follows ``utils.py::cluster_and_merge``: distances ``/ sqrt(D)``, density ``exp(-mean of the squared distances
    to the k nearest, self included)`` with ``k = centres``, plus ``U(0, 1e-6)`` noise (drawn from ``generator``),
    each token assigned to its nearest centre (centres to themselves), mean = sum / (size + 1e-6). float32 math,
    result in ``x.dtype``.
    """
    n, d = x.shape
    xf = x.float()
    dist = torch.cdist(xf, xf) / d**0.5  # [n, n]
    near = torch.topk(dist, k=centres, dim=-1, largest=False).values
    density = (-(near**2).mean(dim=-1)).exp()
    noise = torch.rand(n, generator=generator, dtype=torch.float32).to(x.device)
    density = density + noise * 1e-6
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    to_denser = torch.where(denser, dist, dist.max()).min(dim=-1).values
    chosen = torch.topk(to_denser * density, k=centres).indices  # [c]
    assign = dist[chosen].argmin(dim=0)  # [n] nearest centre
    assign[chosen] = torch.arange(centres, device=x.device)
    sums = torch.zeros(centres, d, dtype=torch.float32, device=x.device).index_add_(0, assign, xf)
    sizes = torch.zeros(centres, dtype=torch.float32, device=x.device).index_add_(
        0, assign, torch.ones(n, device=x.device)
    )
    return (sums / (sizes[:, None] + 1e-6)).to(x.dtype)


def raters(embeds: torch.Tensor, visual: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Prompt positions (long) of the text raters among ``[start, end)``. embeds ``[L, D]`` input embeddings,
    visual bool ``[L]`` the visual tokens (``V``)."""
    if start is None or start >= end:
        raise ValueError("sparsevlm needs text tokens after the video (its raters); the prompt ends there")
    vis_idx = visual.nonzero().squeeze(1)
    chosen = text_raters(embeds[vis_idx], embeds[start:end]).nonzero().squeeze(1)
    return chosen.to(embeds.device) + start


def gravity(cos: torch.Tensor, sin: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """v2's RoPE "gravity" ``[R, kv]``: the attention logit that all-ones query and key vectors get after RoPE at
    the query ``rows`` and every key position, ``/ sqrt(d)`` (official ``rope_weights``). cos/sin ``[1, kv, d]``
    (the layer's position embeddings, M-RoPE already composed)."""
    c, s = cos[0].float(), sin[0].float()
    d = c.shape[-1]
    sign = torch.cat([-torch.ones(d // 2), torch.ones(d - d // 2)]).to(c.device)  # rotate_half(ones)
    e = c + sign * s  # [kv, d]
    return (e[rows] @ e.T) / d**0.5


def rater_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    rows: torch.Tensor,
    scaling: float,
    mask: torch.Tensor | None,
    *,
    gravity_rows: torch.Tensor | None = None,
    visual: torch.Tensor | None = None,
    heads: int | None = None,
) -> torch.Tensor:
    """SparseVLM's score row ``[kv_len]`` float32: attention probabilities of the query ``rows`` (prefill positions,
    ``[R]``; :func:`vidcom2.stages.attention.query_rows`: only ``R`` rows computed, each causal at its own
    position), mean over heads, then mean over the rows.

    v2 (``gravity_rows`` ``[R, kv]`` given): the probabilities are divided by the gravity (an exact 0 stays 0: the
    official full-matrix division would give 0 there too unless the gravity is 0), and only the ``heads`` heads
    with the largest mass on the ``visual`` (bool ``[kv]``) columns are averaged.
    """
    probs = query_rows(query, key, rows, scaling, mask)  # [Hq, R, kv]
    if gravity_rows is not None:
        probs = torch.where(probs == 0, probs, probs / gravity_rows.to(probs.device))
        mass = probs[:, :, visual].sum(dim=(1, 2))  # [Hq]
        top = torch.topk(mass, min(int(heads), probs.shape[0])).indices
        probs = probs[top]
    return probs.mean(dim=0).mean(dim=0)


@dataclass(frozen=True)
class RaterRows:
    """SparseVLM's score recipe: the raters are chosen once per prefill from the input embeddings (:func:`raters`,
    among the tokens after the video); inside the attention of each pruning layer only their query rows are
    computed (``[Hq, |raters|, kv_len]``). v2: gravity-corrected, the ``heads`` heads with the most rater->visual
    mass, at the positions the scored layer really uses."""

    version: int = 1
    heads: int = 14
    where: ClassVar[str] = "attention"

    def start(self, embeds, visual, *, text_start, prompt_len) -> dict:
        return {"raters": raters(embeds, visual, text_start, prompt_len)}

    def attention_row(self, scoring, query, key, scaling, mask, *, ids, visual, positions) -> torch.Tensor:
        """ids ``[n]``: original indices of the sequence the attention sees; visual: bool ``[n]`` of it."""
        rows = torch.isin(ids, scoring["raters"].to(ids.device)).nonzero().squeeze(1)
        extra = {}
        if self.version == 2:
            cos, sin = positions
            extra = dict(gravity_rows=gravity(cos, sin, rows), visual=visual, heads=self.heads)
        return rater_rows(query, key, rows.to(query.device), scaling, mask, **extra)


@dataclass(frozen=True)
class ClusterRecycler:
    """v1 recycling at one stage: the best 30% of the dropped visual tokens (by the score row) are clustered from
    their layer-``l`` output states into ``stage.recycled`` new tokens (:func:`cluster_and_merge`); the stage inserts
    them right after the last kept visual token."""

    def merge(self, hidden: torch.Tensor, row: torch.Tensor, pruned: torch.Tensor, stage, generator):
        """hidden ``[n, D]`` (the layer-``l`` output), row ``[n]`` scores, pruned ``[p]`` indices of the dropped
        visual tokens; returns ``(sources [s] indices into the sequence, centres [c, D])``."""
        src = pruned[recycle_sources(row[pruned])]
        c = stage.recycled
        if c != recycled_count(pruned.numel()):
            raise RuntimeError(f"sparsevlm: planned {c} recycled tokens at layer {stage.layer}, the rule gives another")
        return src, cluster_and_merge(hidden[src], c, generator)
