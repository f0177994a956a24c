"""vidcom2: against the independent float64 reference (tests/vidcom2/reference.py), on random and structured inputs,
and its documented tie rule in bf16. The ablation knobs: test_vidcom2_knobs.py."""

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import vidcom2
from tests.vidcom2 import reference as ref


def _video(f, n, d, seed, structured=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(f, n, d, generator=g, dtype=torch.float64)
    if structured:
        # a static background shared by all frames plus one distinct frame and a few salient tokens
        x = 0.2 * x + torch.randn(1, n, d, generator=g, dtype=torch.float64)
        x[f // 2] += 2.0 * torch.randn(n, d, generator=g, dtype=torch.float64)
        x[:, : max(1, n // 8)] *= 3.0
    return x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    f=st.integers(1, 6),
    n=st.integers(1, 24),
    d=st.integers(1, 12),
    r=st.floats(0.01, 1.0, allow_nan=False),
    seed=st.integers(0, 10_000),
    structured=st.booleans(),
)
def test_matches_reference(f, n, d, r, seed, structured):
    x = _video(f, n, d, seed, structured)
    want, ks, margin = ref.vidcom2_mask_and_margin(x, r)
    # two float64 computations agree except within rounding error of a decision boundary (an exact .5 budget, an
    # exact variance or score tie): draw inputs at least 1e-9 away from one (the exact-tie rule is tested in
    # test_budget.py and by the held-out masks)
    assume(margin > 1e-9)
    got = vidcom2.select("vidcom2", x, r)
    assert got.dtype == torch.bool and got.shape == (f, n)
    assert got.sum(dim=1).tolist() == ks
    assert torch.equal(got, want)


def test_realistic_shape_matches_reference():
    x = _video(6, 196, 32, seed=3, structured=True)
    for r in (0.15, 0.25, 0.3):
        want, ks = ref.vidcom2_mask(x, r)
        got = vidcom2.select("vidcom2", x, r)
        assert got.sum(dim=1).tolist() == ks
        assert torch.equal(got, want)


def test_single_frame_keeps_plain_ratio():
    x = _video(1, 50, 8, seed=1)
    for r in (0.1, 0.25, 0.5, 0.99):
        assert int(vidcom2.select("vidcom2", x, r).sum()) == ref.budget(r, 50)


def test_full_ratio_keeps_everything():
    x = _video(5, 30, 8, seed=2, structured=True)
    assert bool(vidcom2.select("vidcom2", x, 1.0).all())


def test_fca_gives_the_unique_frame_more_tokens():
    x = _video(8, 64, 16, seed=4, structured=True)  # frame 4 is the distinct one
    k = vidcom2.select("vidcom2", x, 0.25).sum(dim=1)
    assert int(k.argmax()) == 4
    assert int(k[4]) > ref.budget(0.25, 64)


def test_uniform_budget_option_is_the_ablation():
    x = _video(6, 40, 8, seed=5, structured=True)
    k = vidcom2.select("vidcom2", x, 0.3, budget="uniform").sum(dim=1)
    assert k.tolist() == [ref.budget(0.3, 40)] * 6


def test_float32_option_and_low_precision_input():
    x = _video(4, 49, 16, seed=6)
    want, _ = ref.vidcom2_mask(x, 0.25)
    sel = vidcom2.apply("vidcom2", x.to(torch.bfloat16), 0.25, compute_dtype="float32")
    assert sel.stats["compute_dtype"] == "float32"
    # float32 compute on bf16-rounded inputs: budgets equal, masks nearly equal (near-ties may flip)
    assert (sel.keep == want).float().mean() > 0.95
    assert vidcom2.apply("vidcom2", x.to(torch.bfloat16), 0.25).stats["compute_dtype"] == "bfloat16"


def test_official_rule_just_below_one_still_redistributes():
    # documents the official behaviour that motivates the r = 1 rule: at r -> 1 the non-unique frames lose ~N/F
    x = _video(4, 40, 8, seed=7, structured=True)
    r = 1 - 1e-9
    want, ks = ref.vidcom2_mask(x, r)
    got = vidcom2.select("vidcom2", x, r)
    assert got.sum(dim=1).tolist() == ks
    assert sum(ks) < 4 * 40


BF16 = torch.bfloat16


def test_vidcom2_records_its_tie_rule_and_keeps_the_lower_index():
    # every frame is one token repeated: all scores of a frame tie, so the kept tokens are the first k_t
    base = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(5))
    x = base.expand(3, 12, 8).contiguous().to(BF16)
    sel = vidcom2.apply("vidcom2", x, 0.5)
    assert sel.stats["tie_rule"] == "lower_index"
    for t, k in enumerate(sel.keep.sum(1).tolist()):
        assert sel.keep[t].nonzero().squeeze(1).tolist() == list(range(k))


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """FCA's per-frame budgets of the float64 reference."""
    return ref.vidcom2_mask(x, r)[1]
