"""fastvid_vc2: the VidCom2 repository's FastVID port against its slow reference (vc2_reference.py).

Moved from tests/vidcom2/methods/test_vc2_ports.py (one test file per method).
"""

from __future__ import annotations

import pytest
import torch

from tests.vidcom2.methods.vc2_reference import (
    RATIOS,
    SHAPES,
    _as_lists,
    _check_same,
    _fastvid_plan,
    _random,
    _run,
    _static_video,
    fastvid_counts,
    ref_fastvid,
)


@pytest.mark.parametrize("f,n", SHAPES)
def test_fastvid_vc2_matches_reference_random(f, n):
    x = _random(f, n, seed=f * 13 + n)
    for r in RATIOS:
        keep, out = ref_fastvid(x, r, torch.Generator().manual_seed(2))
        sel = _run("fastvid_vc2", x, r, seed=2)
        _check_same(sel, x, keep, out)
        assert sel.keep.sum(1).tolist() == fastvid_counts(x, r)


def test_fastvid_vc2_fallback_when_a_segment_would_keep_nothing():
    # n = 1 and d = 1: a multi-frame segment's budget is all contextual, capped at n // 2 = 0 -> the port keeps the
    # segment's `retain` highest-norm tokens instead
    x = _random(1, 1, seed=2).expand(4, 1, 6).clone() * torch.tensor(
        [1.0, 3.0, 2.0, 4.0], dtype=torch.float64
    ).view(4, 1, 1)
    keep, out = ref_fastvid(x, 0.5, torch.Generator(), c=1, d=1.0)
    sel = _run("fastvid_vc2", x, 0.5, dyseg_c=1, stprune_d=1.0)
    _check_same(sel, x, keep, out)
    # one segment of 4 frames (same direction), retain = 4 * max(1, int(1 * 0.5)) = 4: all 4 tokens, unmerged
    assert bool(sel.keep.all()) and torch.equal(sel.features, x)
    # a total: the fallback's per-frame split depends on the norms
    assert fastvid_counts(x, 0.5, c=1, d=1.0) == 4


@pytest.mark.parametrize(
    "f,cut,hp",
    [
        (10, 5, {}),
        (12, None, {"dyseg_c": 2}),
        (9, 4, {"dyseg_c": 1, "dtm_p": 1, "stprune_d": 0.3, "dtm_beta": 0.2}),
        (11, 6, {"dyseg_c": 3, "dyseg_ignore": 0.9999, "dtm_p": 2}),
    ],
)
def test_fastvid_vc2_matches_reference_segments(f, cut, hp):
    x = _static_video(f, 10, seed=f, cut=cut, moving=0.05)
    x[1] = x[0]  # an exact duplicate frame: an inner segment of length >= 2
    kw = {
        "c": hp.get("dyseg_c", 8),
        "ignore": hp.get("dyseg_ignore", 0.99),
        "d": hp.get("stprune_d", 0.5),
        "p": hp.get("dtm_p", 4),
        "beta": hp.get("dtm_beta", 0.5),
    }
    for r in [0.1, 0.3, 0.7]:
        keep, out = ref_fastvid(x, r, torch.Generator().manual_seed(9), **kw)
        sel = _run("fastvid_vc2", x, r, seed=9, **hp)
        _check_same(sel, x, keep, out)
        sizes = _fastvid_plan(_as_lists(x), r, kw["c"], 0.84, kw["ignore"], kw["d"], kw["p"])[0]
        assert sel.stats["segments"] == len(sizes)
    assert max(sizes) > 1  # the inputs do produce multi-frame segments


def test_fastvid_vc2_hand_example_single_frame():
    # one frame of 20 tokens at r = 0.3: 6 kept, int(6 * 0.5) = 3 contextual anchors, 3 salient (largest norms)
    x = _random(1, 20, seed=3)
    sel = _run("fastvid_vc2", x, 0.3)
    assert int(sel.keep.sum()) == 6
    top3 = x[0].norm(dim=-1).topk(3).indices
    assert bool(sel.keep[0, top3].all())
    assert torch.equal(sel.features[0, top3], x[0, top3])  # salient tokens are not merged


def test_fastvid_vc2_keeps_only_the_last_of_duplicate_frames():
    # 3 identical frames, no forced cut (dyseg_c = 1; with the default 8 every frame of a video of <= 8 temporal
    # patches is its own segment): one segment, one inner segment, only its last frame gets tokens
    x = _random(1, 12, seed=8).expand(3, 12, 6).clone()
    assert _run("fastvid_vc2", x, 0.25).keep.sum(1).tolist() == [3, 3, 3]
    sel = _run("fastvid_vc2", x, 0.25, dyseg_c=1)
    # 3 * 3 = 9 retained: 4 contextual (<= 12 // 2) + 5 salient, all in the last frame
    assert sel.keep.sum(1).tolist() == [0, 0, 9]
    assert sel.stats["retention_realised"] == pytest.approx(9 / 36)


def test_fastvid_vc2_full_ratio_keeps_everything_like_the_port():
    x = _random(3, 7)
    sel = _run("fastvid_vc2", x, 1.0)
    assert bool(sel.keep.all()) and sel.features is None


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """Data-dependent (segments): the port's rule, recomputed by the slow reference."""
    return fastvid_counts(x, r)
