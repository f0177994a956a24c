"""uniform: evenly spaced positions per frame (and with FCA budgets).

Moved from tests/vidcom2/methods/test_baselines.py (one test file per method).
"""

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref


def _x(f, n, d=6, seed=0):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n,r", [(196, 0.25), (196, 0.15), (169, 0.3), (10, 0.5), (7, 1.0), (5, 0.01)])
def test_uniform_positions(n, r):
    keep = vidcom2.select("uniform", _x(2, n), r)
    k = ref.budget(r, n)
    want = ref.uniform_indices(n, k)
    assert len(set(want)) == k
    for t in range(2):
        assert keep[t].nonzero().squeeze(1).tolist() == want


def test_uniform_with_fca_budgets_follows_vidcom2_counts():
    x = _x(6, 40, seed=2)
    x[3] += 3 * torch.randn(40, 6, dtype=torch.float64)
    _, ks = ref.vidcom2_mask(x, 0.25)
    keep = vidcom2.select("uniform", x, 0.25, budget="fca")
    assert keep.sum(1).tolist() == ks
    for t in range(6):
        assert keep[t].nonzero().squeeze(1).tolist() == ref.uniform_indices(40, ks[t])


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """Per-frame ``count(r, N)``."""
    f, n = x.shape[:2]
    return [ref.budget(r, n)] * f
