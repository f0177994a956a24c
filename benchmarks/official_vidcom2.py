"""The official VidCom2 selection's operations, for timing against the project's (``make bench-select``).

Re-expressed from reading github.com/xuyang-liu16/VidCom2 ``token_compressor/vidcom2/vidcom2.py`` at commit
944a17d (``vidcom2_compression`` for ``llava_ov`` with a linear index map): the same tensor operations in the same
order (channel variance with ``topk`` and advanced indexing, normalisation, the two centres, the five-term Gaussian
as a Python ``sum``, softmax budgets, one ``topk(sorted=False)`` + ``sort`` per frame, then a gather of the kept
rows). Used only by the benchmark; not part of the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ALPHAS = [2.0**k for k in range(-3, 2)]


def _gauss(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    d2 = ((x - centre) ** 2).sum(dim=-1)
    return sum(torch.exp(-d2 / (2 * a)) for a in _ALPHAS)


def official_select(features: torch.Tensor, retention_ratio: float) -> torch.Tensor:
    """``features [F, N, D]`` -> the kept tokens ``[K, D]`` (frame order, ascending index within a frame)."""
    f, n, d = features.shape
    flat = features.reshape(f * n, d)
    variances = flat.var(dim=0, unbiased=False)
    channels = torch.topk(variances, k=int(d * 0.5), largest=False).indices
    frames = F.normalize(flat[:, channels].view(f, n, -1), dim=-1)
    s_video = _gauss(frames, frames.mean(dim=(0, 1), keepdim=True))
    s_frame = _gauss(frames, frames.mean(dim=1, keepdim=True))
    probs = F.softmax((-s_video.mean(dim=-1) - (-s_video.mean(dim=-1)).max()) / 0.01, dim=0)
    scales = (retention_ratio * (1 + probs - probs.mean())).clamp(max=1.0)
    ks = (scales * n).round().long().clamp(min=1).tolist()
    score = s_video + s_frame
    picked = [torch.topk(score[i], k=k, largest=False, sorted=False).indices.sort().values + i * n
              for i, k in enumerate(ks)]
    return flat[torch.cat(picked)]
