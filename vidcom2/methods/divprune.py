"""DivPrune — diversity-based visual token pruning (greedy max-min diversity).

Paper: Alvar et al., *DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models*, CVPR 2025,
arXiv 2503.02175. Official code: github.com/vbdi/divprune ``LLaVA/llava/model/llava_arch.py::DivPrune``.

Distance ``D = 1 - cos(x_i, x_j)``. First token: the one whose nearest-neighbour distance (second-smallest value of
its column, self excluded) is largest; then repeatedly add the token farthest (max over candidates of the min distance
to the selected set). The official loop recomputes the min over all selected rows each iteration (O(k^2 N)); the
running minimum here gives the same values and the same first-argmax tie-break in O(kN). Selected tokens are excluded
from later picks (relevant only for exact duplicates, where the official loop could pick a token twice).
Default scope ``video`` (one selection over all visual tokens, the faithful reading for video); ``frame`` optional.

Dtype: the official code computes the cosine matrix in the embedding dtype (``pairwise_cosine_similarity``,
llava_arch.py:147-150 at 799e2d9), so ``compute_dtype="input"`` (default) does the same and bf16 runs select what
the official code selects; ``compute_dtype="float32"`` upcasts first (the project's earlier behaviour; bf16 runs
then pick different tokens, since the greedy max-min diverges after one different pick). Recorded in the stats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import cast, check_allocator, count, frame_budgets
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection


def max_min_diversity(x: torch.Tensor, k: int, compute_dtype: str = "input") -> torch.Tensor:
    """Indices (sorted) of ``k`` tokens of ``x [M, D]`` chosen greedily by max-min cosine distance, computed in
    ``x``'s dtype (``compute_dtype="input"``, official) or in float32."""
    m = x.shape[0]
    if k >= m:
        return torch.arange(m, device=x.device)
    xn = F.normalize(cast(x, compute_dtype), dim=-1)
    dist = 1.0 - xn @ xn.T
    if m > 1:
        nearest = dist.topk(2, dim=0, largest=False).values[1]  # second-smallest per column
    else:
        nearest = dist[0]
    first = int(torch.argmax(nearest))
    chosen = [first]
    mind = dist[first].clone()
    mind[first] = float("-inf")
    for _ in range(k - 1):
        j = int(torch.argmax(mind))
        chosen.append(j)
        mind = torch.minimum(mind, dist[j])  # min(-inf, .) keeps earlier picks excluded
        mind[j] = float("-inf")
    return torch.tensor(sorted(chosen), dtype=torch.long, device=x.device)


@register
@dataclass(frozen=True)
class DivPrune:
    """scope: ``video`` (default; ``count(r, F*N)`` tokens over the whole video) or ``frame`` (per-frame budgets).
    compute_dtype: ``input`` (official: the embedding dtype) or ``float32``."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="divprune",
        stage="pre_llm",
        paper="DivPrune (CVPR 2025, arXiv 2503.02175)",
        code="github.com/vbdi/divprune LLaVA/llava/model/llava_arch.py::DivPrune",
    )
    scope: str = "video"
    budget: str = "uniform"
    compute_dtype: str = "input"

    def __post_init__(self):
        check_allocator("divprune", self.budget)

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        f, n, d = features.shape
        cd = self.compute_dtype
        dtype = str(cast(features[:0], cd).dtype).replace("torch.", "")  # validates compute_dtype before any work
        keep = torch.zeros((f, n), dtype=torch.bool, device=features.device)
        if self.scope == "video":
            idx = max_min_diversity(features.reshape(f * n, d), count(retention_ratio, f * n), cd)
            keep.view(-1)[idx] = True
        elif self.scope == "frame":
            for t, k in enumerate(frame_budgets(features, retention_ratio, self.budget).tolist()):
                keep[t, max_min_diversity(features[t], k, cd)] = True
        else:
            raise ValueError(f"divprune: scope must be 'video' or 'frame', got {self.scope!r}")
        return Selection(keep=keep, stats={"scope": self.scope, "compute_dtype": dtype})
