"""VidCom2 — Video Compression Commander.

Paper: Xuyang Liu, Yiyu Wang, Junpeng Ma, Linfeng Zhang, *Video Compression Commander: Plug-and-Play Inference
Acceleration for Video Large Language Models*, EMNLP 2025, arXiv 2505.14454.
Official code: github.com/xuyang-liu16/VidCom2, ``token_compressor/vidcom2/vidcom2.py`` (branches main and qwen).

Steps (official code): low-variance half of the channels -> L2-normalise -> multi-scale Gaussian similarity to the
video centre (s_v) and to the frame centre (s_f) -> Frame Compression Adjustment: per-frame ratio from frame
uniqueness (softmax, temperature 0.01, clamp 1) -> per-frame budget ``max(1, round(r_t * N))`` -> keep the tokens with
the smallest ``s_v + s_f``. Kept tokens keep their order; computed in the input dtype by default, like the official
code (``compute_dtype="float32"`` is offered and recorded).

r = 1: the official code still redistributes the budget at ``r = 1`` (frames with below-average uniqueness get
``r_t = 1 + p_t - mean(p) < 1``, so about ``N / F`` tokens per frame are dropped even at "100%"). Here ``r = 1`` keeps
every token, as every other method does; for ``r < 1`` the masks are the official ones. (spec/vidcom2.md states
"with r = 1.0 every frame keeps everything", which the official code does not do.)

Ties: the official ``topk(largest=False, sorted=False)`` leaves the choice among equal scores to the backend; this
implementation breaks ties by lower index (stable sort), which is deterministic across devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import cast, counts, fca_ratios, frame_budgets, keep_lowest
from vidcom2.registry import register
from vidcom2.similarity import gaussian_scores
from vidcom2.types import MethodInfo, Selection


@register
@dataclass(frozen=True)
class VidCom2:
    """budget: ``fca`` (the paper's Frame Compression Adjustment) or ``uniform`` (ablation: same ratio per frame).
    compute_dtype: ``input`` (official) or ``float32``."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="vidcom2",
        stage="pre_llm",
        paper="Video Compression Commander (EMNLP 2025, arXiv 2505.14454)",
        code="github.com/xuyang-liu16/VidCom2 token_compressor/vidcom2/vidcom2.py",
    )
    budget: str = "fca"
    compute_dtype: str = "input"

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        x = cast(features, self.compute_dtype)
        stats = {"budget": self.budget, "compute_dtype": str(x.dtype).replace("torch.", "")}
        stats["tie_rule"] = "lower_index"  # equal scores at the cut-off: the lower index is kept (official: backend's)
        if retention_ratio >= 1.0:
            return Selection(keep=torch.ones(x.shape[:2], dtype=torch.bool, device=x.device), stats=stats)
        s_video, s_frame = gaussian_scores(x)
        n = x.shape[1]
        if self.budget == "fca":
            k = counts(fca_ratios(s_video, retention_ratio), n)
        else:
            k = frame_budgets(x, retention_ratio, self.budget)
        keep = keep_lowest(s_video + s_frame, k)
        return Selection(keep=keep, stats=stats)


def frame_uniqueness(features: torch.Tensor) -> torch.Tensor:
    """``u_t = -mean_n s_video[t, n]`` for ``features [F, N, D]`` -> ``[F]`` (higher = more unique frame)."""
    s_video, _ = gaussian_scores(features)
    return -s_video.mean(dim=-1)
