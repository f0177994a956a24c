"""Where a run ran: git state, package versions, device, host (the record's ``env`` block)."""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "lmms_eval", "vidcom2", "accelerate", "qwen_vl_utils", "decord", "av")
_DIST = {"lmms_eval": "lmms-eval", "vidcom2": "vidcom2-harness", "qwen_vl_utils": "qwen-vl-utils"}


def git_state(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """(commit SHA, dirty flag) of the checkout, or (None, None) outside a git work tree."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        return sha, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, None


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(_DIST.get(name, name))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def describe(device: str, dtype: str | None, attn_implementation: str | None, extra: dict | None = None) -> dict:
    sha, dirty = git_state()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "versions": versions(),
        "device": device_name(device),
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "hostname": socket.gethostname(),
        **(extra or {}),
    }
