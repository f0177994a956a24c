"""What reaches the LLM: Qwen kept tokens carry their original M-RoPE positions, the Qwen2/2.5-VL text rule, the
LLaVA-OV newline, Qwen3-VL DeepStack levels gathered with the same indices, and the LLaVA-Video grid layout.

The kwargs that ``compress`` hands to ``generate`` are captured by a spy installed on the instance *before* the
block (``compress`` wraps whatever ``model.generate`` is when it starts)."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from vidcom2.adapters import adapter_for, family_of, get_adapter, list_adapters
from vidcom2.adapters.base import GridLayout
from vidcom2.adapters.qwen_vl import rope_index
from vidcom2.testing import tiny

from .reference import full_features, hf_positions, video_columns


def _spy_generate(model, batch, **compress_kw):
    seen = {}
    real = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    model.__dict__["generate"] = spy
    try:
        with vidcom2.compress(model, **compress_kw) as session:
            model.generate(**batch, max_new_tokens=2, do_sample=False)
    finally:
        del model.__dict__["generate"]
    return seen, session


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"])
def test_qwen_kept_positions_are_the_gathered_originals(tiny_model, arch):
    model, processor = tiny_model(arch)
    batch = tiny.inputs(arch, processor, tiny.make_video(8, 112, 140, seed=5), "Count the squares.")
    seen, session = _spy_generate(model, batch, method="vidcom2", retention_ratio=0.25, text_rule="hf5")
    feats, _ = full_features(model, batch, arch)
    sel = vidcom2.apply("vidcom2", feats[0], 0.25)
    cols = video_columns(model, batch["input_ids"][0], llava=False)
    full = hf_positions(model, batch, arch)[:, 0]  # [3, L] from transformers' get_rope_index
    keep = torch.ones(batch["input_ids"].shape[1], dtype=torch.bool)
    keep[cols] = False
    keep[cols[sel.flat_indices()]] = True
    pos = seen["position_ids"]
    assert pos.shape == (4, 1, int(keep.sum()))
    assert torch.equal(pos[1:, 0], full[:, keep])
    assert torch.equal(pos[0, 0], torch.arange(int(keep.sum())))  # row 0 only drives mask building
    assert torch.equal(seen["input_ids"][0], batch["input_ids"][0, keep])
    assert torch.equal(seen["mm_token_type_ids"][0], batch["mm_token_type_ids"][0, keep])
    assert "pixel_values_videos" not in seen and "video_grid_thw" not in seen
    assert session.samples[0].visual_tokens_out == int(sel.keep.sum())


@pytest.mark.parametrize("arch,interval", [("qwen2_vl", 1), ("qwen2_5_vl", 2)])
def test_reference_text_rule_resumes_after_the_video(tiny_model, arch, interval):
    """A long thin video (T=8 temporal patches of 2x2 merged tokens): the text after it starts at
    max(video positions) + 1 (transformers 4.x rule), not at start + max(h, w) (5.x)."""
    model, processor = tiny_model(arch)
    batch = tiny.inputs(arch, processor, tiny.make_video(16, 56, 56, seed=6), "Why?")
    assert batch["video_grid_thw"].tolist() == [[8, 4, 4]]
    seen, _ = _spy_generate(model, batch, method="none", retention_ratio=1.0)
    pos = seen["position_ids"][1:, 0]  # [3, L]
    cols = video_columns(model, batch["input_ids"][0], llava=False)
    start = int(cols[0])  # text before the video: 0..start-1, so the video starts at `start`
    assert int(pos[0, cols].max()) == start + 7 * interval
    after = pos[:, int(cols[-1]) + 1 :]
    first = start + 7 * interval + 1
    expected = torch.arange(first, first + after.shape[1]).expand(3, -1)
    assert torch.equal(after, expected)
    # and the 5.x rule is what transformers computes: start + max(h, w) = start + 2
    hf5, _ = _spy_generate(model, batch, method="none", retention_ratio=1.0, text_rule="hf5")
    assert int(hf5["position_ids"][1, 0, int(cols[-1]) + 1]) == start + 2
    assert torch.equal(hf5["position_ids"][1:], hf_positions(model, batch, arch))


def test_rope_index_matches_transformers_hf5_and_the_spec_example(tiny_model):
    model, processor = tiny_model("qwen2_5_vl")
    vids = [tiny.make_video(6, 112, 140, seed=7), tiny.make_video(4, 84, 112, seed=8)]
    batch = tiny.inputs("qwen2_5_vl", processor, vids, ["a", "a much longer question here"])
    ours = rope_index(
        batch["mm_token_type_ids"],
        batch["attention_mask"],
        batch["video_grid_thw"],
        [2.0 * float(s) for s in batch["second_per_grid_ts"]],
        2,
        "hf5",
    )
    assert torch.equal(ours, hf_positions(model, batch, "qwen2_5_vl"))
    # spec hooks_transformers.md 8.2: 3 text tokens, grid [16, 24, 24] -> next text at 19 (Qwen2-VL, interval 1)
    # and 34 (Qwen2.5-VL, interval 2) with the reference rule, 15 with the 5.x rule
    types = torch.tensor([[0, 0, 0] + [2] * (16 * 144) + [0, 0]])
    am = torch.ones_like(types)
    grid = torch.tensor([[16, 24, 24]])
    for interval, expected in ((1.0, 19), (2.0, 34)):
        assert int(rope_index(types, am, grid, [interval], 2, "reference")[0, 0, -2]) == expected
        assert int(rope_index(types, am, grid, [interval], 2, "hf5")[0, 0, -2]) == 15


def test_llava_newline_kept_last_and_positions(tiny_model):
    model, processor = tiny_model("llava_onevision")
    batch = tiny.inputs("llava_onevision", processor, tiny.make_video(4, 112, 140, seed=9), "Where?")
    for mode in ("contiguous", "original"):
        seen, session = _spy_generate(
            model, batch, method="uniform", retention_ratio=0.25, position_mode=mode
        )
        k = session.samples[0].visual_tokens_out
        assert k == 4 * vidcom2.count(0.25, 196)
        assert int((seen["input_ids"] == model.config.video_token_id).sum()) == k + 1
        pooled = seen["mm_encoder_outputs"]["video"].pooler_output
        assert pooled.shape == (1, k + 1, model.config.text_config.hidden_size)
        assert torch.equal(pooled[0, -1], model.model.image_newline.detach())
        if mode == "contiguous":
            assert "position_ids" not in seen
        else:
            cols = (batch["input_ids"][0] == model.config.video_token_id).nonzero().squeeze(1)
            sel = vidcom2.apply("uniform", full_features(model, batch, "llava_onevision")[0][0], 0.25)
            keep = torch.ones(batch["input_ids"].shape[1], dtype=torch.bool)
            keep[cols[:-1]] = False
            keep[cols[:-1][sel.flat_indices()]] = True
            assert torch.equal(seen["position_ids"][0], torch.arange(batch["input_ids"].shape[1])[keep])


def test_qwen3_deepstack_levels_gathered_with_the_same_indices(tiny_model):
    model, processor = tiny_model("qwen3_vl")
    batch = tiny.inputs("qwen3_vl", processor, tiny.make_video(4, 112, 140, seed=10), "Why?")
    seen, _ = _spy_generate(model, batch, method="vidcom2", retention_ratio=0.25)
    feats, out = full_features(model, batch, "qwen3_vl")
    flat = vidcom2.apply("vidcom2", feats[0], 0.25).flat_indices()
    got = seen["mm_encoder_outputs"]["video"]
    assert len(got.deepstack_features) == len(out.deepstack_features) == 2
    for level_got, level_full in zip(got.deepstack_features, out.deepstack_features):
        assert torch.equal(level_got[0], level_full[0][flat])
    assert torch.equal(got.pooler_output[0], out.pooler_output[0][flat])


def test_llava_video_grid_layout():
    g = GridLayout()
    assert (g.scored_per_frame, g.tokens_per_frame) == (169, 182)
    assert g.grid_index(torch.tensor([0, 12, 13, 168])).tolist() == [0, 12, 14, 180]
    keep = torch.zeros(2, 169, dtype=torch.bool)
    keep[0, [0, 14]] = True
    keep[1, [168]] = True
    newlines = [13 + 14 * r for r in range(13)]
    seq = g.sequence(keep).tolist()
    assert seq == [0, 15] + newlines + [182 + 180] + [182 + n for n in newlines]
    row = GridLayout(newline_order="row").frame_sequence(keep[0]).tolist()
    assert row == [0, 13, 15, 27] + newlines[2:]
    with pytest.raises(ValueError, match="newline_order"):
        GridLayout(newline_order="grid")


def test_adapter_registry(tiny_model):
    model, _ = tiny_model("qwen2_5_vl")
    assert family_of(model) == "qwen2_5_vl"
    assert get_adapter(model).family == "qwen2_5_vl"
    assert list_adapters() == sorted(tiny.ARCHS)
    moe, _ = tiny_model("qwen3_vl_moe")  # Qwen3-VL-MoE (30B-A3B's class) is served by the Qwen3-VL adapter
    assert type(moe).__name__ == "Qwen3VLMoeForConditionalGeneration" and family_of(moe) == "qwen3_vl"
    with pytest.raises(KeyError, match="qwen2_vl"):
        adapter_for("qwen2vl")
    layers = get_adapter(model).decoder_layers(model)
    assert len(layers) == 4 and layers is model.model.language_model.layers
    mask = get_adapter(model).visual_token_mask(
        model, {"input_ids": torch.tensor([[1, model.config.video_token_id]])}
    )
    assert mask.tolist() == [[False, True]]


@pytest.mark.parametrize("arch", ["llava_onevision", "llava_video"])
def test_llava_prompt_and_pixels_must_hold_the_same_videos(tiny_model, arch):
    model, processor = tiny_model(arch)
    batch = dict(tiny.inputs(arch, processor, tiny.make_video(2, 64, 64, seed=0), "Why?"))
    batch["pixel_values_videos"] = torch.cat([batch["pixel_values_videos"]] * 2)  # two videos, one in the prompt
    with pytest.raises(ValueError, match="the prompt holds 1 videos but pixel_values_videos has 2"):
        get_adapter(model).video_slots(model, batch)
