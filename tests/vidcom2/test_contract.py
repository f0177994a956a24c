"""The contract every registered method honours, generated from vidcom2.list_methods().

Expected kept counts come from the rules written out here (the project's rounding rule recomputed independently
in tests/vidcom2/reference.py), not from the code under test.
"""

import math

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref

METHODS = vidcom2.list_methods()


def _aux(name, f, n, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    info = vidcom2.get_method(name).info
    kw = {}
    if "scores" in info.needs:
        kw["scores"] = torch.rand(f, n, generator=g)
    if "keys" in info.needs:
        kw["keys"] = torch.randn(f, n, 6, generator=g)
    return kw


def _feats(f, n, d=8, seed=0, dtype=torch.float32):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _pruned_frames(f):
    """DyCoke TTM pass structure (baselines.md 8.1)."""
    return {i + 1 for i in range(0, f - 1, 2)} | {i + 2 for i in range(0, f - 4, 4)}


def expected_counts(name, x, r):
    """Per-frame kept counts (list) or a total (int) under each method's budget rule, or None if the ratio is
    infeasible for the method (it must then raise)."""
    f, n = x.shape[:2]
    if name == "none":
        return [n] * f
    if name == "vidcom2":
        return ref.vidcom2_mask(x, r)[1]
    if name in ("random", "uniform", "visionzip", "vispruner"):
        return [ref.budget(r, n)] * f
    if name == "evs":  # vLLM's compute_retained_tokens_count with q = 1 - r: truncation, one whole frame at least
        return min(f * n, max(n, int(f * n * (1 - (1.0 - r)))))
    if name in ("divprune", "fastv", "pdrop", "sparsevlm"):
        return ref.budget(r, f * n)
    if name in ("dycoke_ttm", "dycoke"):
        whole = f - len(_pruned_frames(f))
        total = ref.budget(r, f * n)
        return total if total >= whole * n and (f > 1 or r == 1.0) else None
    if name == "dycoke_vc2":
        if f == 1:
            return [n] * f
        k = int((1.0 - (1.0 - r)) * n)
        pruned = _pruned_frames(f)
        return [0 if (f % 2 and t == f - 1) else (k if t in pruned else n) for t in range(f)]
    if name == "visionzip_vc2":  # the port's per-frame int() rule (baselines.md 7.2)
        return [max(1, int(n * r))] * f
    if name in ("holitom_vc2", "fastvid_vc2"):  # data-dependent (windows / segments): the ports' rules, recomputed
        from tests.vidcom2.methods import test_vc2_ports as vc2

        return vc2.holitom_count(x, r) if name == "holitom_vc2" else vc2.fastvid_counts(x, r)
    if name == "fastvid":  # segments are data-dependent: the official budget rule, recomputed in the reference
        from tests.vidcom2.methods import ref_fastvid

        return ref_fastvid.kept_count(x, None, r)
    if name == "holitom":  # static windows are data-dependent: the official rule, recomputed in the reference
        from tests.vidcom2.methods import ref_holitom

        return ref_holitom.kept_count(x, r)
    if name == "prunevid":  # segments and static positions are data-dependent: recomputed in the reference
        from tests.vidcom2.methods import ref_prunevid

        return ref_prunevid.kept_count(x, r)
    if name == "flashvid":  # segments and tree merges are data-dependent: recomputed in the reference
        from tests.vidcom2.methods import ref_flashvid

        return ref_flashvid.kept_count(x, _aux(name, f, n)["scores"], r)
    raise AssertionError(f"no budget rule written for new method {name!r}: add it to expected_counts")


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
                vidcom2.select(name, x, r, **_aux(name, f, n))
            continue
        keep = vidcom2.select(name, x, r, **_aux(name, f, n))
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


def test_random_depends_on_the_seed_only():
    x = _feats(4, 50)
    a, b = vidcom2.select("random", x, 0.3, seed=1), vidcom2.select("random", x, 0.3, seed=2)
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    c = vidcom2.select("random", x, 0.3, seed=1)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(c, vidcom2.select("random", x, 0.3, seed=1))


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
    assert set(vidcom2.list_methods("in_llm")) == {"fastv", "pdrop", "sparsevlm"}
