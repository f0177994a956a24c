"""vidcom2.testing.tiny: real tokens per frame, seeded weights, offline save/load, deterministic videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcom2.testing import tiny

from .reference import ARCHS


def test_make_video_is_deterministic_and_moves():
    a = tiny.make_video(6, 48, 64, seed=1)
    assert a.shape == (6, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, tiny.make_video(6, 48, 64, seed=1))
    assert not np.array_equal(a, tiny.make_video(6, 48, 64, seed=2))
    assert all(not np.array_equal(a[t], a[t + 1]) for t in range(5))  # something moves every frame


def test_tokenizer_round_trips_and_has_the_special_tokens():
    tok = tiny.tokenizer()
    assert len(tok) == 265
    text = "héllo <video> wörld ✓"
    assert tok.decode(tok(text)["input_ids"]) == text
    for special in tiny.SPECIAL_TOKENS:
        assert len(tok(special)["input_ids"]) == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_real_tokens_per_frame(tiny_model, arch):
    model, processor = tiny_model(arch)
    batch = tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=0), "q")
    n_video = int((batch["input_ids"] == model.config.video_token_id).sum())
    if arch == "llava_onevision":
        assert n_video == 4 * 196 + 1  # 14x14 per frame + one newline (spec 1.1)
        assert batch["pixel_values_videos"].shape == (1, 4, 3, 384, 384)
    else:
        t, h, w = batch["video_grid_thw"][0].tolist()
        patch = 16 if tiny.family(arch) == "qwen3_vl" else 14
        assert t == 2 and n_video == t * h * w // 4
        assert batch["pixel_values_videos"].shape[1] == 3 * 2 * patch * patch
    assert model.dtype == torch.float32 and not model.training


def test_build_is_seeded():
    a, _ = tiny.build("qwen2_vl", text_layers=2, seed=0)
    b, _ = tiny.build("qwen2_vl", text_layers=2, seed=0)
    c, _ = tiny.build("qwen2_vl", text_layers=2, seed=1)
    wa, wb, wc = (m.lm_head.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert len(a.model.language_model.layers) == 2
    with pytest.raises(ValueError, match="qwen2_vl"):
        tiny.build("qwen2-vl")


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen3_vl", "qwen3_vl_moe"])
def test_save_loads_offline_with_auto_classes(tmp_path, arch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    tiny.save(arch, tmp_path, text_layers=2)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    built, built_processor = tiny.build(arch, text_layers=2)
    assert type(model) is type(built)
    for (name, p), (_, q) in zip(model.state_dict().items(), built.state_dict().items()):
        assert torch.equal(p, q), name
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Why?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == tiny.prompt(arch, "Why?")
    video = tiny.make_video(2, 64, 64, seed=0)
    a = tiny.inputs(arch, processor, video, "Why?")
    b = tiny.inputs(arch, built_processor, video, "Why?")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])
