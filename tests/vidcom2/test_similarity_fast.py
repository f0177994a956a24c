"""The fast formulations of VidCom2's statistics (an option, not the default) against float64 computations written
here; the default path stays the official expression (tests/vidcom2/methods/test_vidcom2.py)."""

from __future__ import annotations

import math

import torch

from vidcom2 import similarity as S


def _x(f=6, n=40, d=24, seed=0, dtype=torch.float32):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_in_place_square_is_the_official_expression_bit_for_bit():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.nn.functional.normalize(_x(dtype=dtype), dim=-1)
        c = x.mean(dim=(0, 1), keepdim=True)
        official = sum(torch.exp(-((x - c) ** 2).sum(dim=-1) / (2 * a)) for a in S.ALPHAS)
        assert torch.equal(S.multi_scale_gaussian(x, c), official)


def test_fast_variance_selects_the_float64_low_variance_channels():
    x = _x(8, 300, 64, seed=1).reshape(-1, 64)  # 2400 rows: more than one block of the fast path
    x[:, ::3] *= 3.0  # every third channel clearly high-variance
    v64 = x.double().var(dim=0, unbiased=False)
    want = sorted(sorted(range(64), key=lambda c: (float(v64[c]), c))[:32])
    order = sorted(float(v) for v in v64)
    assert order[32] - order[31] > 1e-4  # a margin far above fp32 rounding: the set is decided
    got = S.low_variance_channels(x, fast=True)
    assert torch.equal(got, x[:, want])


def test_fast_scores_equal_float64_scores_to_fp32_rounding():
    x = _x(5, 50, 32, seed=2)
    s_video, s_frame = S.gaussian_scores(x, fast=True)
    # float64, straight from the definition
    flat = x.double().reshape(-1, 32)
    var = sorted(float(flat[:, c].var(unbiased=False)) for c in range(32))
    assert var[16] - var[15] > 1e-4  # the kept channel set is decided far above fp32 rounding
    keep = sorted(sorted(range(32), key=lambda c: float(flat[:, c].var(unbiased=False)))[:16])
    t = torch.nn.functional.normalize(flat[:, keep].view(5, 50, 16), dim=-1)
    for centre, got in ((t.mean(dim=(0, 1), keepdim=True), s_video), (t.mean(dim=1, keepdim=True), s_frame)):
        d2 = ((t - centre) ** 2).sum(dim=-1)
        want = sum(torch.exp(-d2 / (2 * a)) for a in S.ALPHAS)
        assert torch.allclose(got.double(), want, atol=2e-5, rtol=0)
    assert not math.isnan(float(s_video.sum()))


def test_fast_vidcom2_masks_equal_the_reference_away_from_ties():
    import vidcom2
    from tests.vidcom2 import reference as ref
    from tests.vidcom2.methods.test_vidcom2 import _video

    checked = 0
    for seed in range(12):
        for structured in (False, True):
            x = _video(5, 30, 10, seed, structured)
            for r in (0.1, 0.25, 0.5):
                want, ks, margin = ref.vidcom2_mask_and_margin(x, r)
                if margin <= 1e-6:  # within rounding of a decision boundary: either mask is right
                    continue
                sel = vidcom2.apply("vidcom2", x, r, fast=True)
                assert torch.equal(sel.keep, want) and sel.keep.sum(dim=1).tolist() == ks
                assert sel.stats["formulation"] == "fast"
                checked += 1
    assert checked >= 60
