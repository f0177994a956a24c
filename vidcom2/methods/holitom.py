"""HoliTom, outer part — global temporal segmentation into static windows, then spatio-temporal merging (pre-LLM).

Paper: Shao et al., *HoliTom: Holistic Token Merging for Fast Video Large Language Models*, NeurIPS 2025,
arXiv 2505.21334. Official code: github.com/cokeshao/HoliTom at e9b2972, ``holitom/llava_arch.py``
(``LlavaMetaForCausalLM_holitom``: ``select_static_windows``, ``get_static_dynamic_features``, ``holitom``,
``merge_tokens_by_attention_density``, ``merge_tokens_by_density``, ``cluster_dpc_knn``). Defaults: the code's env
defaults and README command (``RETAIN_RATIO=0.15 T=0.80``, ``BETA=0.6 D=0 K=7 MAX_WINDOW_SIZE=1024``, beta used
since ``NO_BETA`` is unset); the paper's runs pair ``T`` with the ratio (0.65 at 10%, 0.80 at 15/20/25%).

**Outer and inner part.** The outer part below runs on the vision side; the inner merge runs inside the LLM
(``holitom/modeling_qwen2.py:158-181``, ``HOLITOM_k=18 HOLITOM_r=0.5`` in ``scripts/eval_ov-7b_holitom.sh``) on the
prompt the outer part left (``MethodInfo.in_llm``): before layer ``k`` keep ``round(n (1 - r))`` of the ``n``
visual tokens by the last token's attention row in layer ``k - 1`` (mean over heads), and fold each other visual
token, in sequence order, into its most similar kept token (cosine of the layer-``k`` input states, computed once):
``kept = (kept + token) / 2``, repeated pairwise averaging in the hidden dtype (:class:`InnerMerge`, run by the
engine's merge recipe). Kept tokens keep their positions. ``k`` scales with depth: ``round(18 / 28 * L)`` (18 on the
28-layer 7B LLMs of the official runs) unless ``inner_layer`` is given; ``inner_ratio=0`` turns the inner merge off
(outer only). ``retention_ratio`` is the official ``RETAIN_RATIO`` of the outer part; the inner merge halves the
visual tokens of the deeper layers (records: final and layer-averaged retention).

On the pooled, projected features ``x [F, n, D]`` with ``scores [F, n]`` (SigLIP attention received at the feature
layer, mean over heads and queries, pooled like the features: the project's encoder seam is the official signal):

1. ``s_t[p] = cos(x_t[p], x_{t+1}[p])`` of the L2-normalised features, in their dtype; ``static`` = ``s > tau``.
2. Static windows: a window ``[a, b]`` saves ``#{p static on every pair a..b-1} * (b - a)``; dynamic programming
   chooses the partition with the largest total saving (windows of at most ``max_window_size`` frames; a longer
   window must save strictly more).
3. ``R' = min(R / ((F*n - saved) / (F*n)), 1)``.
4. Per window, every frame's dynamic positions (all positions for a one-frame window): ``keep = ceil(n_d * R')``,
   ``round(keep * (1 - D))`` dominant tokens by attention, the rest DPC-kNN centres (``k = min(K, centres)``) of
   the others, each other token joining its nearest centre (Euclidean), centre := ``beta*centre +
   (1-beta)*mean(members)``. Windows longer than one frame: the static positions are averaged over the window's
   frames and reduced to ``round(S * R')`` DPC-kNN centres merged the same way.
5. Sequence order (LLaVA-OV, ``order="official"``): windows in time order; in a window the static tokens (by
   position), then per frame its dominant tokens then its centres (each by position); a static token sits in the
   slot of its position in the window's first frame (its position under ``position_mode=original``).
   ``order="sorted"``: every kept token in slot order — the official LLaVA-Video (grid) order, which sorts each
   frame by position with a window's static tokens in its first frame (the newlines are the adapter's).

Deliberate differences (the label): the inner merge never touches LLaVA-OV's video newline (the official image
span includes it), nor LLaVA-Video's row newlines (layout tokens placed by the adapter, ``shrunk_candidates``);
its attention row is computed in float32 (official: eager attention weights);
the inner count is the project's ``count`` (at least one token); ``k`` scaled to other depths. Outer: ``r = 1`` keeps every token unchanged (the official code still averages static windows);
ties (equal attention) go to the lower index; if nothing would be kept at all (every frame static and
``round(S * R') = 0``) slot 0 is kept; density noise from ``generator`` in the official call order and shapes
(dynamic part of a window before its static part; the official code uses the global RNG); merges accumulated in at
least float32 then cast (the official code computes them in the features' dtype, so bf16 merged features can differ
by rounding; the selection does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import count, keep_highest
from vidcom2.methods.fastv import LastQueryRow
from vidcom2.methods.holitom_vc2 import dpc_knn, merge_into_centres, static_windows
from vidcom2.registry import register
from vidcom2.types import MergeStep, MethodInfo, Plan, Selection

ORDERS = ("official", "sorted")
#: the official inner merge: layer HOLITOM_k = 18 of the 28-layer Qwen2-7B LLM, HOLITOM_r = 0.5
INNER_LAYER, INNER_DEPTH, INNER_RATIO = 18, 28, 0.5


def inner_layer(num_layers: int, layer: int | None = None) -> int:
    """The layer ``k`` the inner merge acts before: ``layer``, or ``round(18 / 28 * num_layers)``."""
    k = round(INNER_LAYER / INNER_DEPTH * num_layers) if layer is None else int(layer)
    if not 1 <= k < num_layers:
        raise ValueError(f"holitom: inner_layer must be in [1, {num_layers - 1}] for a {num_layers}-layer LLM, got {k}")
    return k


def fold_into_most_similar(hidden: torch.Tensor, kept: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """The official inner merge on ``hidden [n, D]``: each token of ``rest`` (indices, ascending) is averaged into
    the token of ``kept`` (indices, in the official top-k order: highest attention first, which breaks similarity
    ties) most similar to it (cosine of the input states, in their dtype), ``t = (t + x) / 2`` in sequence order and
    in the hidden dtype. Returns the new ``[n, D]``."""
    out = hidden.clone()
    if rest.numel() == 0 or kept.numel() == 0:
        return out
    a, b = hidden[rest], hidden[kept]
    sim = (a @ b.T) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True).T)
    target = kept[sim.argmax(dim=-1)]  # [m]; ties: the first in top-k order, as torch.max
    # rank of each token among those folded into the same target (sequence order); one rank at a time, the
    # targets of a rank are distinct, so each target sees its tokens in the official order
    perm = torch.argsort(target, stable=True)
    sorted_t = target[perm]
    first = torch.ones_like(sorted_t, dtype=torch.bool)
    first[1:] = sorted_t[1:] != sorted_t[:-1]
    starts = torch.arange(sorted_t.numel(), device=hidden.device)[first]
    group = first.long().cumsum(0) - 1
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(sorted_t.numel(), device=hidden.device) - starts[group]
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        t = target[sel]
        out[t] = (out[t] + hidden[rest[sel]]) / 2
    return out


@dataclass(frozen=True)
class InnerMerge:
    """HoliTom's inner merge as a merge recipe (``Plan.merge``): asks for the score row of layer ``layer - 1``, then
    before ``layer`` keeps ``count(1 - ratio, n)`` visual tokens by it and folds the rest into them."""

    layer: int
    ratio: float = INNER_RATIO
    needs_frames: ClassVar[bool] = False

    def start(self, num_layers: int) -> dict:
        return {}

    def step(self, state, layer: int, hidden: torch.Tensor, patch: torch.Tensor, row=None) -> MergeStep | None:
        everyone = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        if layer == self.layer - 1:
            return MergeStep(everyone, hidden, want_row=True)
        if layer != self.layer:
            return None
        vis = (patch >= 0).nonzero().squeeze(1)
        if vis.numel() == 0:
            return MergeStep(everyone, hidden, done=True)
        if row is None:
            raise RuntimeError(f"holitom: the inner merge needs the attention row of layer {self.layer - 1}")
        k = count(1.0 - self.ratio, vis.numel())
        ranked = torch.argsort(row[vis].float(), descending=True, stable=True)  # ties: lower index first
        kept = vis[ranked[:k]]
        rest = vis[torch.sort(ranked[k:]).values]
        keep = everyone.clone()
        keep[rest] = False
        return MergeStep(keep, fold_into_most_similar(hidden, kept, rest), done=True)


@register
@dataclass(frozen=True)
class HoliTom:
    """tau (``T``): static threshold; beta (``BETA``): centre weight; D (``D``): share of each frame's budget given to
    DPC centres instead of attention; K (``K``): DPC neighbours; max_window_size (``MAX_WINDOW_SIZE``); order:
    ``official`` (LLaVA-OV concatenation) or ``sorted`` (slot order). inner_layer (``HOLITOM_k``; None: 18 of 28
    scaled to the depth) and inner_ratio (``HOLITOM_r``; 0: no inner merge): the in-LLM part."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="holitom",
        stage="vision_encoder",
        paper="HoliTom (NeurIPS 2025, arXiv 2505.21334)",
        code="github.com/cokeshao/HoliTom holitom/llava_arch.py (e9b2972)",
        needs=("scores",),
        approximation="inner merge (layer round(18/28 L)) never touches LLaVA-OV's video newline (the official span "
        "includes it) nor LLaVA-Video's row newlines, and ranks by a float32 attention row; otherwise the official "
        "outer and inner merges",
        stochastic=True,
        in_llm=True,
    )
    tau: float = 0.8
    beta: float = 0.6
    D: float = 0.0
    K: int = 7
    max_window_size: int = 1024
    order: str = "official"
    inner_layer: int | None = None
    inner_ratio: float = INNER_RATIO

    def _check(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"holitom: order must be one of {ORDERS}, got {self.order!r}")
        for name in ("beta", "D"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"holitom: {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("K", "max_window_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"holitom: {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= float(self.inner_ratio) < 1.0:
            raise ValueError(f"holitom: inner_ratio (HOLITOM_r) must be in [0, 1), got {self.inner_ratio}")

    def plan(self, retention_ratio, num_layers, num_visual, *, mrope, selections=None) -> Plan:
        """The inner merge on the prompt the outer part left (:class:`InnerMerge` at :func:`inner_layer`, scored by
        the last query's attention row, original positions); ``inner_ratio=0``: nothing inside the LLM."""
        self._check()
        if float(self.inner_ratio) == 0.0:
            return Plan("holitom", hparams={"inner_ratio": 0.0})
        k = inner_layer(num_layers, self.inner_layer)
        hp = {"inner_layer": k, "inner_ratio": float(self.inner_ratio)}
        return Plan("holitom", (), LastQueryRow(), "original", hp, merge=InnerMerge(k, float(self.inner_ratio)))

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        self._check()
        x = features
        f, n, d = x.shape
        if retention_ratio >= 1.0:
            keep = torch.ones((f, n), dtype=torch.bool, device=x.device)
            return Selection(keep=keep, stats={"retention_realised": 1.0, "stage": "outer"})
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        xn = F.normalize(x, p=2, dim=-1)
        static = F.cosine_similarity(xn[:-1], xn[1:], dim=-1) > self.tau  # [F-1, n], in the features' dtype
        windows, saved = static_windows(static, int(self.max_window_size))
        r2 = min(retention_ratio / ((f * n - float(saved)) / (f * n)), 1.0)
        attn = scores.to(x.device)
        out = x.reshape(f * n, d).clone()
        slots = []  # flat slots in sequence order
        for a, b in windows:
            is_static = static[a:b].all(dim=0) if b > a else torch.zeros(n, dtype=torch.bool, device=x.device)
            pos_d = (~is_static).nonzero().squeeze(1)
            dyn = self._dynamic(x[a : b + 1, pos_d], attn[a : b + 1, pos_d], pos_d, a, n, r2, g, out)
            pos_s = is_static.nonzero().squeeze(1)
            c = round(pos_s.numel() * r2)
            if pos_s.numel() > 0 and c > 0:
                acc = torch.promote_types(x.dtype, torch.float32)
                mean = x[a : b + 1, pos_s].to(acc).mean(dim=0).to(x.dtype).unsqueeze(0)  # [1, S, D]
                centres, dist = dpc_knn(mean, c, min(int(self.K), c), g)
                where = a * n + pos_s[centres[0]]
                out[where] = merge_into_centres(mean, centres, dist, self.beta)[0]
                slots.append(where)
            slots.extend(dyn)
        order = torch.cat(slots) if slots else torch.zeros(0, dtype=torch.long, device=x.device)
        stats = {"empty_fallback": order.numel() == 0}
        if order.numel() == 0:  # only when every frame is static and round(S * R') = 0: keep slot 0 unchanged
            order = torch.zeros(1, dtype=torch.long, device=x.device)
        keep = torch.zeros(f * n, dtype=torch.bool, device=x.device)
        keep[order] = True
        stats |= {"stage": "outer", "windows": len(windows), "saved": int(saved), "ratio_adjusted": r2,
                 "retention_realised": float(keep.sum()) / (f * n)}  # fmt: skip
        return Selection(
            keep=keep.view(f, n),
            features=out.view(f, n, d),
            order=order if self.order == "official" else None,
            stats=stats,
        )

    def _dynamic(self, xd, ad, pos, a, n, r2, g, out) -> list[torch.Tensor]:
        """Dominant tokens + DPC centres of each frame of one window (``xd [w, n_d, D]``, attention ``ad [w, n_d]``,
        positions ``pos [n_d]``); merged centres written into ``out``. Returns the flat slots per frame in order."""
        w, nd, d = xd.shape
        if nd == 0:
            return []
        keep_n = math.ceil(nd * r2)
        dominant = round(keep_n * (1 - self.D))
        contextual = keep_n - dominant
        top = keep_highest(ad, torch.full((w,), dominant, dtype=torch.long))
        frames = torch.arange(a, a + w, device=xd.device).unsqueeze(1) * n
        dom = frames + pos[top.nonzero()[:, 1].view(w, dominant)]
        if contextual <= 0:
            return list(dom)
        rest = (~top).nonzero()[:, 1].view(w, nd - dominant)
        xr = xd.gather(1, rest.unsqueeze(-1).expand(w, nd - dominant, d))
        centres, dist = dpc_knn(xr, contextual, min(int(self.K), contextual), g)
        where = frames + pos[rest.gather(1, centres)]
        out[where.reshape(-1)] = merge_into_centres(xr, centres, dist, self.beta).reshape(-1, d)
        return [torch.cat([dom[t], where[t]]) for t in range(w)]
