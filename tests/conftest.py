"""Shared fixtures: tiny random-weight video LLMs (built once per session) and small synthetic videos.

The models are shared between tests; every test that attaches something must leave them as they were (which is
itself what the adapter tests check).

``make test`` runs the suite on two pytest-xdist workers (``--dist loadfile``: a file's module fixtures run once).
The tiny checkpoints and videos in the repository's ``.cache`` (which the app-level tests use, as ``make demo``
does) are built once, under a file lock, before any test of either worker runs: two workers never write them at the
same time and none reads a half-written checkpoint.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # the CI box has 2 shared cores; one thread per test process avoids oversubscription
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY_HUB = ROOT / ".cache" / "tiny_hub"


@pytest.fixture(scope="session", autouse=True)
def _shared_assets():
    """The tiny checkpoints (scripts/make_tiny_models.py), videos (scripts/make_tiny_benchmarks.py) and the tiny hub
    (``python -m eval.tinyhub``, rebuilt only when stale) in .cache. ``$VTC_TINY_HUB`` points every test's runs at that
    one hub (the default ``<cache_dir>/tiny_hub`` would follow a test's temporary ``cache_dir``); a test that needs
    another hub passes ``tiny_hub=<folder>`` (a Hydra override beats the variable)."""
    import os
    import subprocess
    import sys

    from filelock import FileLock

    cache = ROOT / ".cache"
    cache.mkdir(exist_ok=True)
    with FileLock(str(cache / ".test-assets.lock")):
        for cmd in ("scripts/make_tiny_models.py", "scripts/make_tiny_benchmarks.py", "-m eval.tinyhub"):
            subprocess.run([sys.executable, *cmd.split()], cwd=ROOT, check=True, capture_output=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTC_TINY_HUB", str(TINY_HUB))
        yield


@functools.cache
def _tiny(arch: str, text_layers: int):
    from vidcom2.testing import tiny

    return tiny.build(arch, text_layers=text_layers, seed=0)


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(arch, text_layers=4) -> (model, processor)``, cached for the session."""

    def get(arch: str, text_layers: int = 4):
        return _tiny(arch, text_layers)

    return get
