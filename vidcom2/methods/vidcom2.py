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

Ablation knobs (paper Tables 5-8; defaults = the official behaviour, bit-identical masks):

- ``token_score`` (Table 5): which score ranks tokens within a frame. ``sum`` (default; the paper's
  ``u_frame + u_video``: keep the smallest ``s_video + s_frame``), ``s_frame`` / ``s_video`` (keep the *largest*
  similarity, i.e. the least unique tokens), ``neg_s_frame`` / ``neg_s_video`` (keep the smallest similarity, i.e.
  the most unique by that one term). These are the May-2025 official ``token_score_mode`` values
  ``positive_frame_mean``, ``positive_video_mean``, ``negtive_frame_mean``, ``negtive_video_mean`` and
  ``negtive_video_mean_and_global_mean`` (repository history, ``llava/model/vidcom2.py``).
- ``frame_score`` (Table 6): how FCA aggregates token uniqueness into frame uniqueness, ``mean`` (default) or
  ``max`` (see :data:`vidcom2.budget.FRAME_SCORES`); the "uniform" row of Table 6 is ``budget="uniform"``
  (official ``frame_score_mode="equal"``).
- ``window`` (Table 7): the video centre of frame t is the mean of the normalised tokens of ``W`` consecutive
  frames around t (frames ``t - W//2 .. t - W//2 + W - 1``, shifted inward at the ends so every window holds
  ``min(W, F)`` frames) instead of all frames; ``s_video`` is then the similarity to that local centre, in the FCA
  frame uniqueness and in the token score alike. ``None`` (default) or ``W >= F`` is the global centre. No code for
  this exists in any official version: implemented from the paper's description (this reading is ours).
- ``score_weights`` (Table 8): ``(w_frame, w_video)``; the token score is ``w_frame * s_frame + w_video *
  s_video`` (keep the smallest). ``(1, 1)`` is the default; ``(1, 0)`` / ``(0, 1)`` are the one-term rows (equal
  to ``neg_s_frame`` / ``neg_s_video``). No official code either: implemented from the paper's description.

Ties: the official ``topk(largest=False, sorted=False)`` leaves the choice among equal scores to the backend; this
implementation breaks ties by lower index (stable sort), which is deterministic across devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import FRAME_SCORES, cast, check_allocator, counts, fca_ratios, frame_budgets, keep_lowest
from vidcom2.registry import register
from vidcom2.similarity import gaussian_scores, low_variance_channels, multi_scale_gaussian
from vidcom2.types import MethodInfo, Selection

TOKEN_SCORES = ("sum", "s_frame", "neg_s_frame", "s_video", "neg_s_video")


@register
@dataclass(frozen=True)
class VidCom2:
    """budget: ``fca`` (the paper's Frame Compression Adjustment) or ``uniform`` (ablation: same ratio per frame).
    compute_dtype: ``input`` (official) or ``float32``. token_score, frame_score, window, score_weights: the
    ablation knobs of the module docstring (defaults = official). fast: the faster formulation of the statistics
    (blocked two-pass channel variance, dot-product distances; see :mod:`vidcom2.similarity`): not bit-identical
    to the official code, so masks can differ at near-ties (agreement measured by ``make bench-select``)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="vidcom2",
        stage="pre_llm",
        paper="Video Compression Commander (EMNLP 2025, arXiv 2505.14454)",
        code="github.com/xuyang-liu16/VidCom2 token_compressor/vidcom2/vidcom2.py",
    )
    budget: str = "fca"
    compute_dtype: str = "input"
    token_score: str = "sum"
    frame_score: str = "mean"
    window: int | None = None
    score_weights: tuple[float, float] = (1.0, 1.0)
    fast: bool = False

    def __post_init__(self):
        object.__setattr__(self, "score_weights", tuple(float(w) for w in self.score_weights))
        check_allocator("vidcom2", self.budget)
        if self.token_score not in TOKEN_SCORES:
            raise ValueError(f"vidcom2: token_score must be one of {TOKEN_SCORES}, got {self.token_score!r}")
        if self.frame_score not in FRAME_SCORES:
            raise ValueError(
                f"vidcom2: frame_score must be one of {FRAME_SCORES} (uniform budgets: budget=uniform), got {self.frame_score!r}"
            )
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1):
            raise ValueError(f"vidcom2: window must be null (global video centre) or a frame count >= 1, got {self.window!r}")
        w = self.score_weights
        if len(w) != 2 or min(w) < 0 or max(w) <= 0:
            raise ValueError(f"vidcom2: score_weights must be [w_frame, w_video], >= 0, not both 0; got {list(w)}")
        if self.token_score != "sum" and w != (1.0, 1.0):
            raise ValueError(
                f"vidcom2: score_weights={list(w)} weights the sum; it needs token_score='sum', got {self.token_score!r}"
            )

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        x = cast(features, self.compute_dtype)
        stats = {"budget": self.budget, "compute_dtype": str(x.dtype).replace("torch.", "")}
        stats["tie_rule"] = "lower_index"  # equal scores at the cut-off: the lower index is kept (official: backend's)
        if retention_ratio >= 1.0:
            return Selection(keep=torch.ones(x.shape[:2], dtype=torch.bool, device=x.device), stats=stats)
        if self.fast:
            stats["formulation"] = "fast"  # not bit-identical to the official code (vidcom2.similarity)
        s_video, s_frame = _scores(x, self.window, self.fast)
        n = x.shape[1]
        if self.budget == "fca":
            k = counts(fca_ratios(s_video, retention_ratio, self.frame_score), n)
        else:
            k = frame_budgets(x, retention_ratio, self.budget)
        keep = keep_lowest(self._token_score(s_video, s_frame), k)
        return Selection(keep=keep, stats=stats)

    def _token_score(self, s_video: torch.Tensor, s_frame: torch.Tensor) -> torch.Tensor:
        """The score whose smallest values are kept (``[F, N]``)."""
        if self.token_score == "sum":
            if self.score_weights == (1.0, 1.0):
                return s_video + s_frame  # the official expression, bit for bit
            w_frame, w_video = self.score_weights
            return w_frame * s_frame + w_video * s_video
        return {"s_frame": -s_frame, "neg_s_frame": s_frame, "s_video": -s_video, "neg_s_video": s_video}[self.token_score]


def _scores(x: torch.Tensor, window: int | None, fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s_video, s_frame)``, each ``[F, N]``; with a ``window`` < F the video centre of frame t is local."""
    f, n, d = x.shape
    if window is None or window >= f:
        return gaussian_scores(x, fast=fast)
    frames = F.normalize(low_variance_channels(x.reshape(f * n, d), fast=fast).view(f, n, -1), dim=-1)
    centres = torch.stack([frames[lo : lo + window].mean(dim=(0, 1)) for lo in _window_starts(f, window)])
    return (multi_scale_gaussian(frames, centres.unsqueeze(1), fast=fast),
            multi_scale_gaussian(frames, frames.mean(dim=1, keepdim=True), fast=fast))


def _window_starts(num_frames: int, window: int) -> list[int]:
    """First frame of frame t's window: ``t - W//2``, clamped to ``[0, F - W]``."""
    return [min(max(0, t - window // 2), num_frames - window) for t in range(num_frames)]

