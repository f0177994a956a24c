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


def low_variance_channels(x: torch.Tensor, ratio: float = CHANNEL_RATIO) -> torch.Tensor:
    """``x [M, D]`` -> ``[M, floor(D * ratio)]``: the channels with the lowest population variance over all M tokens."""
    variances = x.var(dim=0, unbiased=False)
    k = max(1, int(x.shape[-1] * ratio))
    idx = torch.topk(variances, k=k, largest=False).indices
    # ascending channel order: index_select on sorted columns is several times faster than fancy indexing on CPU;
    # the order of the kept channels does not change any result (they are only summed over)
    return x.index_select(1, idx.sort().values)


def multi_scale_gaussian(x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """``sum_a exp(-||x - c||^2 / (2a))`` over :data:`ALPHAS`; ``x [F, N, C]``, ``center`` broadcastable -> ``[F, N]``."""
    d2 = ((x - center) ** 2).sum(dim=-1)
    total = torch.zeros_like(d2)
    for a in ALPHAS:  # five terms; summed in the official order so low-precision dtypes round the same way
        total = total + torch.exp(-d2 / (2 * a))
    return total


def gaussian_scores(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity of every token to the video centre and to its frame centre.

    features: ``[F, N, D]`` (computed in its own dtype). Returns ``(s_video, s_frame)``, each ``[F, N]``.
    """
    f, n, d = features.shape
    sel = low_variance_channels(features.reshape(f * n, d))
    frames = F.normalize(sel.view(f, n, -1), dim=-1)
    video_center = frames.mean(dim=(0, 1), keepdim=True)
    frame_center = frames.mean(dim=1, keepdim=True)
    return multi_scale_gaussian(frames, video_center), multi_scale_gaussian(frames, frame_center)
