"""HoliTom's inner merge inside the LLM on the tiny random models: through ``vidcom2.compress`` (outer part, then the
inner merge on the shrunk prompt) prune mode against the mask-mode reference on every architecture, and on the full
prompt the states entering layer k against the official loop (tests/vidcom2/methods/ref_holitom_inner.py)."""

from __future__ import annotations

import functools
import importlib

import pytest
import torch

from tests.vidcom2._helpers import assert_restored, generate_compressed
from tests.vidcom2.methods import ref_holitom_inner as ref
from vidcom2 import get_method
from vidcom2.adapters import get_adapter
from vidcom2.budget import count
from vidcom2.stages import in_llm
from vidcom2.testing import tiny

compress_module = importlib.import_module("vidcom2.compress")  # the module (vidcom2.compress is the function)

NEW = 4
K = 3  # round(18 / 28 * 4) on the 4-layer tiny LLMs


def _batch(arch, processor):
    return tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=2), "What moves where?")


@pytest.fixture
def mask_mode(monkeypatch):
    monkeypatch.setitem(compress_module.GENERATE_STAGES, "in_llm", functools.partial(in_llm.generate, mode="mask"))


@pytest.mark.parametrize("arch", tiny.ALL_ARCHS)
def test_prune_equals_mask_mode_through_compress(tiny_model, arch, request):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    kw = {"text_rule": "hf5"} if arch.startswith("qwen2") else {}  # as tests/vidcom2/stages/test_multistage.py
    if arch == "llava_video":  # its row newlines cannot be told apart from kept tokens once the prompt is shrunk
        with pytest.raises(ValueError, match="row newlines.*switch the method's in-LLM part off"):
            generate_compressed(model, batch, "holitom", 0.5, NEW)
        assert_restored(model)
        _, session = generate_compressed(model, batch, "holitom", 0.5, NEW, inner_ratio=0.0)  # the outer part runs
        assert session.samples[0].visual_tokens_per_layer is None
        return
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
