"""The feature cache of scripts/train_tiny.py (``--cache-dir``): a hit returns the stored features bit for bit, a
stale file (the encoder now computes other features) is refused, and another frozen tower misses."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train_tiny():
    spec = importlib.util.spec_from_file_location("train_tiny_under_test", ROOT / "scripts" / "train_tiny.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class _Encoder:
    """Counts its calls; ``shift`` changes what it computes (a stale cache)."""

    def __init__(self):
        self.calls, self.shift = 0, 0.0

    def __call__(self, model, processor, clips):
        self.calls += 1
        return torch.stack([torch.full((3,), float(c) + self.shift, dtype=torch.float16) for c in clips])


def _tower(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Linear(2, 2)
    m.requires_grad_(False)
    return m


def test_hit_is_bit_identical_and_stale_is_refused(train_tiny, tmp_path):
    enc = _Encoder()
    arch = SimpleNamespace(encode=enc)
    clips = list(range(20))
    first = train_tiny.cached_encode(arch, _tower(0), None, clips, "pool", tmp_path)
    assert torch.equal(first, enc(None, None, clips)) and len(list(tmp_path.glob("*.pt"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write, no debris
    calls = enc.calls
    again = train_tiny.cached_encode(arch, _tower(0), None, clips, "pool", tmp_path)
    assert torch.equal(again, first) and enc.calls == calls + 1  # only the first-batch check re-encodes
    train_tiny.cached_encode(arch, _tower(1), None, clips, "pool", tmp_path)  # another frozen tower: a miss
    assert len(list(tmp_path.glob("*.pt"))) == 2
    enc.shift = 1.0
    with pytest.raises(SystemExit, match="does not match a fresh encoding"):
        train_tiny.cached_encode(arch, _tower(0), None, clips, "pool", tmp_path)
