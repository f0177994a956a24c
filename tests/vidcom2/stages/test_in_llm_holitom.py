"""HoliTom's inner merge inside the LLM on the tiny random models: through ``vidcom2.compress`` (outer part, then the
inner merge on the shrunk prompt) prune mode against the mask-mode reference on every architecture (LLaVA-Video: both
newline orders; its row newlines are never merged), and on the full prompt the states entering layer k against the
official loop (tests/vidcom2/methods/ref_holitom_inner.py)."""

from __future__ import annotations

import functools
import importlib

import pytest
import torch

from tests.vidcom2._helpers import assert_restored, generate_compressed
from tests.vidcom2.methods import ref_holitom_inner as ref
from vidcom2 import apply, get_method
from vidcom2.adapters import adapter_for, get_adapter
from vidcom2.budget import count
from vidcom2.stages import in_llm, rebuild
from vidcom2.testing import tiny

compress_module = importlib.import_module("vidcom2.compress")  # the module (vidcom2.compress is the function)

NEW = 4
K = 3  # round(18 / 28 * 4) on the 4-layer tiny LLMs
# (arch, LLaVA-Video newline order)
CASES = [(a, "after_frame" if a == "llava_video" else None) for a in tiny.ALL_ARCHS] + [("llava_video", "row")]


def _batch(arch, processor):
    return tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=2), "What moves where?")


@pytest.fixture
def mask_mode(monkeypatch):
    monkeypatch.setitem(compress_module.GENERATE_STAGES, "in_llm", functools.partial(in_llm.generate, mode="mask"))


@pytest.mark.parametrize("arch, order", CASES)
def test_prune_equals_mask_mode_through_compress(tiny_model, arch, order, request):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    kw = {"text_rule": "hf5"} if arch.startswith("qwen2") else {}  # as tests/vidcom2/stages/test_multistage.py
    if order is not None:
        kw = {"adapter": adapter_for(arch, newline_order=order)}
        # what enters the LLM is what the outer part alone keeps: its kept tokens, not the 13 row newlines a frame
        _, outer = generate_compressed(model, batch, "holitom", 0.5, 1, inner_ratio=0.0, **kw)
        assert outer.samples[0].visual_tokens_per_layer is None
    pruned, session = generate_compressed(model, batch, "holitom", 0.5, NEW, **kw)
    request.getfixturevalue("mask_mode")
    masked, _ = generate_compressed(model, batch, "holitom", 0.5, NEW, **kw)
    assert (torch.stack(pruned.logits) - torch.stack(masked.logits)).abs().max().item() <= 1e-5
    assert torch.equal(pruned.sequences, masked.sequences)
    s = session.samples[0]
    entering = s.visual_tokens_per_layer[0]
    assert s.visual_tokens_per_layer == (entering,) * K + (count(0.5, entering),) * (4 - K)
    assert s.visual_tokens_out == count(0.5, entering)
    assert s.visual_tokens_layer_avg == pytest.approx((K * entering + (4 - K) * count(0.5, entering)) / 4)
    if order is not None:
        assert entering == outer.samples[0].visual_tokens_out
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_layer_k_input_equals_the_official_loop(tiny_model, arch):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    adapter = get_adapter(model)
    layers = adapter.decoder_layers(model)
    seen = {}

    def hook(module, args, kwargs, key):
        h = args[0] if args else kwargs["hidden_states"]
        if h.shape[1] > 1:
            seen.setdefault(key, h[0].detach().clone())

    with in_llm.attach(adapter, model, get_method("holitom"), 0.5, batch) as state:
        # ahead of the engine's pre-hook (prepend): the states layer K was handed; after it: what it let in
        handles = [layers[K].register_forward_pre_hook(functools.partial(hook, key="before"), with_kwargs=True,
                                                       prepend=True),
                   layers[K].register_forward_pre_hook(functools.partial(hook, key="after"), with_kwargs=True)]  # fmt: skip
        try:
            model.generate(**batch, max_new_tokens=2, do_sample=False)
        finally:
            for h in handles:
                h.remove()
    visual = in_llm.candidates(adapter, model, batch)
    kept, want = ref.inner_merge(seen["before"], visual.nonzero().squeeze(1).tolist(), state.rows[K - 1], 0.5)
    survivors = state.layer_keep[K]
    assert set(survivors[visual[survivors]].tolist()) == kept
    assert torch.equal(survivors[~visual[survivors]], (~visual).nonzero().squeeze(1))
    torch.testing.assert_close(seen["after"], want[survivors], atol=1e-6, rtol=1e-6)
    assert state.layer_keep[K - 1].numel() == visual.numel()  # layers < k keep the whole prompt
    assert_restored(model)


@pytest.mark.parametrize("order", ["after_frame", "row"])
def test_llava_video_row_newlines_are_never_merged(tiny_model, order):
    # on the shrunk prompt: every row newline reaches layer k with the states it was handed (neither dropped nor
    # merged into), and only the kept tokens (the candidates) take part in the merge
    model, processor = tiny_model("llava_video")
    adapter = adapter_for("llava_video", newline_order=order)
    batch = _batch("llava_video", processor)
    with torch.no_grad():
        encoded = adapter.encode(model, batch)
        feats = encoded.feats[0]
        sel = apply("holitom", feats, 0.5, scores=feats.float().norm(dim=-1))  # a stand-in signal
        prompt, _ = rebuild.shrink(adapter, model, batch, encoded, [sel], position_mode="contiguous", text_rule="hf5")
    call = {k: v for k, v in batch.items() if k not in (*compress_module._PROMPT_KEYS, *adapter.encoder_inputs)}
    call.update(prompt)
    layer = adapter.decoder_layers(model)[K]
    seen = {}

    def hook(module, args, kwargs, key):
        h = args[0] if args else kwargs["hidden_states"]
        if h.shape[1] > 1:
            seen.setdefault(key, h[0].detach().clone())

    with in_llm.attach(adapter, model, get_method("holitom"), 0.5, call, selections=[sel]) as state:
        handles = [layer.register_forward_pre_hook(functools.partial(hook, key="before"), with_kwargs=True,
                                                   prepend=True),
                   layer.register_forward_pre_hook(functools.partial(hook, key="after"), with_kwargs=True)]  # fmt: skip
        try:
            with torch.no_grad():
                model.generate(**call, max_new_tokens=1, do_sample=False)
        finally:
            for h in handles:
                h.remove()
    cand = in_llm.candidates(adapter, model, call, selections=[sel])
    newlines = ((call["input_ids"][0] == model.config.video_token_id) & ~cand).nonzero().squeeze(1)
    assert newlines.numel() == 4 * 13 and int(cand.sum()) == int(sel.keep.sum())
    survivors = state.layer_keep[K]
    assert torch.isin(newlines, survivors).all()
    assert int(cand[survivors].sum()) == count(0.5, int(cand.sum()))
    rows = torch.searchsorted(survivors, newlines)
    assert torch.equal(seen["after"][rows], seen["before"][newlines])
    assert_restored(model)
