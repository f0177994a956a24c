"""visionzip_vc2: the VidCom2 repository's VisionZip port against its slow reference (vc2_reference.py).

Moved from tests/vidcom2/methods/test_vc2_ports.py (one test file per method).
"""

from __future__ import annotations

from itertools import product

import pytest
import torch

from tests.vidcom2.methods.vc2_reference import (
    RATIOS,
    SHAPES,
    _random,
    _run,
    ref_visionzip,
)


@pytest.mark.parametrize("f,n", SHAPES)
def test_visionzip_vc2_matches_reference_random(f, n):
    x = _random(f, n, seed=f * 7 + n)
    for r in RATIOS + [1.0]:
        keep, out = ref_visionzip(x, r)
        sel = _run("visionzip_vc2", x, r)
        assert torch.equal(sel.keep, keep), r
        if sel.features is not None:
            assert torch.allclose(sel.features[keep], out[keep], atol=1e-12)
        else:
            assert torch.equal(out[keep], x[keep])


def test_visionzip_vc2_structured_and_hparams():
    # clustered tokens (5 directions + 2% jitter, random scales): dense neighbourhoods, uneven clusters. Exact
    # density ties are not constructed: float64 rounding would decide them differently here and in the reference
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(5, 6, generator=g, dtype=torch.float64)
    x = centres[torch.randint(0, 5, (3, 20), generator=g)] * (
        1 + torch.rand(3, 20, 1, generator=g, dtype=torch.float64)
    )
    x = x + 0.02 * torch.randn(3, 20, 6, generator=g, dtype=torch.float64)
    for r, dr, k in product([0.2, 0.45, 0.9], [0.6, 0.0, 1.0], [1, 5, 30]):
        keep, out = ref_visionzip(x, r, dr, k)
        sel = _run("visionzip_vc2", x, r, dominant_ratio=dr, k_neighbors=k)
        assert torch.equal(sel.keep, keep), (r, dr, k)
        feats = sel.features if sel.features is not None else x
        assert torch.allclose(feats[keep], out[keep], atol=1e-12)


def test_visionzip_vc2_budget_is_the_ports_int_rule():
    x = _random(2, 29)
    for r, kept, dom in [(0.29, 8, 4), (0.1, 2, 1), (0.01, 1, 1), (0.5, 14, 8), (1.0, 29, 17)]:
        # 29 * 0.29 = 8.41 -> 8; 29 * 0.5 = 14.5 -> 14 (count() gives 14 by half-even too); 0.01 -> max(1, 0)
        sel = _run("visionzip_vc2", x, r)
        assert sel.keep.sum(1).tolist() == [kept, kept] and sel.stats["dominant"] == dom
    sel = _run("visionzip_vc2", _random(1, 10), 0.3)  # 10 * 0.3 = 3.0000000000000004 -> 3; 0.6 * 3 = 1.8 -> 1
    assert sel.stats["dominant"] == 1 and sel.stats["contextual"] == 2


def test_visionzip_vc2_full_ratio_is_lossless_like_the_port():
    x = _random(3, 11)
    sel = _run("visionzip_vc2", x, 1.0)
    assert bool(sel.keep.all()) and torch.equal(sel.gather(x), x.reshape(-1, 6))


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """The port's per-frame ``int()`` rule (baselines.md 7.2)."""
    f, n = x.shape[:2]
    return [max(1, int(n * r))] * f
