"""holitom_vc2: the VidCom2 repository's HoliTom port against its slow reference (vc2_reference.py).

Moved from tests/vidcom2/methods/test_vc2_ports.py (one test file per method).
"""

from __future__ import annotations

from itertools import product

import pytest
import torch

from tests.vidcom2.methods.vc2_reference import (
    RATIOS,
    SHAPES,
    _as_lists,
    _check_same,
    _random,
    _run,
    _saving,
    _static_pairs,
    _static_video,
    holitom_count,
    holitom_windows,
    ref_holitom,
)


@pytest.mark.parametrize("f,n", SHAPES)
def test_holitom_vc2_matches_reference_random(f, n):
    x = _random(f, n, seed=f * 11 + n)
    for r in RATIOS:
        g = torch.Generator().manual_seed(5)
        keep, out, _, _ = ref_holitom(x, r, g)
        sel = _run("holitom_vc2", x, r, seed=5)
        _check_same(sel, x, keep, out)
        assert int(sel.keep.sum()) == holitom_count(x, r)


@pytest.mark.parametrize("f,cut,moving", [(4, None, 0.0), (5, 2, 0.3), (7, 3, 0.2), (9, None, 0.4)])
def test_holitom_vc2_matches_reference_static(f, cut, moving):
    x = _static_video(f, 12, seed=f, cut=cut, moving=moving)
    for r, hp in product([0.1, 0.3, 0.6], [{}, {"D": 0.5, "K": 3}, {"beta": 0.2, "max_window_size": 2}]):
        g = torch.Generator().manual_seed(3)
        ref_hp = {k: v for k, v in hp.items() if k != "max_window_size"}
        keep, out, _, _ = ref_holitom(x, r, g, max_window=hp.get("max_window_size", 1024), **ref_hp)
        sel = _run("holitom_vc2", x, r, seed=3, **hp)
        _check_same(sel, x, keep, out)
        assert sel.stats["saved"] > 0 or moving > 0.3  # the inputs do produce static windows


def test_holitom_vc2_hand_example_fully_static():
    # 4 identical frames of 10 tokens: one window saving 30; r' = min(0.1 * 40 / 10, 1) = 0.4; 4 static centres;
    # no dynamic token; the port writes them into linspace(0, 39, 4) = [0, 13, 26, 39]
    x = _random(1, 10).expand(4, 10, 6).clone()
    sel = _run("holitom_vc2", x, 0.1)
    assert sel.keep.reshape(-1).nonzero().squeeze(1).tolist() == [0, 13, 26, 39]
    assert sel.stats["saved"] == 30 and sel.stats["ratio_adjusted"] == pytest.approx(0.4)
    rep = _run("holitom_vc2", x, 0.1, slots="representative")
    assert int(rep.keep.sum()) == 4 and rep.keep[0].sum() == 4  # centres at their own positions in frame 0
    assert torch.allclose(sel.gather(x), rep.gather(x))  # same tokens, in the same (position) order


def test_holitom_vc2_windows_are_optimal():
    # the DP maximises the saving over all partitions (brute force over the 2^(F-1) cut sets)
    for seed in range(4):
        x = _static_video(6, 8, seed=seed, cut=3, moving=0.4)
        static = _static_pairs(_as_lists(x), 0.8)
        _, best = holitom_windows(static, 6)
        brute = 0
        for mask in range(2**5):
            edges = [-1] + [i for i in range(5) if mask >> i & 1] + [5]
            brute = max(brute, sum(_saving(static, a + 1, b) for a, b in zip(edges, edges[1:])))
        assert best == brute
        assert _run("holitom_vc2", x, 0.2).stats["saved"] == best


def test_holitom_vc2_full_ratio_deviates_from_port_by_keeping_all():
    x = _static_video(4, 10, seed=2, moving=0.0)
    _, _, tokens, _ = ref_holitom(x, 1.0, torch.Generator().manual_seed(0))
    assert len(tokens) < 40  # the port still averages the static positions at r = 1 ...
    sel = _run("holitom_vc2", x, 1.0)
    # ... this does not
    assert bool(sel.keep.all()) and sel.features is None and sel.stats["full_ratio_lossless"]


def test_holitom_vc2_representative_slots_hold_the_same_tokens():
    x = _static_video(5, 12, seed=4, cut=2, moving=0.3)
    g = torch.Generator().manual_seed(1)
    _, _, tokens, reps = ref_holitom(x, 0.3, g)
    sel = _run("holitom_vc2", x, 0.3, seed=1, slots="representative")
    assert sorted(reps) == sel.keep.reshape(-1).nonzero().squeeze(1).tolist()
    got = sel.features.reshape(-1, 6)
    for s, v in zip(reps, tokens):
        assert torch.allclose(got[s], torch.tensor(v, dtype=torch.float64), atol=1e-10)


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """Data-dependent (windows): the port's rule, recomputed by the slow reference."""
    return holitom_count(x, r)
