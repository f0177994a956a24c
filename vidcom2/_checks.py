"""Input validation shared by the public API: clear errors that name the problem and the fix."""

from __future__ import annotations

import torch


def check_features(features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor of shape [F, N, D], got {type(features).__name__}")
    if features.dim() != 3:
        hint = " (one video at a time: pass [F, N, D]; reshape [F*N, D] with .view(F, N, D))" if features.dim() == 2 else ""
        raise ValueError(f"features must have shape [F, N, D] (frames, tokens per frame, channels), got {tuple(features.shape)}{hint}")
    if min(features.shape) < 1:
        raise ValueError(f"features is empty: shape {tuple(features.shape)}; every dimension of [F, N, D] must be >= 1")
    if not features.is_floating_point():
        raise TypeError(f"features must be floating point, got {features.dtype}")
    if not _all_finite(features):
        raise ValueError("features contain NaN or Inf; check the vision encoder output (e.g. fp16 overflow) before compressing")


def check_aux(name: str, tensor: torch.Tensor | None, features: torch.Tensor, method: str, trailing: bool) -> None:
    """Validate ``scores [F, N]`` (trailing=False) or ``keys [F, N, d]`` (trailing=True) for ``method``."""
    f, n = features.shape[:2]
    want = "[F, N, d]" if trailing else "[F, N]"
    if tensor is None:
        raise ValueError(
            f"method {method!r} needs `{name}` {want} (e.g. attention scores from the model); attach it to a model with "
            f"vidcom2.compress(...), which supplies them, or pass {name}= explicitly"
        )
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {want}, got {type(tensor).__name__}")
    ok = tensor.dim() == (3 if trailing else 2) and tuple(tensor.shape[:2]) == (f, n)
    if not ok:
        raise ValueError(f"{name} must have shape {want} = ({f}, {n}{', d' if trailing else ''}), got {tuple(tensor.shape)}")
    if not _all_finite(tensor):
        raise ValueError(f"{name} contain NaN or Inf")


def check_global(tensor: torch.Tensor | None, features: torch.Tensor, method: str) -> None:
    """Validate ``global_features [F, Dg]`` (one vector per frame of ``features``) for ``method``."""
    f = features.shape[0]
    if tensor is None:
        raise ValueError(
            f"method {method!r} needs `global_features` [F, Dg] (one vector per frame, e.g. SigLIP's MAP-head output); "
            "vidcom2.compress(...) supplies them on models with that head, or pass global_features= explicitly"
        )
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or tensor.shape[0] != f:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"global_features must have shape [F, Dg] with F = {f}, got {got}")
    if not _all_finite(tensor):
        raise ValueError("global_features contain NaN or Inf")


def _all_finite(t: torch.Tensor) -> bool:
    # one reduction instead of an elementwise mask: NaN/Inf always propagate into the sum; a finite tensor whose sum
    # overflows falls through to the exact check
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())
