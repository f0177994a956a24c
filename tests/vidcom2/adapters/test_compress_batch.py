"""A left-padded batch of two prompts of different lengths gives, row by row, what each prompt gives alone (the
rows keep different numbers of tokens, so the shrunk batch is re-padded)."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from vidcom2.testing import tiny

from .reference import ARCHS

NEW = 4


def _videos(arch):
    if arch == "llava_onevision":  # one pixel tensor [B, F, ...]: same frame count, any content
        return [tiny.make_video(4, 112, 140, seed=3), tiny.make_video(4, 96, 128, seed=4)]
    return [tiny.make_video(4, 112, 140, seed=3), tiny.make_video(4, 84, 112, seed=4)]


QUESTIONS = ["Where?", "What colour is the square that moves to the left, and how fast?"]


def _gen(model, batch):
    return model.generate(
        **batch, max_new_tokens=NEW, do_sample=False, output_logits=True, return_dict_in_generate=True
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["vidcom2", "random"])
def test_left_padded_batch_matches_each_prompt_alone(tiny_model, arch, method):
    model, processor = tiny_model(arch)
    videos = _videos(arch)
    batch = tiny.inputs(arch, processor, videos, QUESTIONS)
    assert (batch["attention_mask"] == 0).any(), (
        "the batch must be left-padded for this test to mean anything"
    )
    with vidcom2.compress(model, method, 0.3) as together:
        both = _gen(model, batch)
    L = batch["input_ids"].shape[1]
    for row in range(2):
        alone_in = tiny.inputs(arch, processor, videos[row], QUESTIONS[row])
        with vidcom2.compress(model, method, 0.3) as single:
            alone = _gen(model, alone_in)
        n = alone.sequences.shape[1] - alone_in["input_ids"].shape[1]
        assert torch.equal(both.sequences[row, L : L + n], alone.sequences[0, -n:])
        for step in range(n):
            assert torch.allclose(both.logits[step][row], alone.logits[step][0], atol=1e-4, rtol=0)
        assert together.samples[row].visual_tokens_out == single.samples[0].visual_tokens_out
        assert together.samples[row].prompt_tokens_out == single.samples[0].prompt_tokens_out
    assert together.samples[0].prompt_tokens_in != together.samples[1].prompt_tokens_in


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_expansion_keeps_each_prompt_with_its_video(tiny_model, arch):
    """generate repeats each prompt for beams / return sequences and must pair it with its own video features."""
    model, processor = tiny_model(arch)
    batch = tiny.inputs(arch, processor, _videos(arch), QUESTIONS)
    kw = dict(max_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2)
    plain = model.generate(**batch, **kw)
    with vidcom2.compress(model, "none", 1.0, text_rule="hf5"):
        hooked = model.generate(**batch, **kw)
    assert torch.equal(plain, hooked)


def test_llava_beams_with_unequal_kept_counts_are_refused(tiny_model):
    model, processor = tiny_model("llava_onevision")
    # these two videos keep 196 and 197 tokens with vidcom2 at r=0.25 (FCA per-frame rounding)
    videos = [tiny.make_video(4, 112, 140, seed=5), tiny.make_video(4, 96, 128, seed=15)]
    batch = tiny.inputs("llava_onevision", processor, videos, QUESTIONS)
    with vidcom2.compress(model, "vidcom2", 0.25):
        with pytest.raises(NotImplementedError, match="batch size 1"):
            model.generate(**batch, max_new_tokens=2, do_sample=False, num_beams=2)
        model.generate(**batch, max_new_tokens=2, do_sample=False)  # greedy is fine


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_right_padded_prompts_are_repadded_left(tiny_model, arch):
    model, processor = tiny_model(arch)
    videos = _videos(arch)
    left = tiny.inputs(arch, processor, videos, QUESTIONS)
    processor.tokenizer.padding_side = "right"
    try:
        right = processor(
            text=[tiny.prompt(arch, q) for q in QUESTIONS], videos=videos, return_tensors="pt", padding=True
        )
    finally:
        processor.tokenizer.padding_side = "left"
    assert (right["attention_mask"][:, -1] == 0).any()
    with vidcom2.compress(model, "vidcom2", 0.3):
        from_left = model.generate(**left, max_new_tokens=NEW, do_sample=False)
        from_right = model.generate(**right, max_new_tokens=NEW, do_sample=False)
    assert torch.equal(from_left[:, -NEW:], from_right[:, -NEW:])
