"""``none``: the uncompressed baseline (vanilla). Keeps every token; the same code path as every method, so its
measurements are the denominator of every ratio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection


@register
@dataclass(frozen=True)
class NoCompression:
    info: ClassVar[MethodInfo] = MethodInfo(name="none", stage="pre_llm", paper="-", code="-")

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        return Selection(keep=torch.ones(features.shape[:2], dtype=torch.bool, device=features.device))
