"""pdrop: the schedule table of baselines.md 1.2 and the official schedule's counts.

Moved from tests/vidcom2/methods/test_baselines.py (one test file per method).
"""

import pytest

import vidcom2
from tests.vidcom2 import reference as ref
from vidcom2.methods import pdrop


def test_pdrop_schedule_table():
    # official [8,16,24] of 32 layers, lambda = 0.5 -> R_avg = 0.469
    assert pdrop.layer_average(0.5, 32, (8, 16, 24)) == pytest.approx(0.469, abs=5e-4)
    assert pdrop.stage_layers(28) == (7, 14, 21) and pdrop.stage_layers(36) == (9, 18, 27)
    for r, lam, avg in [(0.35, 0.705, 0.638), (0.25, 0.630, 0.569), (0.15, 0.531, 0.491)]:
        sched = pdrop.schedule(r, 28)
        assert sched[0][1] == pytest.approx(lam, abs=5e-4)
        assert sched[-1][1] == r
        assert pdrop.layer_average(sched[0][1], 28, (7, 14, 21)) == pytest.approx(avg, abs=5e-4)
    sched = pdrop.schedule(0.4, 28, budget_mode="layer_avg")
    assert pdrop.layer_average(sched[0][1], 28, (7, 14, 21)) == pytest.approx(0.4, abs=1e-9)
    with pytest.raises(ValueError, match="floor l_1/L"):
        pdrop.schedule(0.25, 32, budget_mode="layer_avg")




def test_pdrop_official_schedule_is_reachable_and_its_counts_documented():
    sched = pdrop.schedule(0.125, 32, pdrop.OFFICIAL_LAYERS)
    assert sched == [(8, 0.5), (16, 0.25), (24, 0.125)]  # lambda = 0.5 exactly, the scripts' ratio list
    assert pdrop.schedule(0.125, 32) == sched  # quarter depth at L = 32 is the official layer list
    for n in (784, 6272):  # LLaVA-OV 196 * F, F even: int and round agree
        assert pdrop.stage_counts(sched, n, "truncate") == [int(n * x) for x in (0.5, 0.25, 0.125)]
        assert pdrop.stage_counts(sched, n, "round") == pdrop.stage_counts(sched, n, "truncate")
    # the documented difference: a fractional part >= 0.5 (here 7 * 0.25 = 1.75, 7 * 0.125 = 0.875)
    assert pdrop.stage_counts(sched, 7, "truncate") == [3, 1, 1]  # int(0.875) = 0, floored at one token
    assert pdrop.stage_counts(sched, 7, "round") == [4, 2, 1]
    assert pdrop.stage_counts(sched, 13, "truncate") == [6, 3, 1]  # int(6.5), int(3.25), int(1.625)
    from vidcom2.stages.in_llm import plan_for

    plan = plan_for(vidcom2.get_method("pdrop", layers=(8, 16, 24)), 0.125, 32, 13, mrope=False)
    assert [s.keep for s in plan.stages] == [6, 3, 2]  # the project's rounding: half-even 6.5 -> 6, 3.25, 1.625
    official = vidcom2.get_method("pdrop", layers=(8, 16, 24), counting="truncate")
    assert [s.keep for s in plan_for(official, 0.125, 32, 13, mrope=False).stages] == [6, 3, 1]
    with pytest.raises(ValueError, match="counting"):
        vidcom2.get_method("pdrop", counting="floor")
    with pytest.raises(ValueError, match="counting"):
        pdrop.stage_counts(sched, 7, "floor")


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """On tensors: the final stage's ``count(r, F*N)`` over the video (a total)."""
    f, n = x.shape[:2]
    return ref.budget(r, f * n)
