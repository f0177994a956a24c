"""The public entry points on tensors: ``apply`` (full :class:`Selection`) and ``select`` (the keep-mask)."""

from __future__ import annotations

import torch

from vidcom2._checks import check_aux, check_features, check_global
from vidcom2.budget import check_ratio
from vidcom2.registry import get_method
from vidcom2.types import Selection


def apply(
    method: str,
    features: torch.Tensor,
    retention_ratio: float,
    *,
    scores: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
    global_features: torch.Tensor | None = None,
    seed: int = 0,
    **hparams,
) -> Selection:
    """Run ``method`` on one video's visual tokens.

    features: ``[F, N, D]`` post-projector tokens (F frames or temporal patches, N tokens per frame).
    retention_ratio: fraction of visual tokens to keep, in (0, 1].
    scores: ``[F, N]`` importance (higher = more important) for methods that need it (FastV, PDrop, VisionZip).
    keys: ``[F, N, d]`` similarity metric for merging methods (VisionZip).
    global_features: ``[F, Dg]`` one vector per frame for methods that need it (FastVID's MAP-head signal).
    seed: seeds a local CPU generator for stochastic methods (never the global RNG).
    Returns a :class:`Selection`; the input tensors are not modified.
    """
    m = get_method(method, **hparams) if isinstance(method, str) else method
    check_features(features)
    r = check_ratio(retention_ratio)
    name = m.info.name
    if "scores" in m.info.needs:
        check_aux("scores", scores, features, name, trailing=False)
    if "keys" in m.info.needs:
        check_aux("keys", keys, features, name, trailing=True)
    extra = {}
    if "global_features" in m.info.needs:
        check_global(global_features, features, name)
        extra["global_features"] = global_features
    generator = torch.Generator(device="cpu").manual_seed(int(seed)) if m.info.stochastic else None
    with torch.no_grad():
        sel = m(features, r, scores=scores, keys=keys, generator=generator, **extra)
    sel.stats.setdefault("kept", int(sel.keep.sum()))
    sel.stats.setdefault("total", int(sel.keep.numel()))
    return sel


def select(
    method: str,
    features: torch.Tensor,
    retention_ratio: float,
    *,
    scores: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
    seed: int = 0,
    **hparams,
) -> torch.Tensor:
    """The keep-mask ``BoolTensor [F, N]`` of ``method`` on ``features [F, N, D]`` (see :func:`apply`)."""
    return apply(method, features, retention_ratio, scores=scores, keys=keys, seed=seed, **hparams).keep
