"""EVS — Efficient Video Sampling: prune the tokens that did not change since the previous frame.

Paper: NVIDIA, *Efficient Video Sampling: Pruning Temporally Redundant Tokens for Faster VLM Inference*,
arXiv 2510.14624. No separate official repository: the reference implementation is the one the serving engines ship,
read here in vLLM (github.com/vllm-project/vllm ``vllm/multimodal/evs.py`` at 094f117:
``compute_retained_tokens_count``, ``compute_retention_mask``); SGLang's ``srt/multimodal/evs/evs_core.py`` (at
1966fd0) is the same code, adapted from vLLM; TensorRT-LLM carries the same rule. The paper's text (Sec. 3) selects on raw RGB patches (L1 difference to the previous frame,
a percentile cut-off); the engines' code, which NVIDIA contributed (its copyright line is in ``evs.py``), uses the
cosine dissimilarity of the embeddings: this module follows the code.

Where: after the vision encoder and merger (the LLM's video embeddings), before the LLM. Per token, dissimilarity
``1 - cos`` to the token at the same position in the previous frame (temporal patch on Qwen), computed in the
embeddings' dtype; the first frame gets dissimilarity 255, so it is always kept whole. The ``retained`` most
dissimilar tokens of the whole video are kept (a stable descending sort: ties -> lower flat index, as vLLM's
``argsort(stable=True)``), in position order.

Count (vLLM's rule, the default ``counting="official"``): the engines take a pruning rate ``q``; here
``q = 1 - retention_ratio`` and ``retained = max(n, int(F * n * (1 - q)))``: truncation, and never fewer than one
whole frame, so short videos keep more than ``retention_ratio`` (the realised retention is recorded).
``counting="project"`` uses the project's rule instead: ``max(n, count(r, F*n))``.

No hyper-parameter besides the count rule (vLLM's ``video_pruning_rate`` is the one knob). Positions are the
adapter's (Qwen: the original M-RoPE positions of the kept tokens, as vLLM's ``recompute_mrope_positions`` gives
them). One difference stays, deliberately: vLLM restarts the text after a pruned video at the video's first
position + its grid width (``compute_mrope_for_media``'s fourth channel), transformers' rule (kept here) at the
largest video position + 1; the two agree when the width is the video's largest extent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import count, keep_highest
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection

#: Dissimilarity given to every token of the first frame (vLLM's constant; any value > 2 keeps the frame first).
FIRST_FRAME = 255


def retained_count(tokens_per_frame: int, num_frames: int, retention_ratio: float, counting: str = "official") -> int:
    """Tokens EVS keeps of ``num_frames * tokens_per_frame``: vLLM's ``max(n, int(total * (1 - q)))`` with
    ``q = 1 - retention_ratio`` (``official``) or ``max(n, count(r, total))`` (``project``)."""
    total = tokens_per_frame * num_frames
    if counting == "official":
        q = 1.0 - float(retention_ratio)
        kept = int(total * (1 - q))
    elif counting == "project":
        kept = count(retention_ratio, total)
    else:
        raise ValueError(f"evs: counting must be 'official' (vLLM's int) or 'project' (budget.count), got {counting!r}")
    return min(total, max(tokens_per_frame, kept))


def dissimilarity(features: torch.Tensor) -> torch.Tensor:
    """``[F, N]``: ``1 - cos`` of each token to the same position in the previous frame, the first frame ``255``
    (in the features' dtype, as vLLM)."""
    sim = F.cosine_similarity(features[1:], features[:-1], dim=-1)
    first = torch.full_like(features[:1, :, 0], FIRST_FRAME)
    return torch.cat([first, 1 - sim], dim=0)


@register
@dataclass(frozen=True)
class EVS:
    """counting: ``official`` (vLLM's truncation with a one-frame floor) or ``project`` (the one rounding rule,
    same floor)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="evs",
        stage="pre_llm",
        paper="Efficient Video Sampling (NVIDIA, arXiv 2510.14624)",
        code="github.com/vllm-project/vllm vllm/multimodal/evs.py (094f117)",
    )
    counting: str = "official"

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        f, n = features.shape[:2]
        k = retained_count(n, f, retention_ratio, self.counting)
        d = dissimilarity(features).reshape(1, f * n)
        keep = keep_highest(d, torch.tensor([k])).view(f, n)
        stats = {"counting": self.counting, "retained": k, "retention_realised": k / (f * n)}
        return Selection(keep=keep, stats=stats)
