"""Per-method behaviour against independent references and the published arithmetic of the specs."""

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref
from vidcom2.methods import fastv, pdrop


def _x(f, n, d=6, seed=0):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# uniform -------------------------------------------------------------------------------------------------------
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


# dycoke --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("f", [2, 3, 5, 6, 8, 9, 12])
def test_dycoke_ttm_official_k_matches_reference(f):
    n = 20
    x = _x(f, n, seed=f)
    sel = vidcom2.apply("dycoke_ttm", x, 0.5, merge_ratio=0.7)
    want, order = ref.dycoke_ttm(x, lambda _: int((1 - 0.7) * n))
    assert torch.equal(sel.keep, want)
    assert sel.flat_indices().tolist() == order  # pruned frames in ascending-similarity order
    assert sel.stats["budget_mode"] == "official_k"


def test_dycoke_ttm_retention_table_of_the_spec():
    # baselines.md 1.4: F=32, n=196, K=0.7 -> R_in = 0.494; F=16, K=0.5 -> 0.656; F=64 floor 0.2656
    for f, k, want in [(32, 0.7, 0.494), (16, 0.5, 0.656), (64, 0.85, 0.374)]:
        sel = vidcom2.apply("dycoke_ttm", torch.randn(f, 196, 4), 0.5, merge_ratio=k)
        assert sel.stats["retention_realised"] == pytest.approx(want, abs=5e-4)
    with pytest.raises(ValueError, match=r"floor 17/64 = 0.2656"):
        vidcom2.select("dycoke_ttm", torch.randn(64, 196, 4), 0.25)


def test_dycoke_ttm_matched_budget_is_exact_and_spread_evenly():
    f, n = 32, 196
    x = _x(f, n, seed=1)
    sel = vidcom2.apply("dycoke_ttm", x, 0.3)
    assert int(sel.keep.sum()) == ref.budget(0.3, f * n)
    pruned = sorted({i + 1 for i in range(0, f - 1, 2)} | {i + 2 for i in range(0, f - 4, 4)})
    counts = sel.keep.sum(1)[pruned]
    assert int(counts.max() - counts.min()) <= 1
    want, order = ref.dycoke_ttm(x, lambda rank: int(counts[rank]))
    assert torch.equal(sel.keep, want) and sel.flat_indices().tolist() == order


def test_dycoke_vc2_is_the_port():
    f, n, r = 7, 30, 0.3  # odd F: the port drops the unpaired last frame
    x = _x(f, n, seed=4)
    keep = vidcom2.select("dycoke_vc2", x, r)
    k = int((1.0 - (1.0 - r)) * n)
    want, _ = ref.dycoke_ttm(x[: f - 1], lambda _: k)
    assert torch.equal(keep[: f - 1], want)
    assert not keep[f - 1].any()
    assert vidcom2.apply("dycoke_vc2", x, r).order is None  # sorted indices


# divprune ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("f,n,r,seed", [(2, 15, 0.3, 0), (3, 12, 0.5, 1), (1, 30, 0.1, 2), (4, 8, 0.75, 3)])
def test_divprune_matches_the_literal_official_loop(f, n, r, seed):
    x = _x(f, n, seed=seed)
    keep = vidcom2.select("divprune", x, r)
    assert keep.reshape(-1).nonzero().squeeze(1).tolist() == ref.divprune(x, ref.budget(r, f * n))


def test_divprune_frame_scope():
    x = _x(3, 12, seed=5)
    keep = vidcom2.select("divprune", x, 0.25, scope="frame")
    for t in range(3):
        assert keep[t].nonzero().squeeze(1).tolist() == ref.divprune(x[t : t + 1], ref.budget(0.25, 12))


# fastv / pdrop arithmetic (baselines.md 1.1, 1.2) -------------------------------------------------------------
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


# visionzip -----------------------------------------------------------------------------------------------------
def _visionzip_reference(x, scores, keys, k):
    """baselines.md 7.1/7.3 written out with loops, float64: one frame."""
    n = x.shape[0]
    dominant = int(k * 54 / 64)
    contextual = k - dominant
    dom = sorted(range(n), key=lambda i: (-float(scores[i]), i))[:dominant]
    rest = [i for i in range(n) if i not in dom]
    out = {i: x[i].double() for i in dom}
    if contextual:
        step = len(rest) // contextual
        targets = [rest[j * step] for j in range(contextual)]
        others = [i for i in rest if i not in targets]
        unit = {i: keys[i].double() / keys[i].double().norm() for i in rest}
        groups = {t: [] for t in targets}
        for o in others:
            best = max(targets, key=lambda t: (float(unit[o] @ unit[t]), -targets.index(t)))
            groups[best].append(o)
        for t in targets:
            members = groups[t]
            out[t] = x[t].double() + (torch.stack([x[m].double() for m in members]).mean(0) if members else 0)
    return out


def test_visionzip_matches_reference():
    f, n, d = 3, 49, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(f, n, d, generator=g, dtype=torch.float64)
    scores = torch.rand(f, n, generator=g, dtype=torch.float64)
    keys = torch.randn(f, n, 4, generator=g, dtype=torch.float64)
    for r in (0.25, 0.5, 0.1):
        sel = vidcom2.apply("visionzip", x, r, scores=scores, keys=keys)
        k = ref.budget(r, n)
        for t in range(f):
            want = _visionzip_reference(x[t], scores[t], keys[t], k)
            assert sel.keep[t].nonzero().squeeze(1).tolist() == sorted(want)
            for i, v in want.items():
                assert torch.allclose(sel.features[t, i], v, atol=1e-12)
        # unkept slots are untouched copies; the input is not modified
        assert torch.equal(sel.features[~sel.keep], x[~sel.keep])
