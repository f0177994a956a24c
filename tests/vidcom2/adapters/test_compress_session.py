"""vidcom2.compress as a context manager: identity at r=1 / method none, scoped attachment (nothing left behind,
also on errors), measurements, returned sequences, clear errors."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from vidcom2.testing import tiny

from .reference import ARCHS

NEW = 4


def _batch(arch, processor, frames=4):
    return tiny.inputs(arch, processor, tiny.make_video(frames, 112, 140, seed=2), "Which square moves?")


def _gen(model, batch, **kw):
    return model.generate(
        **batch, max_new_tokens=NEW, do_sample=False, output_logits=True, return_dict_in_generate=True, **kw
    )


def _hooks_everywhere(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _assert_pristine(model, rope_deltas, hooks):
    assert "generate" not in model.__dict__
    assert model.generate.__func__ is type(model).generate
    assert _hooks_everywhere(model) == hooks  # transformers installs its own output-capture hooks
    assert getattr(model.model, "rope_deltas", None) is rope_deltas


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,ratio", [("none", 0.25), ("vidcom2", 1.0), ("random", 1.0)])
def test_keep_everything_is_exactly_unhooked_generate(tiny_model, arch, method, ratio):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    plain = _gen(model, batch)
    # hf5: transformers' own text rule, so that "uncompressed" means bit-identical to plain generate
    kw = {"text_rule": "hf5"} if arch.startswith("qwen2") else {}
    with vidcom2.compress(model, method, ratio, **kw) as session:
        hooked = _gen(model, batch)
    assert torch.equal(plain.sequences, hooked.sequences)
    for a, b in zip(plain.logits, hooked.logits):
        assert torch.equal(a, b)
    s = session.samples[0]
    assert s.visual_tokens_in == s.visual_tokens_out > 0
    assert s.prompt_tokens_in == s.prompt_tokens_out == batch["input_ids"].shape[1]


@pytest.mark.parametrize("arch", ARCHS)
def test_nothing_left_behind_also_on_errors(tiny_model, arch):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    attn = model.config.get_text_config()._attn_implementation
    rope = getattr(model.model, "rope_deltas", None)
    hooks = _hooks_everywhere(model)
    with vidcom2.compress(model, "vidcom2", 0.5, measure=True):
        assert "generate" in model.__dict__
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    _assert_pristine(model, rope, hooks)
    with pytest.raises(RuntimeError, match="boom"):
        with vidcom2.compress(model, "vidcom2", 0.5, measure=True):
            raise RuntimeError("boom")
    _assert_pristine(model, rope, hooks)
    # an error raised inside the wrapped generate (after the prefill hook was registered)
    with pytest.raises(Exception):  # noqa: B017 - transformers' own validation error type is not ours to pin
        with vidcom2.compress(model, "vidcom2", 0.5, measure=True):
            model.generate(**batch, max_new_tokens=2, do_sample=False, num_beams=0)
    _assert_pristine(model, rope, hooks)
    assert model.config.get_text_config()._attn_implementation == attn


def test_measurements_and_returned_sequences(tiny_model):
    model, processor = tiny_model("qwen2_vl")
    batch = _batch("qwen2_vl", processor)
    L = batch["input_ids"].shape[1]
    with vidcom2.compress(model, "vidcom2", 0.25) as quiet:
        out = model.generate(**batch, max_new_tokens=NEW, do_sample=False)
    s = quiet.samples[0]
    assert (s.vision_encoder_s, s.compression_s, s.prefill_s, s.decode_s) == (None, None, None, None)
    with vidcom2.compress(model, "vidcom2", 0.25, measure=True) as timed:
        out2 = model.generate(**batch, max_new_tokens=NEW, do_sample=False)
        model.generate(**batch, max_new_tokens=NEW, do_sample=False)
    assert len(timed.samples) == 2  # one per call
    t = timed.samples[0]
    for value in (t.vision_encoder_s, t.compression_s, t.prefill_s, t.decode_s):
        assert isinstance(value, float) and value > 0
    assert torch.equal(out, out2)
    # the caller's prompt is at the head of the output: out[:, L:] are the new tokens
    assert torch.equal(out[:, :L], batch["input_ids"])
    assert s.new_tokens == out.shape[1] - L
    # 4 frames -> 2 temporal patches of 20 tokens; vidcom2 keeps ~25% (FCA per-frame rounding)
    assert s.visual_tokens_in == 40 and 1 <= s.visual_tokens_out < 40
    assert s.prompt_tokens_out == s.prompt_tokens_in - (s.visual_tokens_in - s.visual_tokens_out)
    assert s.visual_tokens_layer_avg == s.visual_tokens_out
    assert timed.info["method"] == "vidcom2" and timed.info["adapter"] == "qwen2_vl"
    assert timed.info["text_rule"] == "reference" and timed.info["position_mode"] == "original"
    assert timed.info["attn_implementation"] == "sdpa"


def test_text_only_prompt_passes_through(tiny_model):
    model, processor = tiny_model("qwen3_vl")
    enc = processor.tokenizer(
        ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt"
    )
    plain = model.generate(**enc, max_new_tokens=3, do_sample=False)
    with vidcom2.compress(model, "vidcom2", 0.25) as session:
        hooked = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert torch.equal(plain, hooked)
    assert session.samples[0].visual_tokens_in == 0


def test_vision_encoder_stage_runs_through_compress(tiny_model):
    model, processor = tiny_model("llava_onevision")
    batch = _batch("llava_onevision", processor)
    with vidcom2.compress(model, "visionzip", 0.25) as session:
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    s = session.samples[0]
    assert s.visual_tokens_in == 4 * 196
    assert s.visual_tokens_out == 4 * vidcom2.count(0.25, 196)  # visionzip's default uniform per-frame budget


def test_errors_name_the_problem(tiny_model):
    model, processor = tiny_model("qwen2_vl")
    with pytest.raises(KeyError, match="vidcom2"):
        with vidcom2.compress(model, "vidcom", 0.25):
            pass
    with pytest.raises(ValueError, match="position_mode"):
        with vidcom2.compress(model, "vidcom2", 0.25, position_mode="contiguous"):
            pass
    with pytest.raises(ValueError, match="text_rule"):
        with vidcom2.compress(model, "vidcom2", 0.25, text_rule="4.x"):
            pass
    with pytest.raises(ValueError):
        with vidcom2.compress(model, "vidcom2", 1.5):
            pass
    with pytest.raises(ValueError, match="Qwen2VLForConditionalGeneration"):
        vidcom2.compress(torch.nn.Linear(2, 2), "vidcom2", 0.25).__enter__()
    assert "generate" not in model.__dict__


def test_nested_blocks_are_refused(tiny_model):
    model, _ = tiny_model("llava_onevision")
    with vidcom2.compress(model, "vidcom2", 0.25):
        with pytest.raises(RuntimeError, match="already inside"):
            with vidcom2.compress(model, "random", 0.25):
                pass
        assert model.generate._vidcom2_compress
    assert "generate" not in model.__dict__


def test_several_return_sequences_keep_the_callers_prompt(tiny_model):
    model, processor = tiny_model("qwen2_vl")
    batch = _batch("qwen2_vl", processor)
    L = batch["input_ids"].shape[1]
    with vidcom2.compress(model, "vidcom2", 0.25) as session:
        out = model.generate(**batch, max_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2)
    assert out.shape[0] == 2
    assert torch.equal(out[:, :L], batch["input_ids"].expand(2, -1))
    assert len(session.samples) == 1
