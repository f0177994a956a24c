"""``random``: keep a uniformly random subset of visual tokens.

Trivial baseline of the VidCom2 project page (LLaVA-OV-7B, 25%: 94.8% relative accuracy); LightCompress
(ModelTC/LightCompress ``llmc/compression/token_reduction/random.py``) draws globally over the video. Default scope is
per frame (the frame budgets of the allocator); ``scope="video"`` is the LightCompress behaviour. Draws come from a
local CPU generator seeded by the caller (same seed -> same indices on CPU and CUDA), never from the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import check_allocator, count, frame_budgets, keep_lowest
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection


@register
@dataclass(frozen=True)
class Random:
    """scope: ``frame`` (per-frame budgets from ``budget``) or ``video`` (one draw of ``count(r, F*N)``)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="random", stage="pre_llm", paper="baseline", code="ModelTC/LightCompress random.py", stochastic=True
    )
    scope: str = "frame"
    budget: str = "uniform"

    def __post_init__(self):
        check_allocator("random", self.budget)

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        f, n = features.shape[:2]
        noise = torch.rand((f, n), generator=generator).to(features.device)
        if self.scope == "frame":
            keep = keep_lowest(noise, frame_budgets(features, retention_ratio, self.budget))
        elif self.scope == "video":
            k = torch.tensor([count(retention_ratio, f * n)])
            keep = keep_lowest(noise.reshape(1, -1), k).view(f, n)
        else:
            raise ValueError(f"random: scope must be 'frame' or 'video', got {self.scope!r}")
        return Selection(keep=keep, stats={"scope": self.scope})
