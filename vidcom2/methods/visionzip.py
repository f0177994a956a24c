"""VisionZip — dominant tokens by attention plus merged contextual tokens, per frame.

Paper: Yang et al., *VisionZip: Longer is Better but Not Necessary in Vision Language Models*, CVPR 2025,
arXiv 2412.04467. Official code: github.com/dvlab-research/VisionZip (``visionzip/utils.py``, ``clip_encoder.py``).

Faithful video variant (baselines.md 7.3; as the HoliTom port, the published VisionZip-on-LLaVA-OV code):
per frame, budget ``k`` (from the allocator) split into ``dominant = int(k * 54/64)`` and ``contextual = k -
dominant``. Dominant: the highest ``scores`` (attention *received* at the encoder layer feeding the projector, mean over
heads and queries — SigLIP has no CLS token). Contextual: over the remaining tokens (index order), L2-normalise the
``keys`` metric (that layer's keys, mean over heads); targets are every ``step = n_rem // contextual``-th remaining
token (first ``contextual``); every other remaining token joins its most similar target (dot product); the contextual
token is ``target + mean(assigned)`` (a target with nothing assigned stays itself), placed at its target's slot.
Scores and keys must already be pooled to the LLM grid (the adapter does it, like the features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import frame_budgets
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection

DOMINANT_SHARE = 54 / 64  # README setting 54 + 10; HoliTom's DOMINANT_RATIO


def split_budget(k: int, dominant_share: float = DOMINANT_SHARE) -> tuple[int, int]:
    dominant = int(k * dominant_share)
    return dominant, k - dominant


def zip_frame(x, scores, keys, k, dominant_share=DOMINANT_SHARE):
    """One frame: ``x [n, D]``, ``scores [n]``, ``keys [n, d]``, budget ``k`` ->
    (dominant idx, target idx, merged target features ``[C, D]``)."""
    n = x.shape[0]
    dominant, contextual = split_budget(k, dominant_share)
    dom = torch.argsort(scores.float(), descending=True, stable=True)[:dominant]
    rest_mask = torch.ones(n, dtype=torch.bool, device=x.device)
    rest_mask[dom] = False
    rest = rest_mask.nonzero().squeeze(1)
    if contextual == 0:
        return dom, rest[:0], x[:0]
    step = rest.numel() // contextual
    target_pos = torch.arange(contextual, device=x.device) * step  # positions within `rest`
    is_target = torch.zeros(rest.numel(), dtype=torch.bool, device=x.device)
    is_target[target_pos] = True
    metric = F.normalize(keys[rest].float(), dim=-1)
    sim = metric[~is_target] @ metric[is_target].T  # [others, C]
    assign = sim.argmax(dim=1)
    others = x[rest[~is_target]].float()
    sums = torch.zeros((contextual, x.shape[1]), dtype=torch.float32, device=x.device).index_add_(0, assign, others)
    cnt = torch.bincount(assign, minlength=contextual).clamp(min=1).unsqueeze(1)
    targets = rest[target_pos]
    merged = (x[targets].float() + sums / cnt).to(x.dtype)
    return dom, targets, merged


@register
@dataclass(frozen=True)
class VisionZip:
    """budget: per-frame allocator. order: ``sorted`` (tokens by slot) or ``dominant_first`` (HoliTom's LLaVA-OV path)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="visionzip",
        stage="vision_encoder",
        paper="VisionZip (CVPR 2025, arXiv 2412.04467)",
        code="github.com/dvlab-research/VisionZip; video port as cokeshao/HoliTom visionzip/",
        needs=("scores", "keys"),
    )
    budget: str = "uniform"
    dominant_share: float = DOMINANT_SHARE
    order: str = "sorted"

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if self.order not in ("sorted", "dominant_first"):
            raise ValueError(f"visionzip: order must be 'sorted' or 'dominant_first', got {self.order!r}")
        f, n, _ = features.shape
        ks = frame_budgets(features, retention_ratio, self.budget).tolist()
        keep = torch.zeros((f, n), dtype=torch.bool, device=features.device)
        out = features.clone()
        pieces = []
        for t in range(f):
            dom, targets, merged = zip_frame(features[t], scores[t], keys[t], ks[t], self.dominant_share)
            keep[t, dom] = True
            keep[t, targets] = True
            out[t, targets] = merged
            pieces.append(torch.cat([dom.sort().values, targets]) + t * n)
        order = torch.cat(pieces) if self.order == "dominant_first" else None
        return Selection(keep=keep, features=out, order=order, stats={"dominant_share": self.dominant_share})
