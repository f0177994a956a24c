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

HoliTom's VisionZip runs on LLaVA-OV (cokeshao/HoliTom e9b2972, ``visionzip/llava_arch.py``, the runs the literature
compares with) differ in two ways, both available here as options: the per-frame budget comes from the table
``SPATIAL_TOKENS`` = 20/30/40/50 of 196 at 10/15/20/25% (``scripts/eval_ov-7b_visionzip.sh``; ``budget="holitom"``,
instead of ``round(r*196)`` = 20/29/39/49), and the kept tokens are concatenated dominant-first (``:180``: dominant
tokens in position order, then the contextual tokens in target order; ``order="dominant_first"``), which changes
positions under contiguous renumbering.

dtype: the key cosines and the merge are computed in float32 and rounded once; the official code works in the model
dtype, so in bf16 a contextual token can be assigned to another target (the kept tokens are the same; the one
documented difference: ``tests/vidcom2/methods/test_visionzip_bf16.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import check_allocator, frame_budgets
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection

DOMINANT_SHARE = 54 / 64  # README setting 54 + 10; HoliTom's DOMINANT_RATIO
#: HoliTom's per-frame VisionZip budgets on LLaVA-OV (196 tokens per frame): retention ratio -> SPATIAL_TOKENS.
HOLITOM_SPATIAL_TOKENS = {0.10: 20, 0.15: 30, 0.20: 40, 0.25: 50}
HOLITOM_FRAME_TOKENS = 196


def holitom_budgets(f: int, n: int, retention_ratio: float, device=None) -> torch.Tensor:
    """``LongTensor [F]``: HoliTom's ``SPATIAL_TOKENS`` for ``retention_ratio`` (its table covers 196-token frames
    at 10/15/20/25% only; anything else is an error naming the table)."""
    match = [k for r, k in HOLITOM_SPATIAL_TOKENS.items() if abs(r - float(retention_ratio)) < 1e-9]
    if n != HOLITOM_FRAME_TOKENS or not match:
        raise ValueError(
            f"visionzip: budget='holitom' is HoliTom's SPATIAL_TOKENS table for {HOLITOM_FRAME_TOKENS}-token frames at "
            f"retention_ratio {sorted(HOLITOM_SPATIAL_TOKENS)} (tokens {sorted(HOLITOM_SPATIAL_TOKENS.values())}); got "
            f"{n} tokens per frame at {retention_ratio}: use budget='uniform'"
        )
    return torch.full((f,), match[0], dtype=torch.long, device=device)


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
    """budget: per-frame allocator (``uniform``, ``fca``) or ``holitom`` (HoliTom's SPATIAL_TOKENS table).
    order: ``sorted`` (tokens by slot) or ``dominant_first`` (HoliTom's LLaVA-OV path)."""

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

    def __post_init__(self):
        check_allocator("visionzip", self.budget, extra=("holitom",))

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if self.order not in ("sorted", "dominant_first"):
            raise ValueError(f"visionzip: order must be 'sorted' or 'dominant_first', got {self.order!r}")
        f, n, _ = features.shape
        if self.budget == "holitom":
            ks = holitom_budgets(f, n, retention_ratio).tolist()
        else:
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
        return Selection(keep=keep, features=out, order=order, stats={"dominant_share": self.dominant_share, "budget": self.budget, "order": self.order})
