"""``visionzip_vc2`` — the VisionZip port shipped in the VidCom2 repository (a named approximation of VisionZip).

Paper of the original method: Yang et al., *VisionZip: Longer is Better but Not Necessary in Vision Language Models*,
CVPR 2025, arXiv 2412.04467. The port: github.com/xuyang-liu16/VidCom2, branch ``qwen``,
``token_compressor/visionzip/{core.py,visionzip.py}`` (called per video from ``models/qwen3_vl.py``; the same code
serves Qwen2-VL and Qwen2.5-VL). It exists so the VidCom2 paper's Qwen3-VL "VisionZip" rows can be reproduced
(spec: baselines.md 7.2, 7.3). Never report it as ``visionzip``.

What the port does, per frame (a Qwen temporal patch: ``n = t_h * t_w / merge**2`` post-merger tokens), with the
port's own budget (Python ``int`` truncation, not :func:`vidcom2.budget.count`):

1. ``num_keep = max(1, int(n * r))``, ``dominant = max(1, int(num_keep * dominant_ratio))``,
   ``contextual = num_keep - dominant`` (env ``visionzip_dominant_ratio``, default 0.6).
2. Dominant: the ``dominant`` tokens with the largest **L2 norm of the post-merger feature** (no attention, no CLS).
3. Density of every remaining token (index order): features L2-normalised, cosine similarity to all remaining
   tokens, density = mean of the top ``k_neighbors + 1`` similarities without the largest one (the port drops
   "the first column", meant to be the self-similarity; env ``visionzip_k_neighbors``, default 5).
4. The ``contextual`` densest remaining tokens are anchors; every remaining token (anchors included) joins the anchor
   of largest cosine similarity (first on ties); the anchor's token becomes the **plain mean** of its members
   (an anchor with no member stays itself).
5. Output: kept tokens in position order, each merged token at its anchor's position (``core.py`` sorts by index).

At ``r = 1`` every remaining token is an anchor and nothing is merged: the port keeps the video unchanged, as here.

Computation: normalisation and similarities in the input dtype, as the port (which runs in the model dtype); the
norms in at least float32: the port's bf16 norms tie often (8 significant bits) and ``topk`` then picks among the
tied tokens as the backend likes; ranking by the unrounded norm is one of the port's possible choices (rounding is
monotone), made deterministic. The means are accumulated in at least float32 and cast back (the port's ``mean`` of
bf16 also accumulates in float32 and rounds once). Remaining ties (equal densities) go to the lower index. With
float32 input the result equals the port's on CPU exactly (checked against the port code itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import keep_highest
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection


def port_budget(n: int, retention_ratio: float, dominant_ratio: float) -> tuple[int, int]:
    """The port's per-frame ``(dominant, contextual)`` counts for ``n`` tokens (``int`` truncation, min 1 token)."""
    num_keep = max(1, int(n * retention_ratio))
    dominant = max(1, int(num_keep * dominant_ratio))
    return dominant, num_keep - dominant


def _rows(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[F, n]`` with the same count ``m`` per row -> ``[F, m]`` column indices, ascending."""
    return mask.nonzero()[:, 1].view(mask.shape[0], -1)


def density(x: torch.Tensor, k_neighbors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """kNN density of ``x [F, m, D]`` within each frame -> ``(density [F, m], cosine similarities [F, m, m])``.

    ``m == 1`` gives NaN (mean of no neighbour), as in the port; the caller never ranks a lone token.
    """
    xn = F.normalize(x, dim=-1)
    sim = xn @ xn.transpose(1, 2)
    k = min(k_neighbors + 1, x.shape[1])
    return sim.topk(k, dim=2).values[:, :, 1:].mean(dim=2), sim


@register
@dataclass(frozen=True)
class VisionZipVC2:
    """dominant_ratio: share of the kept tokens chosen by norm (port env ``visionzip_dominant_ratio``).
    k_neighbors: neighbours in the density estimate (port env ``visionzip_k_neighbors``, floored at 1)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="visionzip_vc2",
        stage="pre_llm",
        paper="VisionZip (CVPR 2025, arXiv 2412.04467)",
        code="github.com/xuyang-liu16/VidCom2 (branch qwen) token_compressor/visionzip/",
        approximation="VidCom2 repository's VisionZip port: attention replaced by the L2 norm of the post-projector "
        "feature, contextual tokens by kNN-density anchors with a plain mean, 60/40 split with int() budgets",
    )
    dominant_ratio: float = 0.6
    k_neighbors: int = 5

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if not 0.0 <= float(self.dominant_ratio) <= 1.0:
            raise ValueError(f"visionzip_vc2: dominant_ratio must be in [0, 1], got {self.dominant_ratio}")
        x = features
        f, n, d = x.shape
        dominant, contextual = port_budget(n, float(retention_ratio), float(self.dominant_ratio))
        norms = x.to(torch.promote_types(x.dtype, torch.float32)).norm(dim=-1)  # see "Computation" above
        keep = keep_highest(norms, torch.full((f,), dominant, dtype=torch.long))
        stats = {
            "budget_mode": "port",
            "dominant": dominant,
            "contextual": contextual,
            "k_neighbors": max(1, int(self.k_neighbors)),
        }
        out = None
        m = n - dominant
        if contextual > 0 and m > 0:
            rest = _rows(~keep)  # [F, m] remaining positions, ascending
            xr = x.gather(1, rest.unsqueeze(-1).expand(f, m, d))
            dens, sim = density(xr, max(1, int(self.k_neighbors)))
            # [F, C] anchor indices into `rest`, ascending
            anchors = _rows(keep_highest(dens, torch.full((f,), contextual, dtype=torch.long)))
            anchor_pos = rest.gather(1, anchors)
            keep.scatter_(1, anchor_pos, True)
            if contextual < m:  # otherwise every remaining token is its own anchor: nothing to merge
                assign = sim.gather(2, anchors.unsqueeze(1).expand(f, m, contextual)).argmax(dim=2)  # [F, m]
                acc = torch.promote_types(x.dtype, torch.float32)
                sums = torch.zeros((f, contextual, d), dtype=acc, device=x.device)
                sums.scatter_add_(1, assign.unsqueeze(-1).expand(f, m, d), xr.to(acc))
                cnt = torch.zeros((f, contextual), dtype=acc, device=x.device)
                cnt.scatter_add_(1, assign, torch.ones_like(assign, dtype=acc))
                own = xr.gather(1, anchors.unsqueeze(-1).expand(f, contextual, d))
                merged = torch.where(
                    cnt.unsqueeze(-1) > 0, sums / cnt.clamp(min=1).unsqueeze(-1), own.to(acc)
                )
                out = x.clone()
                out.scatter_(1, anchor_pos.unsqueeze(-1).expand(f, contextual, d), merged.to(x.dtype))
        stats["retention_realised"] = float(keep.sum()) / (f * n)
        return Selection(keep=keep, features=out, stats=stats)
