"""FrameFusion inside the LLM on the tiny random models of every architecture: the merge engine
(vidcom2.stages._merger) in prune mode against the mask-mode reference, and layer by layer against the independent
reference of the official merge step (tests/vidcom2/methods/ref_framefusion.py) on the hidden states each layer
really received (before the engine's hook); KV lengths, per-layer counts, records and clean restoration."""

from __future__ import annotations

import functools
import importlib

import pytest
import torch

from tests.vidcom2._helpers import assert_restored, assert_same_generation, generate_compressed, model_batches
from tests.vidcom2.methods import ref_framefusion as ref
from vidcom2 import get_method
from vidcom2.adapters import get_adapter
from vidcom2.budget import keep_highest
from vidcom2.stages import in_llm
from vidcom2.testing import tiny

compress_module = importlib.import_module("vidcom2.compress")  # the module (vidcom2.compress is the function)

NEW_TOKENS = 4
LAYERS = 4
# raw generate() on the prompt (LLaVA-Video needs compress's prompt rewrite: tested through compress below)
ARCHS = tuple(a for a in tiny.ARCHS if a != "llava_video")  # the reference walk
EQUIV_ARCHS = (*ARCHS, "qwen3_vl_moe")
# 1.5: nothing can merge (a prune after layer 0); "mid": 20-40% of layer 0's similarities are above it (a merge below
# the budget, merging goes on); 0.6 (the default): on these videos more than the budget is similar
BOUNDS = (1.5, "mid", 0.6)


@pytest.fixture(scope="module")
def models():
    return model_batches(seed=2, question="What moves?", text_layers=LAYERS)


def _run(model, batch, method, ratio, mode="prune", capture=False):
    adapter = get_adapter(model)
    seen = {"in": {}, "raw": {}}
    with in_llm.attach(adapter, model, method, ratio, batch, mode=mode) as state:
        handles = _capture(adapter, model, seen) if capture else []
        try:
            out = model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True)  # fmt: skip
        finally:
            for h in handles:
                h.remove()
    return out, state, seen


def _capture(adapter, model, seen):
    """Two pre-hooks per layer (prefill only): one ahead of the engine's (``prepend``: the states the layer was
    handed, after Qwen3-VL's DeepStack additions) and one after it (what the engine let into the layer)."""
    handles = []
    for i, layer in enumerate(adapter.decoder_layers(model)):
        def hook(module, args, kwargs, i=i, key="in"):
            h = args[0] if args else kwargs["hidden_states"]
            if h.shape[1] > 1:
                seen[key].setdefault(i, h[0].detach().clone())

        handles.append(layer.register_forward_pre_hook(functools.partial(hook, key="raw"), with_kwargs=True, prepend=True))
        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def _patch(model, batch):
    """In-frame index of every prompt column (-1: not a candidate), from the adapter's video slots."""
    adapter = get_adapter(model)
    visual = in_llm.candidates(adapter, model, batch)
    cols = adapter.video_slots(model, batch)[0].columns
    patch = torch.full((visual.numel(),), -1, dtype=torch.long)
    patch[cols.reshape(-1)] = torch.arange(cols.shape[1]).repeat(cols.shape[0])
    patch[~visual] = -1
    return patch.tolist(), visual


@pytest.mark.parametrize("arch", EQUIV_ARCHS)
@pytest.mark.parametrize("bound", BOUNDS)
def test_prune_equals_mask_mode(models, arch, bound):
    model, batch = models(arch)
    bound = _mid_bound(models, arch) if bound == "mid" else bound
    method = get_method("framefusion", similarity_lower_bound=bound)
    pruned, state, _ = _run(model, batch, method, 0.5)
    masked, _, _ = _run(model, batch, method, 0.5, mode="mask")
    assert_same_generation(pruned, masked)
    prompt = batch["input_ids"].shape[1]
    lengths = [layer.keys.shape[-2] for layer in pruned.past_key_values.layers]
    assert lengths == [state.layer_keep[i].numel() + NEW_TOKENS - 1 for i in range(LAYERS)]
    assert [layer.keys.shape[-2] for layer in masked.past_key_values.layers] == [prompt + NEW_TOKENS - 1] * LAYERS
    assert_restored(model)


_WALKS: dict = {}


def _walk(models, arch, bound, ratio=0.5) -> list[str]:
    """Run FrameFusion with capture hooks and replay it layer by layer with the reference on the hidden states each
    layer received; asserts every layer's sequence, merged values and counts; returns the events (cached)."""
    if (arch, bound, ratio) in _WALKS:
        return _WALKS[arch, bound, ratio]
    if bound == "mid":
        return _walk(models, arch, _mid_bound(models, arch), ratio)
    model, batch = models(arch)
    _, state, seen = _run(model, batch, get_method("framefusion", similarity_lower_bound=bound), ratio, capture=True)
    patch, visual = _patch(model, batch)
    cur, ratios, merging, pending, events = list(range(len(patch))), [], True, None, []
    for layer in range(LAYERS):
        before = seen["raw"][layer]
        assert before.shape[0] == len(cur)
        if pending is not None:  # the prune: `pending` visual tokens by the row recorded in the previous layer
            row = state.rows[layer - 1]
            vis = [j for j, c in enumerate(cur) if visual[c]]
            top = keep_highest(row[vis].float().view(1, -1), torch.tensor([pending])).view(-1)
            dropped = {cur[j] for j, t in zip(vis, top.tolist()) if not t}
            cur, pending = [c for c in cur if c not in dropped], None
            events.append("prune")
        elif merging:
            out = ref.step(before, [patch[c] for c in cur], ratios, ratio, LAYERS, bound, 0.1)
            rows = [j for j in range(len(cur)) if j not in out["removed"]]
            torch.testing.assert_close(seen["in"][layer].double(), out["hidden"][rows], atol=1e-5, rtol=1e-4)
            cur = [cur[j] for j in rows]
            events.append(f"merge{len(out['removed'])}")
            if out["done"]:
                merging, pending = False, out["prune"] if layer + 1 < LAYERS else None
        assert state.layer_keep[layer].tolist() == cur, (layer, events)
        assert state.visual_per_layer[layer] == int(visual[torch.tensor(cur)].sum())
    assert state.visual_per_layer[-1] < int(visual.sum()), events
    _WALKS[arch, bound, ratio] = events
    _EMBEDS[arch] = seen["raw"][0]
    return events


_EMBEDS: dict = {}


def _mid_bound(models, arch) -> float:
    """A bound halfway between two of layer 0's similarities (reference), with 20-40% of the visual tokens above
    it: far from every value, so the library and the reference agree on which tokens merge."""
    if arch not in _EMBEDS:
        _walk(models, arch, 1.5)
    model, batch = models(arch)
    patch, _ = _patch(model, batch)
    _, sim = ref.similarities(_EMBEDS[arch], patch)
    ranked = sorted(sim, reverse=True)
    n_vis = sum(p >= 0 for p in patch)
    # the widest gap between neighbouring similarities with 20-40% of the visual tokens above it
    k = max(range(int(0.2 * n_vis), int(0.4 * n_vis)), key=lambda j: ranked[j - 1] - ranked[j])
    # float32 cosines of library and reference differ by ~1e-7 (reduction order): 2e-6 is far enough
    assert ranked[k - 1] - ranked[k] > 2e-6, "no gap in 20-40%: the similarities are too dense"
    return (ranked[k - 1] + ranked[k]) / 2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("bound", BOUNDS)
def test_each_layer_matches_the_reference(models, arch, bound):
    events = _walk(models, arch, bound)
    if bound == 1.5:  # nothing can merge: merge 0 removes nothing, merging stops, the prune comes before layer 1
        assert events[:2] == ["merge0", "prune"]


def test_the_bounds_reach_every_branch(models):
    # over the architectures and bounds above: a prune after merging, a multi-layer merge (a merge ratio in
    # [10%, budget)) and a merge that meets the budget alone (no prune at all)
    walks = [_walk(models, arch, bound) for arch in ARCHS for bound in BOUNDS]
    assert any("prune" in w and any(e != "merge0" for e in w if e.startswith("merge")) for w in walks), walks
    assert any(sum(e.startswith("merge") for e in w) >= 2 for w in walks), walks
    assert any("prune" not in w for w in walks), walks


def test_records_realised_and_layer_averaged_retention(models):
    model, batch = models("llava_onevision")
    _, session = generate_compressed(model, batch, "framefusion", 0.5, NEW_TOKENS, measure=True)
    sample = session.samples[0]
    _, state, _ = _run(model, batch, get_method("framefusion"), 0.5)
    per_layer = state.visual_per_layer
    assert sample.visual_tokens_out == per_layer[-1]
    assert sample.visual_tokens_layer_avg == pytest.approx(sum(per_layer) / LAYERS)
    assert_restored(model)


def test_renumbered_positions_are_refused(models):
    model, batch = models("qwen2_vl")
    with pytest.raises(ValueError, match="original positions"):
        with in_llm.attach(get_adapter(model), model, get_method("framefusion"), 0.5, batch, position_mode="contiguous"):
            pass
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "llava_video"])
def test_prune_equals_mask_mode_through_compress(tiny_model, arch, monkeypatch):
    model, processor = tiny_model(arch)
    batch = tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=2), "What moves?")
    pruned, session = generate_compressed(model, batch, "framefusion", 0.5, NEW_TOKENS)
    monkeypatch.setitem(compress_module.GENERATE_STAGES, "in_llm", functools.partial(in_llm.generate, mode="mask"))
    masked, _ = generate_compressed(model, batch, "framefusion", 0.5, NEW_TOKENS)
    assert_same_generation(pruned, masked)
    s = session.samples[0]
    assert s.visual_tokens_out < s.visual_tokens_in and len(s.visual_tokens_per_layer) == LAYERS
    assert_restored(model)
