"""VisPruner — important tokens by visual attention, then diverse tokens by removing duplicates (a video port).

Paper: Zhang et al., *Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in VLMs*,
ICCV 2025, arXiv 2412.01818. Official code: github.com/Theia-4869/VisPruner at aefa01a,
``llava/model/llava_arch.py::encode_images`` (the SigLIP path: ``multimodal_encoder/siglip_encoder.py``).

Official (one image, ``T = visual_token_num`` tokens kept): ``T_imp = int(T * important_ratio)`` tokens with the
highest attention (CLIP: [CLS] attention of the feature layer; SigLIP: last-layer attention received, mean over
queries; mean over heads); the other tokens, in descending attention order, are deduplicated on L2-normalised
features: repeatedly split them into ``a = [0::2]`` and ``b = [1::2]``, score every a-token by its highest cosine to a
b-token, drop the ``r = min(8, R - T_div)`` highest-scoring a-tokens, and continue with ``[remaining a (by descending
score), all b]`` until ``T_div = T - T_imp`` tokens are left. Kept tokens stay in position order. Defaults of the
official eval scripts: ``important_ratio = 0.5``.

This port (an approximation: upstream has image models only) applies that per frame with ``T = count(r, n)``
(the per-frame allocator). Signals, from the project's encoder seam (``vidcom2/stages/encoder.py`` with the adapter's hooks, as
VisionZip): attention received at the encoder layer that feeds the projector, mean over heads and queries, pooled
to the LLM grid; the duplicate removal runs on the features the method receives (after the projector and pooling)
instead of the encoder output. Ties in the attention order: stable (lower index first); the official ``argsort`` is
unstable. An odd ``R`` ranks all ``ceil(R/2)`` a-tokens (the official index arithmetic assumes ``R`` even).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import check_allocator, frame_budgets
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection

#: Most a-tokens dropped per matching round (official constant).
ROUND = 8


def dedup(normed: torch.Tensor, residual: torch.Tensor, keep: int) -> torch.Tensor:
    """Repeated a/b matching over ``residual`` (indices into ``normed [n, D]``) until ``keep`` remain."""
    while keep > 0:
        total = residual.numel()
        r = min(ROUND, total - keep)
        if r <= 0:
            break
        tokens = normed[residual]
        a, b = tokens[0::2], tokens[1::2]
        best = (a @ b.T).max(dim=-1).values
        distinct = torch.argsort(best, descending=True, stable=True)[r:]
        residual = torch.cat([residual[0::2][distinct], residual[1::2]])
    return residual


def prune_frame(x: torch.Tensor, scores: torch.Tensor, k: int, important_ratio: float) -> torch.Tensor:
    """Kept token indices of one frame: ``x [n, D]``, ``scores [n]``, budget ``k``."""
    important = int(k * important_ratio)
    order = torch.argsort(scores, descending=True, stable=True)
    diverse = k - important
    if diverse <= 0:
        return order[:important]
    normed = x / x.norm(dim=-1, keepdim=True)
    return torch.cat([order[:important], dedup(normed, order[important:], diverse)])


@register
@dataclass(frozen=True)
class VisPruner:
    """important_ratio: share of each frame's budget chosen by attention (official 0.5); budget: allocator."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="vispruner",
        stage="vision_encoder",
        paper="VisPruner (ICCV 2025, arXiv 2412.01818)",
        code="github.com/Theia-4869/VisPruner llava/model/llava_arch.py::encode_images (aefa01a)",
        needs=("scores",),
        approximation="video port of an image method: per frame, encoder attention received pooled to the LLM grid, "
        "duplicates removed on the projected features instead of the encoder output",
    )
    important_ratio: float = 0.5
    budget: str = "uniform"

    def __post_init__(self):
        check_allocator("vispruner", self.budget)

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if not 0.0 <= float(self.important_ratio) <= 1.0:
            raise ValueError(f"vispruner: important_ratio must be in [0, 1], got {self.important_ratio}")
        f, n, _ = features.shape
        ks = frame_budgets(features, retention_ratio, self.budget).tolist()
        keep = torch.zeros((f, n), dtype=torch.bool, device=features.device)
        for t in range(f):
            keep[t, prune_frame(features[t], scores[t].to(features.device), ks[t], self.important_ratio)] = True
        return Selection(keep=keep, stats={"important_ratio": float(self.important_ratio)})
