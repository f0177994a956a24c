"""FlashVID — attention/diversity selection and tree-based spatio-temporal merging before the LLM, then attention
pruning at LLM layer 20 (both stages of the official scripts).

Paper: Fan et al., *FlashVID: Efficient Video Large Language Models via Training-free Tree-based Spatiotemporal Token
Merging*, ICLR 2026 (arXiv 2602.08024). Official code: github.com/Fanziyang-v/FlashVID at 1d37422,
``flashvid/utils.py`` (``flashvid_compression``, ``segment``, ``segment_compression``,
``spatiotemporal_compression``, ``dpc_knn``), ``flashvid/token_selection.py`` (ADTS), signal from
``flashvid/siglip_encoder.py`` (last-layer attention, mean over heads and queries, pooled like the features: the
project's encoder seam). Defaults: ``scripts/llava_ov.sh`` (``attn_div_v2``, alpha 0.7, temporal threshold 0.8,
DySeg threshold 0.9 with at least 8 segments).

**Both stages of the official scripts.** Before the LLM (below) with the per-frame budget expanded by
``expansion=1.25``; inside the LLM (``plan``, ``MethodInfo.in_llm``), on the shrunk prompt: before layer
``pruning_layer`` keep ``ceil(L_vis * llm_retention_ratio)`` of the ``L_vis`` visual tokens that entered the LLM by the
last prompt query's attention in the layer before (softmax over all keys, mean over heads: ``fastv_prune`` with
``attn_based_token_selection``), the rest in original order with the positions of the shrunk prompt.
Scripts: ``pruning_layer=20, llm_retention_ratio=0.3`` (LLaVA-OV, LLaVA-Video, Qwen2.5-VL: 28 layers) and ``28, 0.1``
(Qwen3-VL: 36 layers). ``pruning_layer=None`` (default) scales layer 20 of 28 to the model's depth
(``round(20 * L / 28)``, within ``[1, L - 1]``); set it (and ``llm_retention_ratio=0.1``) for the Qwen3-VL setting.

**What ``retention_ratio`` targets.** As in the official scripts, the layer-averaged retention:
``expansion`` is chosen so that ``r * expansion * (K + (L - K) * rho) / L = r`` (``(20 + 8 * 0.3) / 28 = 0.8 =
1 / 1.25``, and ``(28 + 8 * 0.1) / 36 = 0.8``); the share entering the LLM is ``~1.25 r``. Both are recorded per
sample: ``visual_tokens_per_layer[0] / visual_tokens_in`` (pre-LLM retention) and ``visual_tokens_layer_avg /
visual_tokens_in`` (layer-averaged); ``plan().hparams`` has the layer and counts. ``expansion=1.0,
llm_retention_ratio=1.0`` is the vision-side part alone (``retention_ratio`` = the share entering the LLM).

On ``x [F, n, D]`` with ``scores [F, n]``:

1. **DySeg.** Cosine of adjacent frame means; cut after every one ``< segment_threshold``; with fewer than
   ``min_segment_num`` segments, cut also after the smallest remaining ones.
2. **Budget** per frame ``ceil(n * r * expansion)``: ``ceil(budget * alpha)`` ADTS tokens, the rest (``sttm``) by
   merging.
3. **ADTS** per frame (float32): ``dist = (1 - cos)`` scaled per column by ``attention * 1e6`` (``attn_div_v2``: also
   by the token's mean dot product with the segment's frame means); the first pick maximises the second-smallest
   column distance, each next one the smallest distance to the picks (max-min).
4. **Tree merging (TSTM)** of the other tokens of a multi-frame segment: each links to its most cosine-similar
   other-token in the previous frame; links with similarity ``> temporal_threshold`` merge (the threshold is raised
   so that at least ``(adts + sttm) * frames`` tokens remain); from the last frame back, a linked token's running sum
   is added to its parent (the parent's count grows by one per child), and an unlinked token becomes its sum /
   count, in the features' dtype.
5. **Spatial merging** of each frame's remaining tokens when ``ratio = sttm * frames / remaining < 1``: DPC-kNN
   (``k = min(clusters, 7)``) into ``ceil(m * ratio)`` clusters, each the mean of its members, at its centre's slot.
6. Kept tokens at their own slots, in position order.

Deliberate differences: ``r = 1`` keeps every token unchanged (no in-LLM stage either); the in-LLM scores are
float32 (the official code rounds the probabilities to the model dtype before the head mean) and ties go to the
lower index (``torch.topk``); the in-LLM candidates are the kept visual tokens (LLaVA-OV: without its video newline,
as the official span; LLaVA-Video: without its row newlines, which the adapter places, ``shrunk_candidates``); the
default layer is scaled to the depth; a one-frame segment clusters only its non-selected
tokens (the official code clusters the whole frame again, so a centre can duplicate an ADTS token's position); a
token is never picked twice by ``attn_div_v2`` (the official loop does not exclude picks); complementary cuts never
repeat a cut (no empty segment); ties go to the lower index; density noise from ``generator`` (one ``[1, m]`` draw
per clustered frame, the official order; the official code uses the global RNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.methods.fastv import LastQueryRow
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Plan, Selection, Stage

SELECTIONS = ("attn_div", "attn_div_v2")
NOISE = 1e-6
DEPTH = (20, 28)  # the scripts' pruning layer 20 of Qwen2-7B's 28 layers (scripts/llava_ov.sh, qwen2_5_vl.sh)


def pruning_layer_for(num_layers: int, pruning_layer: int | None) -> int:
    """The in-LLM layer K: ``pruning_layer``, or layer 20 of 28 scaled to ``num_layers`` (in ``[1, L - 1]``)."""
    if pruning_layer is None:
        return min(num_layers - 1, max(1, round(DEPTH[0] * num_layers / DEPTH[1])))
    k = int(pruning_layer)
    if not 1 <= k < num_layers:
        raise ValueError(f"flashvid: pruning_layer must be in [1, {num_layers - 1}] for a {num_layers}-layer LLM, got "
                         f"{k}; leave it null to scale layer 20 of 28 to the depth")  # fmt: skip
    return k


def segments(frame_means: torch.Tensor, threshold: float, min_segments: int) -> list[int]:
    """DySeg with complementary cuts: segment lengths from ``frame_means [F, D]`` (cosine in their dtype)."""
    f = frame_means.shape[0]
    unit = frame_means / frame_means.norm(p=2, dim=-1, keepdim=True)
    sim = (unit[:-1] * unit[1:]).sum(dim=-1)
    below = sim < threshold
    cuts = set(below.nonzero().squeeze(1).tolist())
    missing = min(min_segments - (len(cuts) + 1), f - 1 - len(cuts))
    if missing > 0:
        rest = torch.where(below, torch.ones_like(sim), sim)  # the official code sets cut similarities to 1.0
        order = torch.argsort(rest, stable=True).tolist()
        cuts |= set([i for i in order if i not in cuts][:missing])
    edges = [-1, *sorted(cuts), f - 1]
    return [b - a for a, b in zip(edges, edges[1:])]


def adts(x: torch.Tensor, attn: torch.Tensor, k: int, v2: bool) -> torch.Tensor:
    """Max-min selection of ``k`` tokens per frame of ``x [w, n, D]`` -> bool ``[w, n]``."""
    xf = x.float()
    unit = xf / xf.norm(p=2, dim=-1, keepdim=True)
    dist = (1.0 - torch.bmm(unit, unit.transpose(1, 2))) * (attn.float() * 1e6).unsqueeze(1)
    if v2:
        relevance = torch.einsum("bnd,cd->bcn", xf, xf.mean(dim=1)).mean(dim=1)
        dist = dist * relevance.unsqueeze(1)
    w, n = attn.shape
    picked = torch.zeros((w, n), dtype=torch.bool, device=x.device)
    rows = torch.arange(w, device=x.device)
    best = dist.topk(min(2, n), dim=1, largest=False).values[:, -1, :]
    nearest = torch.full((w, n), float("inf"), device=x.device)
    for _ in range(k):
        j = best.masked_fill(picked, float("-inf")).argmax(dim=-1)
        picked[rows, j] = True
        nearest = torch.minimum(nearest, dist[rows, j])
        best = nearest
    return picked


def tree_merge(x: torch.Tensor, other: torch.Tensor, threshold: float, floor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TSTM of one segment ``x [w, n, D]`` over the ``other [w, n]`` tokens -> (remaining bool ``[w, n]``, features)."""
    w, n, d = x.shape
    feats = x.clone()
    unit = x / x.norm(p=2, dim=-1, keepdim=True)
    sims = torch.einsum("bnd,bmd->bnm", unit[1:], unit[:-1])
    sims = sims.masked_fill(~other[1:].unsqueeze(-1), -1.0).masked_fill(~other[:-1].unsqueeze(1), -1.0)
    best, parent = sims.max(dim=-1)
    best = torch.cat([torch.full((1, n), -1.0, dtype=best.dtype, device=x.device), best])
    parent = torch.cat([torch.full((1, n), -1, dtype=parent.dtype, device=x.device), parent])
    linked = best > threshold
    if int((~linked).sum()) < floor and w * n > floor:
        soft = float(best.reshape(-1).topk(w * n - floor).values[-1])
        linked = best > max(soft, -1.0 + 1e-6)
    counts = torch.ones((w, n), dtype=x.dtype, device=x.device)
    for t in range(w - 1, -1, -1):
        free = ~linked[t]
        feats[t, free] = feats[t, free] / counts[t, free].unsqueeze(-1)
        counts[t, free] = 1
        if bool(linked[t].any()):
            onehot = F.one_hot(parent[t, linked[t]], num_classes=n).to(x.dtype)
            feats[t - 1] += torch.einsum("mn,md->nd", onehot, feats[t, linked[t]])
            counts[t - 1] += onehot.sum(dim=0)
            counts[t, linked[t]] = 0
    return ~linked & other, feats


def cluster_means(tokens: torch.Tensor, clusters: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashVID's ``dpc_knn`` + one-hot mean on ``tokens [m, D]`` -> (centre indices [c], cluster means [c, D])."""
    m, d = tokens.shape
    xf = tokens.float()
    dist = torch.cdist(xf, xf) / math.sqrt(d)
    rho = (-(dist.topk(min(clusters, 7), dim=-1, largest=False).values ** 2)).mean(dim=-1).exp()
    rho = rho + torch.rand((1, m), generator=generator, dtype=torch.float32)[0].to(rho) * NOISE
    delta = torch.where(rho.unsqueeze(0) > rho.unsqueeze(1), dist, dist.max()).min(dim=-1).values
    centres = torch.argsort(delta * rho, descending=True, stable=True)[:clusters]
    label = dist[:, centres].argmin(dim=-1)
    label[centres] = torch.arange(clusters, device=tokens.device)
    onehot = F.one_hot(label, num_classes=clusters).to(tokens.dtype)
    sums = torch.einsum("nc,nd->cd", onehot, tokens)
    return centres, sums / onehot.sum(dim=0).unsqueeze(-1)


@register
@dataclass(frozen=True)
class FlashVID:
    """selection: ``attn_div_v2`` (the scripts) or ``attn_div``; alpha: ADTS share; temporal_threshold: TSTM link
    threshold; segment_threshold / min_segments: DySeg; expansion: pre-LLM budget factor (official 1.25);
    pruning_layer: the in-LLM layer (``None``: 20 of 28 scaled to the depth); llm_retention_ratio: share of the
    entering visual tokens kept from that layer on (``1.0``: no in-LLM stage)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="flashvid",
        stage="vision_encoder",
        paper="FlashVID (ICLR 2026, arXiv 2602.08024)",
        code="github.com/Fanziyang-v/FlashVID flashvid/utils.py (1d37422)",
        needs=("scores",),
        approximation="both stages as the scripts (expansion 1.25, in-LLM keep 0.3 at layer 20 of 28; the layer is "
        "scaled to other depths); in-LLM scores in float32 with lower-index ties; a one-frame segment clusters only "
        "its unselected tokens",
        stochastic=True,
        in_llm=True,
    )
    selection: str = "attn_div_v2"
    alpha: float = 0.7
    temporal_threshold: float = 0.8
    segment_threshold: float = 0.9
    min_segments: int = 8
    expansion: float = 1.25
    pruning_layer: int | None = None
    llm_retention_ratio: float = 0.3

    def _check(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"flashvid: selection must be one of {SELECTIONS}, got {self.selection!r}")
        if not 0.0 < float(self.alpha) <= 1.0:
            raise ValueError(f"flashvid: alpha must be in (0, 1], got {self.alpha}")
        if not 0.0 < float(self.llm_retention_ratio) <= 1.0:
            raise ValueError(f"flashvid: llm_retention_ratio must be in (0, 1] (1 = no in-LLM stage), got "
                             f"{self.llm_retention_ratio}")  # fmt: skip
        if float(self.expansion) < 1.0 or int(self.min_segments) < 1:
            raise ValueError(f"flashvid: expansion must be >= 1 and min_segments >= 1, got {self.expansion}, "
                             f"{self.min_segments}")  # fmt: skip

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        self._check()
        x = features
        f, n, d = x.shape
        if retention_ratio >= 1.0:
            return Selection(keep=torch.ones((f, n), dtype=torch.bool, device=x.device), stats={"expansion": 1.0})
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        budget = min(n, math.ceil(n * retention_ratio * self.expansion))
        n_adts = math.ceil(budget * self.alpha)
        sttm = budget - n_adts
        sizes = segments(x.mean(dim=1), self.segment_threshold, int(self.min_segments))
        keep = torch.zeros((f, n), dtype=torch.bool, device=x.device)
        out = x.clone()
        start = 0
        for s in sizes:
            seg = x[start : start + s]
            picked = adts(seg, scores[start : start + s].to(x.device), n_adts, self.selection == "attn_div_v2")
            keep[start : start + s] = picked
            if sttm > 0:
                self._merge(seg, ~picked, sttm, s, budget, start, keep, out, g)
            start += s
        stats = {"segments": len(sizes), "budget": budget, "adts": n_adts, "expansion": float(self.expansion),
                 "retention_realised": float(keep.sum()) / (f * n)}  # fmt: skip
        return Selection(keep=keep, features=out, stats=stats)

    def plan(self, retention_ratio: float, num_layers: int, num_visual: int, *, mrope: bool, selections=None) -> Plan:
        """The in-LLM stage on the shrunk prompt (``num_visual``: the tokens the vision-side part kept): before layer
        K keep ``ceil(num_visual * llm_retention_ratio)`` by the last query's attention row, original positions."""
        self._check()
        k = pruning_layer_for(num_layers, self.pruning_layer)
        rho = float(self.llm_retention_ratio)
        hp = {"pruning_layer": k, "llm_retention_ratio": rho, "expansion": float(self.expansion),
              "visual_tokens_llm_in": num_visual}  # fmt: skip
        if retention_ratio >= 1.0 or rho >= 1.0:
            return Plan("flashvid", hparams=hp)
        keep = min(num_visual, math.ceil(num_visual * rho))  # official: math.ceil(visual_token_length * ratio)
        hp["visual_tokens_llm_kept"] = keep
        return Plan("flashvid", (Stage(k, keep, fraction=rho),), LastQueryRow(), "original", hp)

    def _merge(self, seg, other, sttm, s, budget, start, keep, out, g) -> None:
        """TSTM then per-frame clustering of one segment's non-selected tokens (written into ``keep`` / ``out``)."""
        if self.temporal_threshold >= 1.0:  # no temporal merging: the official code then keeps no sttm token
            return
        if s > 1:
            remain, feats = tree_merge(seg, other, self.temporal_threshold, budget * s)
        else:
            remain, feats = other, seg
        total = int(remain.sum())
        ratio = sttm * s / max(total, 1)
        for t in range(s):
            pos = remain[t].nonzero().squeeze(1)
            c = math.ceil(pos.numel() * ratio)
            if c > 0 and ratio < 1.0:
                centres, means = cluster_means(feats[t, pos], c, g)
                out[start + t, pos[centres]] = means
                keep[start + t, pos[centres]] = True
            else:
                out[start + t, pos] = feats[t, pos]
                keep[start + t, pos] = True
