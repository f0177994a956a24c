"""The contract every registered method honours, generated from vidcom2.list_methods().

Expected kept counts come from the rules written out in each method's test file (``expected_counts``; the
project's rounding rule recomputed independently in tests/vidcom2/reference.py), not from the code under test.
"""

import importlib
import math

import pytest
import torch

import vidcom2

METHODS = vidcom2.list_methods()


def _aux(name, f, n, seed=0, x=None):
    """Random scores / keys; global features are the frames' mean feature when ``x`` is given (a method's budget
    rule may rely on that, FastVID's segments do), else random."""
    g = torch.Generator().manual_seed(seed + 1)
    info = vidcom2.get_method(name).info
    kw = {}
    if "scores" in info.needs:
        kw["scores"] = torch.rand(f, n, generator=g)
    if "keys" in info.needs:
        kw["keys"] = torch.randn(f, n, 6, generator=g)
    if "global_features" in info.needs:
        kw["global_features"] = x.mean(dim=1) if x is not None else torch.randn(f, 5, generator=g)
    return kw


def _feats(f, n, d=8, seed=0, dtype=torch.float32):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def expected_counts(name, x, r):
    """Per-frame kept counts (list) or a total (int) under the method's budget rule, or None if the ratio is
    infeasible for the method (it must then raise). Each rule lives in the method's own test file,
    ``tests/vidcom2/methods/test_<name>.py::expected_counts(x, r)``, written there from the spec (independent of the
    code under test), so adding a method adds its rule next to its tests."""
    try:
        module = importlib.import_module(f"tests.vidcom2.methods.test_{name}")
    except ModuleNotFoundError as err:
        raise AssertionError(f"method {name!r} has no tests/vidcom2/methods/test_{name}.py: add it with "
                             "expected_counts(x, r)") from err  # fmt: skip
    rule = getattr(module, "expected_counts", None)
    assert rule is not None, f"add expected_counts(x, r) (its budget rule) to tests/vidcom2/methods/test_{name}.py"
    return rule(x, r)


def test_every_method_has_a_budget_rule():
    x = _feats(4, 10)
    for name in METHODS:
        expected_counts(name, x, 0.5)


SHAPES = [(1, 1), (1, 7), (3, 10), (4, 25), (5, 9), (8, 16)]
RATIOS = [0.1, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("f,n", SHAPES)
def test_kept_count_follows_the_budget_rule(name, f, n):
    x = _feats(f, n, seed=f * 31 + n)
    for r in RATIOS:
        want = expected_counts(name, x, r)
        if want is None:
            with pytest.raises(ValueError, match="floor"):
                vidcom2.select(name, x, r, **_aux(name, f, n, x=x))
            continue
        keep = vidcom2.select(name, x, r, **_aux(name, f, n, x=x))
        assert keep.shape == (f, n) and keep.dtype == torch.bool
        if isinstance(want, int):
            assert int(keep.sum()) == want, (r, keep.sum(1).tolist())
        else:
            assert keep.sum(dim=1).tolist() == want, r


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("f", [1, 2, 4])
def test_full_ratio_keeps_everything(name, f):
    x = _feats(f, 12, seed=f)
    assert bool(vidcom2.select(name, x, 1.0, **_aux(name, f, 12)).all())


@pytest.mark.parametrize("name", METHODS)
def test_deterministic_for_a_seed_and_inputs_untouched(name):
    x = _feats(4, 30, seed=3)
    aux = _aux(name, 4, 30)
    before = x.clone(), {k: v.clone() for k, v in aux.items()}
    a = vidcom2.apply(name, x, 0.5, seed=7, **aux)
    b = vidcom2.apply(name, x, 0.5, seed=7, **aux)
    assert torch.equal(a.keep, b.keep)
    assert torch.equal(a.flat_indices(), b.flat_indices())
    assert torch.equal(x, before[0])
    for k, v in aux.items():
        assert torch.equal(v, before[1][k])


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dtype_and_device_preserved(name, dtype):
    x = _feats(4, 16, dtype=dtype)
    sel = vidcom2.apply(name, x, 0.5, **_aux(name, 4, 16))
    assert sel.keep.device == x.device and sel.keep.dtype == torch.bool
    out = sel.gather(x)
    assert out.dtype == dtype and out.shape == (int(sel.keep.sum()), 8)
    idx = sel.flat_indices()
    assert idx.numel() == int(sel.keep.sum()) and len(set(idx.tolist())) == idx.numel()
    assert bool(sel.keep.view(-1)[idx].all())


@pytest.mark.parametrize("name", METHODS)
def test_bad_inputs_raise_clear_errors(name):
    x = _feats(2, 8)
    aux = _aux(name, 2, 8)
    for bad in (0.0, -0.1, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"retention_ratio must be in \(0, 1\]"):
            vidcom2.select(name, x, bad, **aux)
    with pytest.raises(TypeError, match="retention_ratio"):
        vidcom2.select(name, x, "0.5", **aux)
    with pytest.raises(ValueError, match=r"\[F, N, D\]"):
        vidcom2.select(name, x.reshape(16, 8), 0.5, **aux)
    with pytest.raises(ValueError, match="empty"):
        vidcom2.select(name, x[:, :0], 0.5, **aux)
    for poison in (math.nan, math.inf):
        y = x.clone()
        y[1, 3, 2] = poison
        with pytest.raises(ValueError, match="NaN or Inf"):
            vidcom2.select(name, y, 0.5, **aux)
    with pytest.raises(TypeError, match="floating point"):
        vidcom2.select(name, x.long(), 0.5, **aux)


@pytest.mark.parametrize("name", [m for m in METHODS if vidcom2.get_method(m).info.needs])
def test_methods_needing_model_signals_say_so(name):
    x = _feats(2, 8)
    with pytest.raises(ValueError, match="needs `scores`|needs `keys`"):
        vidcom2.select(name, x, 0.5)
    with pytest.raises(ValueError, match="shape"):
        vidcom2.select(name, x, 0.5, **{k: v[:1] for k, v in _aux(name, 2, 8).items()})


def test_unknown_method_and_hparam_suggest_names():
    x = _feats(2, 8)
    with pytest.raises(KeyError, match="Did you mean 'vidcom2'"):
        vidcom2.select("vidcom", x, 0.5)
    with pytest.raises(TypeError, match="Did you mean 'budget'"):
        vidcom2.select("vidcom2", x, 0.5, budgte="fca")
    with pytest.raises(ValueError, match="unknown budget allocator 'fcaa'.*Did you mean 'fca'"):
        vidcom2.select("random", x, 0.5, budget="fcaa")


def test_every_method_declares_stage_and_provenance():
    for name in METHODS:
        info = vidcom2.get_method(name).info
        assert info.name == name
        assert info.stage in ("pre_llm", "in_llm", "vision_encoder")
        assert info.needs_attention == ("scores" in info.needs)
        assert info.paper and info.code
    # methods acting inside the LLM: in_llm ones and pre-LLM ones with an in-LLM part (MethodInfo.in_llm)
    assert set(vidcom2.list_methods("in_llm")) == {"fastv", "framefusion", "pdrop", "sparsevlm", "flashvid", "holitom",
                                                   "prunevid"}  # fmt: skip
