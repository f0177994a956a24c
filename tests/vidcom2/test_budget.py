import pytest
import torch

from tests.vidcom2 import reference as ref
from vidcom2 import budget


@pytest.mark.parametrize(
    "r,n,want",
    [(0.25, 196, 49), (0.125, 4, 1), (0.375, 4, 2), (0.625, 4, 2), (0.875, 4, 4), (0.5, 1, 1), (0.001, 196, 1), (1.0, 7, 7)],
)
def test_count_is_round_half_even_clamped(r, n, want):
    # 0.125*4 = 0.5 -> 0 -> clamped to 1; 0.375*4 = 1.5 -> 2; 0.625*4 = 2.5 -> 2 (half to even); 3.5 -> 4
    assert budget.count(r, n) == want == ref.budget(r, n)


def test_tensor_counts_agree_with_the_scalar_rule():
    ratios = torch.linspace(0.001, 1.0, 997, dtype=torch.float64)
    for n in (1, 13, 169, 196):
        assert budget.counts(ratios, n).tolist() == [ref.budget(float(r), n) for r in ratios]


def test_check_ratio():
    assert budget.check_ratio(1) == 1.0
    assert budget.check_ratio(torch.tensor(0.5)) == 0.5
    for bad in (0, 1.0001, -1, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            budget.check_ratio(bad)
    with pytest.raises(TypeError):
        budget.check_ratio(True)


def test_frame_budgets_uniform_and_fca():
    x = torch.randn(5, 20, 8, dtype=torch.float64)
    x[2] += 4
    assert budget.frame_budgets(x, 0.3).tolist() == [6] * 5
    fca = budget.frame_budgets(x, 0.3, "fca")
    assert fca.tolist() == ref.vidcom2_mask(x, 0.3)[1]
    with pytest.raises(ValueError, match="compute_dtype"):
        budget.frame_budgets(x, 0.3, "fca", compute_dtype="fp8")


def test_keep_lowest_breaks_ties_by_index():
    scores = torch.tensor([[1.0, 0.0, 0.0, 2.0, 0.0]])
    assert budget.keep_lowest(scores, torch.tensor([2])).tolist() == [[False, True, True, False, False]]
    assert budget.keep_highest(scores, torch.tensor([1])).tolist() == [[False, False, False, True, False]]
