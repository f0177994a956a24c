"""``uniform``: spatially uniform tokens per frame (deterministic).

Frame tokens are in raster order; keep ``idx_j = floor((j + 0.5) * n / k)`` for ``j < k``: evenly spaced, centred,
exactly ``k`` tokens. Precedent for spatially uniform sampling: PruMerge+'s extra tokens
(42Shawn/LLaVA-PruMerge ``clip_encoder.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import check_allocator, frame_budgets
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection


def uniform_mask(k: torch.Tensor, n: int) -> torch.Tensor:
    """Bool ``[F, n]`` with ``k[f]`` evenly spaced, centred tokens per row (integer arithmetic, exact)."""
    f = k.shape[0]
    j = torch.arange(n, device=k.device).expand(f, n)
    valid = j < k.unsqueeze(1)
    idx = ((2 * j + 1) * n) // (2 * k.clamp(min=1).unsqueeze(1))  # floor((j + 0.5) * n / k)
    # invalid slots write into a spare column n, dropped afterwards
    mask = torch.zeros((f, n + 1), dtype=torch.bool, device=k.device)
    mask.scatter_(1, torch.where(valid, idx, torch.full_like(idx, n)), True)
    mask = mask[:, :n].contiguous()
    return mask


@register
@dataclass(frozen=True)
class Uniform:
    info: ClassVar[MethodInfo] = MethodInfo(name="uniform", stage="pre_llm", paper="baseline", code="-")
    budget: str = "uniform"

    def __post_init__(self):
        check_allocator("uniform", self.budget)

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        k = frame_budgets(features, retention_ratio, self.budget)
        return Selection(keep=uniform_mask(k, features.shape[1]).to(features.device))
