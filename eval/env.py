"""Where a run ran: git state, package versions, device, host (the record's ``env`` block).

``versions`` names the packages a reader looks for first; ``distributions`` lists every installed distribution with
its version, and ``environment_sha256`` hashes that list, so two records can be compared for environment drift
(:func:`drift`); ``lock_sha256`` is the hash of ``requirements/lock.txt`` the checkout carries (what ``make install``
installed, unless the venv was changed by hand: then the two hashes tell different stories).
"""

from __future__ import annotations

import functools
import hashlib
import json
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


def distributions() -> dict[str, str]:
    """Every installed distribution, ``{normalised name: version}`` sorted by name (read once per process: parsing
    ~250 METADATA files took ~0.5 s per run of an in-process sweep)."""
    return dict(_distributions())


@functools.cache
def _distributions() -> dict[str, str]:
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower().replace("_", "-").replace(".", "-")] = dist.version
    return dict(sorted(out.items()))


def environment_digest(dists: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(dists, sort_keys=True).encode()).hexdigest()


def lock_digest(root: Path = ROOT) -> str | None:
    lock = root / "requirements" / "lock.txt"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.exists() else None


def drift(envs: list[dict]) -> str | None:
    """A one-line warning when the ``env`` blocks of ``envs`` come from different environments, else None.

    Records made before ``distributions`` existed are compared on their ``versions``; the note names up to eight
    packages whose versions differ (``name a|b``)."""
    listed = [e.get("distributions") or e.get("versions") or {} for e in envs]
    distinct = {json.dumps(d, sort_keys=True) for d in listed}
    if len(distinct) <= 1:
        return None
    names = sorted({n for d in listed for n in d})
    differ = []
    for name in names:
        seen = sorted({str(d.get(name)) for d in listed})
        if len(seen) > 1:
            differ.append(f"{name} {'|'.join(seen)}")
    shown = ", ".join(differ[:8]) + (f", ... ({len(differ)} packages)" if len(differ) > 8 else "")
    return f"rows come from {len(distinct)} different environments: {shown}"


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
        "distributions": (dists := distributions()),
        "environment_sha256": environment_digest(dists),
        "lock_sha256": lock_digest(),
        "device": device_name(device),
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "hostname": socket.gethostname(),
        **(extra or {}),
    }
