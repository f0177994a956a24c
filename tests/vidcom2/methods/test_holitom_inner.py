"""HoliTom's inner merge (the in-LLM part of ``holitom``) on tensors against the independent reference written from
the official loop (tests/vidcom2/methods/ref_holitom_inner.py), in float32 and bfloat16; its layer and plan."""

import pytest
import torch

import vidcom2
from tests.vidcom2.methods import ref_holitom_inner as ref
from vidcom2.methods import holitom


def _states(n, d, seed, dtype):
    """Hidden states ``[n, D]`` with a text prefix and suffix around ``n - 8`` visual rows, and a tie-free row."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(dtype)
    patch = torch.full((n,), -1, dtype=torch.long)
    patch[5 : n - 3] = 0
    row = torch.randperm(n, generator=g).float() / n
    return h, patch, row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,ratio", [(40, 0.5), (57, 0.5), (30, 0.25), (21, 0.9)])
def test_inner_merge_equals_the_official_loop(dtype, n, ratio):
    h, patch, row = _states(n, 16, seed=n, dtype=dtype)
    recipe = holitom.InnerMerge(3, ratio)
    step = recipe.step({}, 3, h, patch, row)
    visual = (patch >= 0).nonzero().squeeze(1).tolist()
    kept, want = ref.inner_merge(h, visual, row, ratio)
    assert set(step.keep.nonzero().squeeze(1).tolist()) == kept | set((patch < 0).nonzero().squeeze(1).tolist())
    assert step.done and step.hidden.dtype == dtype
    assert torch.equal(step.hidden[step.keep], want[step.keep])  # the same ops in the same order: bit-identical


def test_inner_merge_asks_for_the_row_of_the_layer_before_and_waits():
    h, patch, row = _states(20, 8, seed=1, dtype=torch.float32)
    recipe = holitom.InnerMerge(5)
    assert recipe.step({}, 3, h, patch) is None
    ask = recipe.step({}, 4, h, patch)
    assert ask.want_row and not ask.done and bool(ask.keep.all()) and ask.hidden is h
    with pytest.raises(RuntimeError, match="attention row of layer 4"):
        recipe.step({}, 5, h, patch)


def test_repeated_pairwise_averaging_weights_later_tokens_more():
    # kept token 0 (highest attention); tokens 1 and 2 both fold into it: ((h0 + h1) / 2 + h2) / 2
    h = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]])
    out = holitom.fold_into_most_similar(h, torch.tensor([0, 3]), torch.tensor([1, 2]))
    torch.testing.assert_close(out[0], ((h[0] + h[1]) / 2 + h[2]) / 2)
    assert torch.equal(out[3], h[3])


@pytest.mark.parametrize("layers,want", [(28, 18), (32, 21), (36, 23), (4, 3), (2, 1)])
def test_inner_layer_scales_18_of_28(layers, want):
    assert holitom.inner_layer(layers) == want
    with pytest.raises(ValueError, match="inner_layer"):
        holitom.inner_layer(layers, layers)


def test_plan_and_options():
    method = vidcom2.get_method("holitom")
    assert method.info.acts == ("vision_encoder", "in_llm")
    plan = method.plan(0.15, 28, 500, mrope=False, selections=None)
    assert plan.stages == () and plan.merge == holitom.InnerMerge(18, 0.5) and plan.position_mode == "original"
    assert plan.hparams == {"inner_layer": 18, "inner_ratio": 0.5}
    off = vidcom2.get_method("holitom", inner_ratio=0.0).plan(0.15, 28, 500, mrope=False, selections=None)
    assert off.merge is None and off.stages == ()
    with pytest.raises(ValueError, match="inner_ratio"):
        vidcom2.get_method("holitom", inner_ratio=1.0).plan(0.15, 28, 500, mrope=False)
