"""Retention ratio -> integer token budgets. The ONE rounding rule, and the per-frame allocators.

Rounding rule (used by every method unless a parity test passes an official rule explicitly):

    count(ratio, n) = clamp(round_half_to_even(ratio * n), 1, n)

It is VidCom2's per-frame rule (``(scales * tpf).round().long().clamp(min=1)`` in the official code), applied
everywhere, so a ratio means the same number of tokens for every method. Allocators split a video's budget over its
frames: ``uniform`` gives every frame ``count(r, n)``; ``fca`` is VidCom2's Frame Compression Adjustment (frame
uniqueness -> per-frame ratio, arXiv 2505.14454 Sec. 3), usable by any per-frame method.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidcom2.similarity import gaussian_scores

#: Softmax temperature of the frame-uniqueness weights (official ``compute_scales(temp=0.01)``).
FCA_TEMPERATURE = 0.01
ALLOCATORS = ("uniform", "fca")
#: How FCA aggregates a frame's token uniqueness ``u = -s_video`` into the frame's uniqueness (paper Table 6):
#: ``mean`` (official default, ``-s_video.mean``) or ``max`` (``max_n u = -min_n s_video``; the May-2025 official
#: ``frame_score_mode="negtive_video_score_min"``). Uniform budgets are the ``uniform`` allocator.
FRAME_SCORES = ("mean", "max")


class Ratio(float):
    """A retention ratio :func:`check_ratio` accepted: a float in (0, 1]. Built only through the check, so code that
    receives a ``Ratio`` (``compress`` from the harness, ``apply`` and the stages from ``compress``) passes it on
    without checking it again: the ratio is checked once on its way from the caller to the budgets."""

    __slots__ = ()

    def __new__(cls, retention_ratio) -> Ratio:
        if isinstance(retention_ratio, bool) or not isinstance(retention_ratio, (int, float)):
            if isinstance(retention_ratio, torch.Tensor) and retention_ratio.numel() == 1:
                retention_ratio = float(retention_ratio)
            else:
                raise TypeError(
                    f"retention_ratio must be a number in (0, 1], got {type(retention_ratio).__name__} "
                    f"{retention_ratio!r}; pass the fraction of visual tokens to keep, e.g. retention_ratio=0.25"
                )
        r = float(retention_ratio)
        if math.isnan(r) or not (0.0 < r <= 1.0):
            raise ValueError(
                f"retention_ratio must be in (0, 1] (the fraction of visual tokens kept), got {retention_ratio!r}; "
                "pass e.g. retention_ratio=0.25"
            )
        return super().__new__(cls, r)


def check_ratio(retention_ratio: float) -> Ratio:
    """Validate the one knob; returns it as a :class:`Ratio` (a float). A ``Ratio`` is returned as is."""
    return retention_ratio if type(retention_ratio) is Ratio else Ratio(retention_ratio)


def check_allocator(method: str, allocator, extra: tuple[str, ...] = ()) -> str:
    """A method's ``budget`` hyper-parameter names a per-frame allocator (:data:`ALLOCATORS`, plus the method's own
    ``extra`` ones); checked when the method is built, so a bad name fails before any model work."""
    choices = ALLOCATORS + tuple(extra)
    if allocator not in choices:
        from vidcom2.registry import did_you_mean

        raise ValueError(f"{method}: unknown budget allocator {allocator!r}; budget must be one of the allocators."
                         f"{did_you_mean(str(allocator), list(choices))}")
    return allocator


def count(retention_ratio: float, n: int) -> int:
    """Tokens kept out of ``n`` at ``retention_ratio``: ``clamp(round_half_even(r * n), 1, n)``."""
    if n < 1:
        raise ValueError(f"cannot budget an empty token set (n={n})")
    return min(n, max(1, round(float(retention_ratio) * n)))  # Python's round() is half-to-even


def counts(ratios: torch.Tensor, n: int) -> torch.Tensor:
    """Tensor form of :func:`count` for per-frame ratios (computed in the ratios' dtype, like the official code)."""
    return (ratios * n).round().long().clamp(min=1, max=n)


def fca_ratios(s_video: torch.Tensor, retention_ratio: float, frame_score: str = "mean") -> torch.Tensor:
    """Per-frame ratios ``r_t`` from the token-to-video-centre similarities ``s_video [F, N]`` (dtype kept).

    ``u_t = -mean_n s_video`` (``frame_score="max"``: ``max_n -s_video``); ``p = softmax((u - max u) / 0.01)``;
    ``r_t = min(1, r * (1 + p_t - mean p))``.
    """
    if frame_score == "mean":
        u = -s_video.mean(dim=-1)
    elif frame_score == "max":
        u = -s_video.amin(dim=-1)
    else:
        raise ValueError(f"frame_score must be one of {FRAME_SCORES} (uniform budgets: budget=uniform), got {frame_score!r}")
    p = F.softmax((u - u.max()) / FCA_TEMPERATURE, dim=0)
    return (retention_ratio * (1 + p - p.mean())).clamp(max=1.0)


def frame_budgets(
    features: torch.Tensor, retention_ratio: float, allocator: str = "uniform", compute_dtype: str = "input"
) -> torch.Tensor:
    """Tokens to keep per frame, ``LongTensor [F]`` on the features' device.

    allocator: ``uniform`` (every frame ``count(r, N)``) or ``fca`` (VidCom2 frame uniqueness; data-dependent).
    compute_dtype: ``input`` (as the official code) or ``float32`` (for ``fca`` only).
    """
    r = check_ratio(retention_ratio)
    f, n = features.shape[0], features.shape[1]
    if allocator == "uniform":
        return torch.full((f,), count(r, n), dtype=torch.long, device=features.device)
    if allocator == "fca":
        s_video, _ = gaussian_scores(cast(features, compute_dtype))
        return counts(fca_ratios(s_video, r), n)
    from vidcom2.registry import did_you_mean

    raise ValueError(f"unknown budget allocator {allocator!r}.{did_you_mean(str(allocator), list(ALLOCATORS))}")


def cast(features: torch.Tensor, compute_dtype: str) -> torch.Tensor:
    if compute_dtype == "input":
        return features
    if compute_dtype == "float32":
        return features.float()
    raise ValueError(f"compute_dtype must be 'input' or 'float32', got {compute_dtype!r}")


def keep_lowest(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool ``[F, N]``: in each row, the ``k[f]`` entries with the smallest score (ties: lower index first).

    One stable sort for all frames instead of a Python loop of ``topk`` calls with different k.
    """
    order = torch.argsort(scores, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks < k.to(scores.device).unsqueeze(1)


def keep_highest(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool ``[F, N]``: in each row, the ``k[f]`` entries with the largest score (ties: lower index first)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks < k.to(scores.device).unsqueeze(1)
