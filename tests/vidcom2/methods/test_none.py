"""none: the uncompressed baseline keeps every token (the contract suite checks the rest)."""

import torch

import vidcom2


def expected_counts(x, r):
    """Every token of every frame, whatever the ratio."""
    f, n = x.shape[:2]
    return [n] * f


def test_none_keeps_everything_in_order():
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    sel = vidcom2.apply("none", x, 0.1)
    assert bool(sel.keep.all()) and sel.flat_indices().tolist() == list(range(15))
