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


def test_a_checked_ratio_is_a_float_passed_on_unchecked(monkeypatch):
    import json
    import pickle

    r = budget.check_ratio(0.25)
    assert type(r) is budget.Ratio and r == 0.25 and json.dumps({"r": r}) == '{"r": 0.25}'
    assert pickle.loads(pickle.dumps(r)) == r and type(r * 4) is float
    for bad in (0, 1.5, "abc", True):  # a Ratio exists only for a value the check accepts
        with pytest.raises((TypeError, ValueError), match="retention_ratio"):
            budget.Ratio(bad)
    calls = []
    new = budget.Ratio.__new__

    def counted(cls, value):
        calls.append(value)
        return new(cls, value)

    monkeypatch.setattr(budget.Ratio, "__new__", counted)
    assert budget.check_ratio(r) is r and not calls  # checked once: a Ratio is returned as is
    assert budget.check_ratio(0.5) == 0.5 and calls == [0.5]


def test_check_allocator_names_the_method_value_and_choices():
    assert budget.check_allocator("m", "fca") == "fca"
    assert budget.check_allocator("m", "holitom", extra=("holitom",)) == "holitom"
    with pytest.raises(ValueError, match=r"m: unknown budget allocator 'fcaa'.*Did you mean 'fca'"):
        budget.check_allocator("m", "fcaa")


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
