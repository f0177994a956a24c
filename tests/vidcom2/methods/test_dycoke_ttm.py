"""dycoke_ttm: DyCoke's TTM (stage 1) against the reference, the spec's retention table and the matched budget.

Moved from tests/vidcom2/methods/test_baselines.py (one test file per method).
"""

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref


def _x(f, n, d=6, seed=0):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("f", [2, 3, 5, 6, 8, 9, 12])
def test_dycoke_ttm_official_k_matches_reference(f):
    n = 20
    x = _x(f, n, seed=f)
    sel = vidcom2.apply("dycoke_ttm", x, 0.5, merge_ratio=0.7)
    want, order = ref.dycoke_ttm(x, lambda _: int((1 - 0.7) * n))
    assert torch.equal(sel.keep, want)
    assert sel.flat_indices().tolist() == order  # pruned frames in ascending-similarity order
    assert sel.stats["budget_mode"] == "official_k"


def test_dycoke_ttm_retention_table_of_the_spec():
    # baselines.md 1.4: F=32, n=196, K=0.7 -> R_in = 0.494; F=16, K=0.5 -> 0.656; F=64 floor 0.2656
    for f, k, want in [(32, 0.7, 0.494), (16, 0.5, 0.656), (64, 0.85, 0.374)]:
        sel = vidcom2.apply("dycoke_ttm", torch.randn(f, 196, 4), 0.5, merge_ratio=k)
        assert sel.stats["retention_realised"] == pytest.approx(want, abs=5e-4)
    with pytest.raises(ValueError, match=r"floor 17/64 = 0.2656"):
        vidcom2.select("dycoke_ttm", torch.randn(64, 196, 4), 0.25)


def test_dycoke_ttm_matched_budget_is_exact_and_spread_evenly():
    f, n = 32, 196
    x = _x(f, n, seed=1)
    sel = vidcom2.apply("dycoke_ttm", x, 0.3)
    assert int(sel.keep.sum()) == ref.budget(0.3, f * n)
    pruned = sorted({i + 1 for i in range(0, f - 1, 2)} | {i + 2 for i in range(0, f - 4, 4)})
    counts = sel.keep.sum(1)[pruned]
    assert int(counts.max() - counts.min()) <= 1
    want, order = ref.dycoke_ttm(x, lambda rank: int(counts[rank]))
    assert torch.equal(sel.keep, want) and sel.flat_indices().tolist() == order


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def pruned_frames(f):
    """DyCoke TTM pass structure (baselines.md 8.1)."""
    return {i + 1 for i in range(0, f - 1, 2)} | {i + 2 for i in range(0, f - 4, 4)}


def expected_counts(x, r):
    """Budget-matched ``count(r, F*N)`` (a total), or None below the anchor floor (the method must raise)."""
    f, n = x.shape[:2]
    whole = f - len(pruned_frames(f))
    total = ref.budget(r, f * n)
    return total if total >= whole * n and (f > 1 or r == 1.0) else None
