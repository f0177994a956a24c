"""Vision-encoder scores (hook (c), VisionZip): blockwise "attention received" and key metrics against independent
dense computations on tiny encoders (transformers' eager attention weights for SigLIP; a dense softmax from the
captured q/k for the Qwen towers, un-windowed at token level for Qwen2.5-VL), and clean restoration.
Spec: shared/spec/hooks_transformers.md section 6; baselines.md 7.3."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

import vidcom2
from tests.vidcom2._helpers import model_batches
from vidcom2.adapters import get_adapter
from vidcom2.stages import attention, encoder

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


@pytest.fixture(scope="module")
def models():
    return model_batches(seed=2, question='What?', text_layers=1)


def encode(model, batch):
    adapter = get_adapter(model)
    with encoder.capture(adapter, model, block=100) as cap:
        encoded = adapter.encode(model, batch)
    return cap, encoded


def hooks(module) -> list:
    """Every forward (pre-)hook id on the module tree (transformers' own output-capture hooks included)."""
    return [(n, sorted(m._forward_pre_hooks), sorted(m._forward_hooks)) for n, m in module.named_modules()]


def test_attention_received_blockwise_equals_dense():
    torch.manual_seed(0)
    q, k = torch.randn(3, 50, 8), torch.randn(3, 50, 8)
    dense = torch.softmax(q @ k.transpose(-1, -2) * 0.35, dim=-1).mean(dim=(0, 1))
    for block in (1, 7, 50, 4096):
        assert torch.allclose(attention.attention_received(q, k, 0.35, block), dense, atol=1e-6)


def test_llava_onevision_scores_equal_eager_attention_pooled(models):
    model, batch = models("llava_onevision")
    cap, encoded = encode(model, batch)
    tower = model.model.vision_tower
    layer = (
        len(tower.encoder.layers) - 1
    )  # vision_feature_layer=-1: the last encoder layer feeds the projector
    assert cap.layer == layer
    keys_seen = []
    handle = tower.encoder.layers[layer].self_attn.k_proj.register_forward_hook(
        lambda mod, args, out: keys_seen.append(out)
    )
    tower.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = tower(batch["pixel_values_videos"][0], output_attentions=True)
    finally:
        tower.config._attn_implementation = "sdpa"
        handle.remove()
    frames = batch["pixel_values_videos"].shape[1]
    received = out.attentions[layer].mean(dim=(1, 2))  # [F, 729]: mean over heads and queries

    def bilinear(x):  # [F, 729, c] -> [F, 196, c], as LlavaOnevisionModel.apply_pooling
        grid = x.view(frames, 27, 27, -1).permute(0, 3, 1, 2)
        return (
            F.interpolate(grid, size=(14, 14), mode="bilinear").permute(0, 2, 3, 1).reshape(frames, 196, -1)
        )

    expected = bilinear(received.unsqueeze(-1)).squeeze(-1)
    heads = tower.config.num_attention_heads
    expected_keys = bilinear(keys_seen[0].view(frames, 729, heads, -1).mean(dim=2))
    assert len(cap.scores) == 1 and cap.scores[0].shape == encoded.feats[0].shape[:2] == (frames, 196)
    assert torch.allclose(cap.scores[0], expected, atol=1e-7, rtol=1e-5)
    assert torch.allclose(cap.keys[0], expected_keys, atol=1e-6, rtol=1e-5)


def dense_qwen_reference(model, batch):
    """Capture the scored block's attention inputs during a real encoder pass, then score densely per frame in
    the ORIGINAL token order (Qwen2.5-VL rows un-windowed at token level first)."""
    visual = model.model.visual
    full = getattr(visual, "fullatt_block_indexes", None)
    layer = max(full) if full else len(visual.blocks) - 1
    attn = visual.blocks[layer].attn
    seen = {}
    handle = attn.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.update(hidden=args[0], **kwargs), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model.model.get_video_features(
                pixel_values_videos=batch["pixel_values_videos"], video_grid_thw=batch["video_grid_thw"]
            )
    finally:
        handle.remove()
    hidden, (cos, sin) = seen["hidden"], seen["position_embeddings"]
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    s = hidden.shape[0]
    with torch.no_grad():
        q, k, _ = attn.qkv(hidden).reshape(s, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        content_keys = k.mean(dim=1)
        q, k = rope(q, k, cos, sin)
    if full:  # row r of the tower holds original token order[r]
        from transformers.vision_utils import get_vision_window_index

        window, _ = get_vision_window_index(
            batch["video_grid_thw"], visual.spatial_merge_size, visual.window_size, visual.patch_size
        )
        order = (window[:, None] * 4 + torch.arange(4)).reshape(-1)
    else:
        order = torch.arange(s)
    q_o, k_o, keys_o = (torch.empty_like(x) for x in (q, k, content_keys))
    q_o[order], k_o[order], keys_o[order] = q, k, content_keys
    t, h, w = batch["video_grid_thw"][0].tolist()
    per_frame = h * w
    scores = []
    for f in range(t):
        qf = q_o[f * per_frame : (f + 1) * per_frame].transpose(0, 1)
        kf = k_o[f * per_frame : (f + 1) * per_frame].transpose(0, 1)
        probs = torch.softmax(qf @ kf.transpose(-1, -2) * attn.scaling, dim=-1)  # [H, n, n], tiny
        scores.append(probs.mean(dim=(0, 1)))
    # merge groups are 4 consecutive rows of the original order (what the merger concatenates)
    scores = torch.stack(scores).view(t, -1, 4).mean(dim=-1)
    keys = keys_o.view(t, -1, 4, keys_o.shape[-1]).mean(dim=2)
    return layer, scores, keys


@pytest.mark.parametrize("arch", QWEN)
def test_qwen_scores_equal_dense_softmax_per_temporal_patch(models, arch):
    model, batch = models(arch)
    cap, encoded = encode(model, batch)
    layer, scores, keys = dense_qwen_reference(model, batch)
    assert cap.layer == layer
    assert len(cap.scores) == 1 and cap.scores[0].shape == encoded.feats[0].shape[:2]
    assert torch.allclose(cap.scores[0], scores, atol=1e-7, rtol=1e-5)
    assert torch.allclose(cap.keys[0], keys, atol=1e-6, rtol=1e-5)
    # attention received over one frame's tokens sums to 1 before the 4-row group mean
    assert torch.allclose(cap.scores[0].sum(dim=1) * 4, torch.ones(scores.shape[0]), atol=1e-5)


def test_qwen2_5_window_order_is_undone(models):
    # the windowed tiny grid really permutes rows, so skipping the un-permutation would change the scores
    model, batch = models("qwen2_5_vl")
    from transformers.vision_utils import get_vision_window_index

    visual = model.model.visual
    window, _ = get_vision_window_index(
        batch["video_grid_thw"], visual.spatial_merge_size, visual.window_size, visual.patch_size
    )
    assert not torch.equal(window, torch.arange(window.numel()))
    cap, _ = encode(model, batch)
    _, scores, _ = dense_qwen_reference(model, batch)
    permuted = cap.scores[0].reshape(-1)[window].view_as(scores)
    assert not torch.allclose(permuted, scores, atol=1e-6)


@pytest.mark.parametrize("arch", ("llava_onevision", *QWEN))
def test_hooks_removed_after_block_and_exception(models, arch):
    model, batch = models(arch)
    before = hooks(model)
    encode(model, batch)
    assert hooks(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with encoder.capture(get_adapter(model), model):
            assert hooks(model) != before
            raise RuntimeError("boom")
    assert hooks(model) == before


def test_visionzip_through_compress_uses_the_captured_scores(models):
    model, batch = models("qwen2_vl")
    before = hooks(model)
    with vidcom2.compress(model, method="visionzip", retention_ratio=0.5) as session:
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    cap, encoded = encode(model, batch)
    sel = vidcom2.apply("visionzip", encoded.feats[0], 0.5, scores=cap.scores[0], keys=cap.keys[0])
    assert session.samples[0].visual_tokens_out == int(sel.keep.sum())
    assert hooks(model) == before
