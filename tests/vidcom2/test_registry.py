"""The registry builds a method and the method validates itself once; a refusal is an ``HparamError`` that names
the hyper-parameter at fault (key, value), with the method's own message (the fix)."""

from __future__ import annotations

import pytest

import vidcom2
from vidcom2.registry import HparamError, get_method, hparams_of

# (method, hparams, the key at fault, words of the message); every method is built with the defaults of the others
CASES = [
    ("vidcom2", {"budgett": "fca"}, "budgett", ["no hyper-parameter 'budgett'", "'fca'", "Did you mean 'budget'"]),
    ("vidcom2", {"budget": "fcx"}, "budget", ["'fcx'", "budget must be one of"]),
    ("vidcom2", {"fast": True, "token_score": "loud"}, "token_score", ["token_score", "'loud'", "one of"]),
    ("divprune", {"budget": "even"}, "budget", ["divprune", "'even'"]),
    ("visionzip", {"budget": "holitom", "order": "sorted"}, None, None),  # valid: HoliTom's budget table
    ("fastv", {"budget": "frame"}, "budget", ["fastv", "'frame'"]),
    ("pdrop", {"counting": "floor"}, "counting", ["'floor'", "'round' or 'truncate'"]),
]


@pytest.mark.parametrize("name, hparams, key, words", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_the_refusal_names_the_key_at_fault(name, hparams, key, words):
    if key is None:
        assert get_method(name, **hparams).info.name == name
        return
    with pytest.raises(HparamError) as err:
        get_method(name, **hparams)
    e = err.value
    assert (e.method, e.key, e.value) == (name, key, hparams[key])
    assert all(w in str(e) for w in words), str(e)
    assert isinstance(e, TypeError) and isinstance(e, ValueError)  # both earlier except-forms still catch it


def test_only_a_combination_refused_has_no_key():
    # score_weights weight the sum: each alone is fine, together they are refused
    with pytest.raises(HparamError, match="needs token_score='sum'") as err:
        get_method("vidcom2", token_score="s_frame", score_weights=[1.0, 0.5])
    assert err.value.key is None


def test_hparams_of_an_instance_are_all_its_fields():
    m = get_method("vidcom2", budget="uniform")
    assert hparams_of(m)["budget"] == "uniform" and set(hparams_of(m)) == set(vidcom2.registry.hparam_names("vidcom2"))
    assert get_method("vidcom2", **hparams_of(m)) == m
