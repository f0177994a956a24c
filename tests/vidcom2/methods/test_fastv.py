"""fastv: the layer-average arithmetic of baselines.md 1.1 and the top-k of the attention row.

Moved from tests/vidcom2/methods/test_baselines.py (one test file per method).
"""

import pytest
import torch

from tests.vidcom2 import reference as ref
from vidcom2.methods import fastv


@pytest.mark.parametrize("layers,rho,want", [(28, 0.5, 0.536), (28, 0.25, 0.304), (32, 0.15, 0.203), (36, 0.35, 0.386)])
def test_fastv_layer_average_table(layers, rho, want):
    assert fastv.layer_average(rho, layers, 2) == pytest.approx(want, abs=5e-4)


@pytest.mark.parametrize("layers,r,want", [(28, 0.25, 0.1923), (32, 0.35, 0.3067), (36, 0.15, 0.1000)])
def test_fastv_rho_for_a_layer_averaged_target(layers, r, want):
    assert fastv.keep_fraction(r, layers, 2, "layer_avg") == pytest.approx(want, abs=5e-5)
    with pytest.raises(ValueError, match="floor K/L"):
        fastv.keep_fraction(0.05, layers, 2, "layer_avg")


def test_fastv_top_visual_is_top_k_of_the_row():
    row = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2, 0.8])
    assert fastv.top_visual(row, 0.5).tolist() == [1, 3, 5]


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """On tensors: ``count(r, F*N)`` over the video (a total; final budget mode)."""
    f, n = x.shape[:2]
    return ref.budget(r, f * n)
