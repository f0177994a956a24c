"""random: per-frame ``count(r, N)`` positions drawn from the method's own seeded generator."""

import torch

import vidcom2
from tests.vidcom2 import reference as ref


def expected_counts(x, r):
    """Per-frame ``count(r, N)``."""
    f, n = x.shape[:2]
    return [ref.budget(r, n)] * f


def test_random_depends_on_the_seed_only():
    x = torch.randn(4, 50, 8, generator=torch.Generator().manual_seed(0))
    a, b = vidcom2.select("random", x, 0.3, seed=1), vidcom2.select("random", x, 0.3, seed=2)
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    c = vidcom2.select("random", x, 0.3, seed=1)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(c, vidcom2.select("random", x, 0.3, seed=1))
