"""Small shared helper: keep the globally highest-scoring tokens of a video."""

from __future__ import annotations

import torch

from vidcom2.budget import count, keep_highest


def keep_top_global(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool ``[F, N]``: the ``count(fraction, F*N)`` highest ``scores [F, N]`` over the whole video."""
    f, n = scores.shape
    k = torch.tensor([count(fraction, f * n)])
    return keep_highest(scores.reshape(1, -1).float(), k).view(f, n)
