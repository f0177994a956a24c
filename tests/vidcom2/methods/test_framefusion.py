"""framefusion: the cost formula, one merge step and ``select`` on tensors against the independent reference
(tests/vidcom2/methods/ref_framefusion.py, written from thu-nics/FrameFusion fbec1d2), in float32 and bfloat16."""

import pytest
import torch

import vidcom2
from tests.vidcom2.methods import ref_framefusion as ref
from vidcom2.methods import framefusion as ff


@pytest.mark.parametrize(
    "ratios,cost,layers",
    [([], 0.3, 28), ([0.2], 0.3, 28), ([0.5, 0.3, 0.05], 0.3, 28), ([], 1.0, 28), ([0.0], 0.25, 4), ([0.9], 0.9, 28)],
)
def test_pruning_ratio_matches_the_official_formula(ratios, cost, layers):
    want = ref.pruning_ratio(ratios, cost, layers)
    assert ff.pruning_ratio(ratios, cost, layers) == pytest.approx(want, abs=1e-12)


def test_pruning_ratio_by_hand():
    # no merge yet: the remaining 28 layers keep 0.3 each -> prune 0.7; after a 20% merge at layer 0:
    # remain = 8.4 - 0.8 = 7.6 over 27 layers of 0.8 -> 1 - 7.6 / 21.6
    assert ff.pruning_ratio([], 0.3, 28) == pytest.approx(0.7)
    assert ff.pruning_ratio([0.2], 0.3, 28) == pytest.approx(1 - 7.6 / 21.6)
    assert ff.pruning_ratio([0.1], 1.0, 28) == 0.0  # more than the budget left: no pruning
    assert ff.pruning_ratio([0.0, 0.0], 0.05, 28) == 1.0  # upstream raises "The cost is too small": prune to the minimum


def _video(f, n, d, static, seed, dtype=torch.float32):
    """``[F, N, D]``: positions in ``static`` repeat the previous frame plus small noise (cosine ~0.99), the others
    are fresh noise (cosine ~0): every similarity sits far from the thresholds used below."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(f, n, d, generator=g, dtype=torch.float64)
    for t in range(1, f):
        x[t, static] = x[t - 1, static] + 0.05 * torch.randn(len(static), d, generator=g, dtype=torch.float64)
    return x.to(dtype)


def _sequence(x, text_before=3, text_after=2):
    """The video flattened between text rows (patch -1), as the LLM sees it: ``(hidden [n, D], patch [n])``."""
    f, n, d = x.shape
    g = torch.Generator().manual_seed(99)
    h = torch.cat([torch.randn(text_before, d, generator=g).to(x.dtype), x.reshape(f * n, d),
                   torch.randn(text_after, d, generator=g).to(x.dtype)])  # fmt: skip
    patch = torch.cat([torch.full((text_before,), -1), torch.arange(n).repeat(f), torch.full((text_after,), -1)])
    return h, patch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "static,cost,bound",
    [([0, 2, 3, 5, 7, 8], 0.3, 0.6), ([1], 0.3, 0.6), ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 0.3, 0.6), ([4, 6], 0.5, 0.6),
     ([0, 2, 3, 5, 7, 8], 0.9, 0.6), ([], 0.3, 0.6)],  # fmt: skip
)
def test_merge_step_matches_the_reference(dtype, static, cost, bound):
    x = _video(5, 10, 64, static, seed=len(static), dtype=dtype)
    h, patch = _sequence(x)
    recipe = ff.FrameFusionMerge(cost, bound, 0.1)
    state = recipe.start(28)
    step = recipe.step(state, 0, h, patch)
    ratios = []
    want = ref.step(h, patch.tolist(), ratios, cost, 28, bound, 0.1)
    assert set((~step.keep).nonzero().squeeze(1).tolist()) == want["removed"]
    if want["prune"] is not None:  # merging stopped: the prune of the next layer is pending (its row wanted)
        assert not step.done and step.want_row and state["prune"] == want["prune"]
    else:
        assert step.done == want["done"] and not step.want_row
    assert state["ratios"] == ratios
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    kept = step.keep
    assert step.hidden.dtype == dtype
    torch.testing.assert_close(step.hidden[kept].double(), want["hidden"][kept], atol=tol, rtol=tol)


def test_merge_step_branches():
    # all positions static: 80% would merge, above the 70% the budget needs -> only int(0.7 n) merge, no prune
    x = _video(5, 10, 64, list(range(10)), seed=1)
    h, patch = _sequence(x)
    recipe = ff.FrameFusionMerge(0.3)
    step = recipe.step(recipe.start(28), 0, h, patch)
    assert int((~step.keep).sum()) == int((1 - 8.4 / 28) * 50) == 35 and step.done and not step.want_row
    # nothing similar: ratio 0 < 10% -> done; layer 0 is charged in full, so the 27 layers left keep
    # (8.4 - 1) / 27 each: round(50 * 7.4 / 27) = round(13.70)
    x = _video(5, 10, 64, [], seed=2)
    h, patch = _sequence(x)
    state = recipe.start(28)
    step = recipe.step(state, 0, h, patch)
    assert bool(step.keep.all()) and not step.done and step.want_row and state["prune"] == 14
    # the next step is that prune: the 14 highest of the row over the visual tokens, text untouched
    row = torch.rand(h.shape[0], generator=torch.Generator().manual_seed(4))
    pruned = recipe.step(state, 1, h, patch, row)
    vis = (patch >= 0).nonzero().squeeze(1)
    want = set(vis[torch.argsort(row[vis], descending=True)[:14]].tolist()) | set((patch < 0).nonzero().squeeze(1).tolist())
    assert set(pruned.keep.nonzero().squeeze(1).tolist()) == want and pruned.done and state["prune"] is None
    # 20% similar: merged, recorded, merging goes on (no prune yet)
    x = _video(5, 10, 64, [0, 1, 2, 3, 4], seed=3)
    h, patch = _sequence(x)
    state = recipe.start(28)
    step = recipe.step(state, 0, h, patch)
    assert int((~step.keep).sum()) == 20 and not step.done and not step.want_row and state["ratios"] == [0.4]


def test_a_run_of_merges_is_one_plain_average():
    # one position, frames 0..3: frames 1 and 2 copy frame 0's direction, frame 3 is orthogonal
    h = torch.tensor([[1.0, 0.0], [2.0, 0.1], [3.0, -0.1], [0.0, 1.0]])
    patch = torch.zeros(4, dtype=torch.long)
    order, sim = ff.previous_frame_similarity(h, patch)
    assert order.tolist() == [0, 1, 2, 3] and sim[0] == ff.IGNORE
    keep, out = ff.merge_runs(h, order, torch.tensor([1, 2]))
    assert keep.tolist() == [True, False, False, True]
    torch.testing.assert_close(out[0], torch.tensor([2.0, 0.0]))
    assert torch.equal(out[3], h[3])


def test_select_on_tensors_merges_then_prunes():
    x = _video(4, 9, 64, [0, 1, 2], seed=5)
    s = torch.rand(4, 9, generator=torch.Generator().manual_seed(0))
    sel = vidcom2.apply("framefusion", x, 0.3, scores=s)
    assert int(sel.keep.sum()) == ref.tensor_keep_count(x, 0.3)
    assert sel.stats["merged"] == 9 and sel.stats["merge_ratios"] == [0.25]
    # the merged representatives (frame 0 of the static positions) hold the mean over the four frames
    torch.testing.assert_close(sel.features[0, :3], x[:, :3].mean(dim=0), atol=1e-5, rtol=1e-5)
    assert not bool(sel.keep[1:, :3].any())


def test_floor_and_bad_hparams():
    x = _video(2, 4, 8, [], seed=0)
    s = torch.rand(2, 4)
    with pytest.raises(ValueError, match="floor 1/num_layers"):
        vidcom2.select("framefusion", x, 0.03, scores=s)
    with pytest.raises(ValueError, match="similarity_lower_bound"):
        vidcom2.select("framefusion", x, 0.3, scores=s, similarity_lower_bound=float("nan"))
    with pytest.raises(ValueError, match="ratio_lower_bound"):
        vidcom2.select("framefusion", x, 0.3, scores=s, ratio_lower_bound=-0.1)
    method = vidcom2.get_method("framefusion")
    plan = method.plan(0.3, 4, 100, mrope=False)
    assert plan.stages == () and plan.merge is not None and plan.position_mode == "original"
    assert plan.hparams["cost"] == 0.3 and plan.hparams["num_layers"] == 4
    with pytest.raises(ValueError, match="floor"):
        method.plan(0.2, 4, 100, mrope=False)


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), from the reference, not the code

def expected_counts(x, r):
    """On tensors: merge 0 on the features, then the prune of the cost formula over 28 layers (a total)."""
    return ref.tensor_keep_count(x, r)
