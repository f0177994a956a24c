"""VidCom2's token statistics (steps 1-4 of the official ``vidcom2_compression``), shared by the VidCom2 method and
the FCA budget allocator.

Source: Liu et al., *Video Compression Commander*, arXiv 2505.14454; official code
github.com/xuyang-liu16/VidCom2 ``token_compressor/vidcom2/vidcom2.py`` (``select_low_var_channels``,
``compute_gaussian_scores``, ``_multi_scale_gaussian``). Operation order and dtype follow that code, so results are
bit-compatible with it in the same dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Bandwidths of the multi-scale Gaussian kernel, in the official summation order (2**-3 ... 2**1).
ALPHAS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)
CHANNEL_RATIO = 0.5
_ROWS = 256  # row block of the fast variance


def low_variance_channels(x: torch.Tensor, ratio: float = CHANNEL_RATIO, *, fast: bool = False) -> torch.Tensor:
    """``x [M, D]`` -> ``[M, floor(D * ratio)]``: the channels with the lowest population variance over all M tokens.

    ``fast``: variance as the mean of squared deviations from the mean, accumulated over blocks of rows (two reads of
    ``x``) instead of ``torch.var``'s per-column reduction; rounding differs (last bits), so the kept channels can
    differ at near-ties.
    """
    if fast:
        mean = x.mean(dim=0)
        sq = torch.zeros_like(mean)
        for rows in x.split(_ROWS):  # row blocks stay in cache: ~6x faster than torch.var(dim=0) on CPU
            sq += (rows - mean).square_().sum(dim=0)
        variances = sq / x.shape[0]
    else:
        variances = x.var(dim=0, unbiased=False)
    k = max(1, int(x.shape[-1] * ratio))
    idx = torch.topk(variances, k=k, largest=False).indices
    # ascending channel order: index_select on sorted columns is several times faster than fancy indexing on CPU;
    # the order of the kept channels does not change any result (they are only summed over)
    return x.index_select(1, idx.sort().values)


def multi_scale_gaussian(x: torch.Tensor, center: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
    """``sum_a exp(-||x - c||^2 / (2a))`` over :data:`ALPHAS`; ``x [F, N, C]``, ``center`` broadcastable -> ``[F, N]``.

    ``fast`` (``x`` rows unit-norm): ``||x - c||^2 = 1 - 2 x.c + ||c||^2``, one matrix-vector product instead of a
    full-size difference tensor; rounding differs from the official expression.
    """
    if fast:
        c = center.expand(x.shape[0], 1, x.shape[-1]) if center.shape[0] == 1 else center
        d2 = (1.0 + (c * c).sum(dim=-1)) - 2.0 * torch.bmm(x, c.transpose(1, 2)).squeeze(-1)
    else:
        d2 = (x - center).square_().sum(dim=-1)  # in place: bit-identical to ((x - center) ** 2), one temporary less
    total = torch.zeros_like(d2)
    for a in ALPHAS:  # five terms; summed in the official order so low-precision dtypes round the same way
        total = total + torch.exp(-d2 / (2 * a))
    return total


def gaussian_scores(features: torch.Tensor, *, fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity of every token to the video centre and to its frame centre.

    features: ``[F, N, D]`` (computed in its own dtype). Returns ``(s_video, s_frame)``, each ``[F, N]``.
    ``fast``: the faster formulations of :func:`low_variance_channels` and :func:`multi_scale_gaussian` (not
    bit-identical to the official code; see ``vidcom2.methods.vidcom2``).
    """
    f, n, d = features.shape
    sel = low_variance_channels(features.reshape(f * n, d), fast=fast)
    frames = F.normalize(sel.view(f, n, -1), dim=-1)
    video_center = frames.mean(dim=(0, 1), keepdim=True)
    frame_center = frames.mean(dim=1, keepdim=True)
    return (multi_scale_gaussian(frames, video_center, fast=fast),
            multi_scale_gaussian(frames, frame_center, fast=fast))
