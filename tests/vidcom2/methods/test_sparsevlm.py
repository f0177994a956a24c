"""SparseVLM math on tensors: raters, the recycling rule, DPC-kNN clustering against a slow loop reference, the
schedule against the official counts of baselines.md 1.3, budget modes. Spec: baselines.md 1.3 and 6."""

from __future__ import annotations

import math

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref
from vidcom2.budget import count
from vidcom2.methods import sparsevlm as sv


def slow_cluster_and_merge(x: torch.Tensor, centres: int, noise: torch.Tensor) -> torch.Tensor:
    """Loop reference of DPC-kNN + cluster means in float64 (SparseVLM utils.py::cluster_and_merge, read)."""
    x = x.double()
    n, d = x.shape
    dist = [
        [math.sqrt(sum((x[i, c] - x[j, c]).item() ** 2 for c in range(d))) / math.sqrt(d) for j in range(n)]
        for i in range(n)
    ]
    dmax = max(max(row) for row in dist)
    density = []
    for i in range(n):
        near = sorted(dist[i])[:centres]
        density.append(math.exp(-sum(v * v for v in near) / centres) + noise[i].item() * 1e-6)
    score = []
    for i in range(n):
        denser = [dist[i][j] for j in range(n) if density[j] > density[i]]
        score.append((min(denser) if denser else dmax) * density[i])
    chosen = sorted(range(n), key=lambda i: -score[i])[:centres]
    assign = []
    for j in range(n):
        if j in chosen:
            assign.append(chosen.index(j))
        else:
            ds = [dist[c][j] for c in chosen]
            assign.append(ds.index(min(ds)))
    out = torch.zeros(centres, d, dtype=torch.float64)
    for c in range(centres):
        members = [j for j in range(n) if assign[j] == c]
        out[c] = sum(x[j] for j in members) / (len(members) + 1e-6)
    return out


@pytest.mark.parametrize("n, centres, seed", [(7, 1, 0), (12, 2, 1), (25, 3, 2), (30, 4, 3)])
def test_cluster_and_merge_equals_loop_reference(n, centres, seed):
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))
    got = sv.cluster_and_merge(x, centres, torch.Generator().manual_seed(seed))
    noise = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    want = slow_cluster_and_merge(x, centres, noise)
    assert got.shape == (centres, 5) and got.dtype == x.dtype
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_cluster_noise_breaks_density_ties_by_the_seed():
    # duplicated tokens tie in density: which one is the centre is decided by the seeded noise only
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    x = torch.cat([base, base])
    a = sv.cluster_and_merge(x, 2, torch.Generator().manual_seed(5))
    b = sv.cluster_and_merge(x, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    for seed in range(3):
        noise = torch.rand(8, generator=torch.Generator().manual_seed(seed))
        got = sv.cluster_and_merge(x, 2, torch.Generator().manual_seed(seed))
        assert torch.allclose(got.double(), slow_cluster_and_merge(x, 2, noise), atol=1e-5)


def test_recycling_rule_and_sources():
    # official: int(0.3 p) + 1 sources, int(that / 10) + 1 centres (modelling_sparse_llama.py)
    for p, want in [(0, 0), (1, 1), (9, 1), (29, 1), (30, 2), (33, 2), (94, 3), (109, 4), (276, 9)]:
        assert sv.recycled_count(p) == want, p
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2, 0.05, 0.7])
    assert sv.recycle_sources(scores).tolist() == [1, 3, 6]  # int(2.1)+1 = 3 highest, ties: lower index first


def test_raters_are_text_tokens_above_the_mean_relevance():
    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(6, 4, generator=g), torch.randn(5, 4, generator=g)
    m = [[math.exp((v[i] @ t[j]).item()) for j in range(5)] for i in range(6)]
    rel = [sum(m[i][j] / sum(m[i]) for i in range(6)) / 6 for j in range(5)]
    mean = sum(rel) / 5
    assert sv.text_raters(v, t).tolist() == [r > mean for r in rel]


@pytest.mark.parametrize(
    "keeps, avg, final",
    [
        ([300, 200, 110], 206.5, 113),
        ([303, 110, 36], 145.4, 39),
        ([238, 48, 26], 114.1, 27),
        ([66, 30, 17], 82.3, 18),
    ],
)
def test_official_schedules_give_the_spec_layer_counts(keeps, avg, final):
    # baselines.md 1.3 table (LLaVA-1.5: N = 576, L = 32, pruning_loc 2/6/15), computed there independently
    counts = sv.layer_counts(0.0, 576, 32, (2, 6, 15), True, keeps)
    assert abs(sum(counts) / 32 - avg) <= 0.05 and counts[-1] == final
    assert counts[:3] == [576] * 3  # layer 2 itself runs on the unpruned set
    no_recycle = sv.layer_counts(0.0, 576, 32, (2, 6, 15), False, keeps)
    assert no_recycle == [576] * 3 + [keeps[0]] * 4 + [keeps[1]] * 9 + [keeps[2]] * 16


@pytest.mark.parametrize("n", [40, 576, 1568])
@pytest.mark.parametrize("r", [0.1, 0.25, 0.5, 0.9])
def test_final_mode_deepest_layers_hold_the_budget(n, r):
    counts = sv.stage_counts(r, n, 3, True)
    k, c = counts[-1]
    assert k + c == count(r, n) or (k == 1 and k + c > count(r, n))
    assert counts[0][0] == count(min(1.0, r * 300 / 110), n) or counts[0] == (n, 0)
    assert sv.stage_counts(r, n, 3, False)[-1][0] == count(r, n)


@pytest.mark.parametrize("r", [0.3, 0.45, 0.7])
def test_layer_avg_mode_solves_the_layer_average(r):
    n, layers = 784, (2, 6, 15)
    a = sv.solve_fraction(r, n, 28, layers, "layer_avg", True)
    avg = sum(sv.layer_counts(a, n, 28, layers, True)) / (28 * n)
    assert avg <= r and r - avg < 0.005
    with pytest.raises(ValueError, match="floor"):
        sv.solve_fraction(0.1, n, 28, layers, "layer_avg", True)


def test_select_on_tensors_and_bad_hparams():
    g = torch.Generator().manual_seed(0)
    x, s = torch.randn(4, 10, 8, generator=g), torch.rand(4, 10, generator=g)
    keep = vidcom2.select("sparsevlm", x, 0.25, scores=s)
    assert int(keep.sum()) == count(0.25, 40)
    assert bool(s[keep].min() >= s[~keep].max())
    deep = vidcom2.apply("sparsevlm", x, 0.5, scores=s, budget_mode="layer_avg", num_layers=28)
    assert deep.stats["layer_counts"][0] == 40 and deep.stats["fraction"] < 0.5
    with pytest.raises(ValueError, match="num_layers"):
        vidcom2.select("sparsevlm", x, 0.5, scores=s, budget_mode="layer_avg")
    with pytest.raises(ValueError, match="budget_mode"):
        vidcom2.select("sparsevlm", x, 0.5, scores=s, budget_mode="avg")
    with pytest.raises(ValueError, match="strictly increasing"):
        sv.check_layers((2, 6, 27), 28)


def test_a_single_text_token_rates_alone():
    v, t = torch.randn(6, 4), torch.randn(1, 4)
    assert sv.text_raters(v, t).tolist() == [True]


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """On tensors: the final stage's ``count(r, F*N)`` over the video (a total)."""
    f, n = x.shape[:2]
    return ref.budget(r, f * n)
