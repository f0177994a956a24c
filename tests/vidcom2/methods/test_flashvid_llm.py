"""FlashVID's in-LLM stage (``MethodInfo.in_llm``): the plan's layer and counts from the official scripts, the
selection against the official ``fastv_prune`` on transformers' eager attention (``ref_flashvid.llm_keep``), prune ==
mask mode through ``compress`` on every architecture FlashVID supports (LLaVA-Video: both newline orders), and the
recorded retention counts."""

from __future__ import annotations

import functools
import importlib
import math

import pytest
import torch

import vidcom2
from tests.vidcom2._helpers import assert_restored, generate_compressed
from tests.vidcom2.methods import ref_flashvid as ref
from vidcom2.adapters import adapter_for, get_adapter
from vidcom2.stages import in_llm
from vidcom2.testing import tiny
from vidcom2.types import Selection

compress_module = importlib.import_module("vidcom2.compress")  # the module (vidcom2.compress is the function)

# FlashVID upstream: LLaVA-OV, LLaVA-Video, Qwen2.5-VL, Qwen3-VL; the project's other Qwen classes share the seam
ARCHS = ("llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
# (arch, LLaVA-Video newline order): its row newlines are never candidates, in either order
CASES = [(a, None) for a in ARCHS] + [("llava_video", "after_frame"), ("llava_video", "row")]
NEW = 4


def _batch(arch, processor):
    return tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=3), "What moves where?")


def _kw(arch, order=None):
    if order is not None:
        return {"adapter": adapter_for(arch, newline_order=order)}
    return {"text_rule": "hf5"} if arch.startswith("qwen2") else {}


def test_plan_follows_the_scripts_and_targets_the_layer_averaged_retention():
    m = vidcom2.get_method("flashvid")
    assert m.info.acts == ("vision_encoder", "in_llm") and m.info.single_prompt is not None
    assert "flashvid" in vidcom2.list_methods("in_llm") and "flashvid" in vidcom2.list_methods("vision_encoder")
    # LLaVA-OV-7B (28 layers), 32 frames of 196 at r = 0.25: the vision side keeps ceil(196 * 0.25 * 1.25) = 62 a frame
    entering = 32 * 62
    plan = m.plan(0.25, 28, entering, mrope=False)
    assert [(s.layer, s.keep) for s in plan.stages] == [(20, 596)]  # ceil(1984 * 0.3) = ceil(595.2)
    assert plan.position_mode == "original" and plan.hparams["visual_tokens_llm_in"] == entering
    layer_avg = (20 * entering + 8 * 596) / 28 / (32 * 196)
    assert abs(layer_avg - 0.25) < 0.005  # retention_ratio is the layer-averaged retention (as the scripts)
    q3 = vidcom2.get_method("flashvid", pruning_layer=28, llm_retention_ratio=0.1).plan(0.25, 36, entering, mrope=True)
    assert [(s.layer, s.keep) for s in q3.stages] == [(28, 199)]  # scripts/qwen3_vl.sh
    assert m.plan(0.25, 36, 100, mrope=True).stages[0].layer == 26  # round(20 * 36 / 28)
    assert m.plan(0.25, 4, 100, mrope=False).stages[0].layer == 3  # the tiny LLM: round(20 * 4 / 28)
    assert [m.plan(0.25, 28, n, mrope=False).stages[0].keep for n in (10, 11)] == [3, 4]  # ceil(3.0), ceil(3.3)
    assert m.plan(1.0, 28, 100, mrope=False).stages == ()
    assert vidcom2.get_method("flashvid", llm_retention_ratio=1.0).plan(0.25, 28, 100, mrope=False).stages == ()
    with pytest.raises(ValueError, match="pruning_layer must be in"):
        vidcom2.get_method("flashvid", pruning_layer=28).plan(0.25, 28, 100, mrope=False)
    with pytest.raises(ValueError, match="llm_retention_ratio"):
        vidcom2.get_method("flashvid", llm_retention_ratio=0.0).plan(0.25, 28, 100, mrope=False)


def _eager_attentions(model, batch):
    text_model = model.model.language_model
    text_model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            return model(**batch, output_attentions=True).attentions
    finally:
        text_model.config._attn_implementation = "sdpa"


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_in_llm_selection_equals_the_official_fastv_prune(tiny_model, arch):
    # every video token entering the LLM (a keep-all "vision side"): the stage at layer 3 of 4 keeps what fastv_prune
    # keeps on transformers' own eager attention weights of layer 2
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    adapter = get_adapter(model)
    cols = adapter.video_slots(model, batch)[0].columns
    sel = Selection(keep=torch.ones(cols.shape, dtype=torch.bool))
    with torch.no_grad(), in_llm.attach(adapter, model, vidcom2.get_method("flashvid"), 0.25, batch,
                                        selections=[sel]) as state:  # fmt: skip
        model.generate(**batch, max_new_tokens=1, do_sample=False)
    want = ref.llm_keep(_eager_attentions(model, batch)[2].float(), cols.reshape(-1).sort().values)
    got = state.keep[3]
    got = got[torch.isin(got, cols.reshape(-1))]
    assert want.numel() == math.ceil(cols.numel() * 0.3)
    assert set(got.tolist()) == set(want.tolist())
    assert_restored(model)


@pytest.mark.parametrize("arch, order", CASES)
def test_prune_equals_mask_mode_through_compress_and_counts(tiny_model, arch, order, monkeypatch):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    pruned, session = generate_compressed(model, batch, "flashvid", 0.25, NEW, **_kw(arch, order))
    with monkeypatch.context() as mp:
        mp.setitem(compress_module.GENERATE_STAGES, "in_llm", functools.partial(in_llm.generate, mode="mask"))
        masked, _ = generate_compressed(model, batch, "flashvid", 0.25, NEW, **_kw(arch, order))
    assert (torch.stack(pruned.logits) - torch.stack(masked.logits)).abs().max().item() <= 1e-5
    assert torch.equal(pruned.sequences, masked.sequences)
    s = session.samples[0]
    entering = s.visual_tokens_per_layer[0]
    kept = math.ceil(entering * 0.3)
    assert s.visual_tokens_per_layer == (entering,) * 3 + (kept,)  # layer 20 of 28 -> 3 of 4
    assert (s.visual_tokens_out, s.visual_tokens_layer_avg) == (kept, (3 * entering + kept) / 4)
    if arch.startswith("llava"):
        # what entered the LLM is exactly what the vision-side part alone keeps (the seam's num_visual): on
        # LLaVA-Video its kept tokens, without the 13 row newlines per frame
        _, alone = generate_compressed(model, batch, "flashvid", 0.25, 1, llm_retention_ratio=1.0, **_kw(arch, order))
        assert alone.samples[0].visual_tokens_per_layer is None  # no in-LLM stage: the plain generate
        assert alone.samples[0].visual_tokens_out == entering
        frames, n = 4, 169 if arch == "llava_video" else 196
        assert entering <= frames * math.ceil(n * 0.25 * 1.25) and s.visual_tokens_in == frames * n
    assert_restored(model)
