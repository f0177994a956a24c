"""In-LLM pruning (FastV, PDrop) on tiny random models: prune mode (real slicing + KV cache) against the mask-mode
reference (full sequence, dropped columns hidden from the pruning layer on), keep-all against the unhooked model,
the recorded attention rows against transformers' eager attention, caches, schedules and clean restoration.
Spec: shared/spec/hooks_transformers.md sections 5 and 7; baselines.md 1, 4, 5."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from tests.vidcom2._helpers import assert_restored, assert_same_generation, model_batches
from vidcom2 import get_method
from vidcom2.adapters import get_adapter
from vidcom2.budget import count
from vidcom2.measure import Recorder
from vidcom2.stages import attention, in_llm

NEW_TOKENS = 6
PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids")
ARCHS = ("llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


@pytest.fixture(scope="module")
def models():
    return model_batches(seed=1, question='What moves?', text_layers=4)


def run(model, batch, method, ratio, mode="prune", **options):
    """generate() under `in_llm.attach`; returns (output, state, candidate mask)."""
    adapter = get_adapter(model)
    visual = in_llm.candidates(adapter, model, batch)
    with in_llm.attach(adapter, model, method, ratio, batch, mode=mode, **options) as state:
        out = model.generate(
            **batch,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,  # a random model may emit EOS early; the KV-length checks count every step
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out, state, visual


def unhooked(model, batch):
    return model.generate(
        **batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
        return_dict_in_generate=True,
    )


def kv_lengths(out):
    return [layer.keys.shape[-2] for layer in out.past_key_values.layers]






# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("k", [2, 3])
def test_fastv_prune_equals_mask_mode(models, arch, k):
    model, batch = models(arch)
    method = get_method("fastv", prune_layer=k)
    pruned, state, visual = run(model, batch, method, 0.25)
    masked, _, _ = run(model, batch, method, 0.25, mode="mask")
    assert_same_generation(pruned, masked)
    # the pruned run really sliced: layers < K hold the full prompt, layers >= K the survivors
    prompt, n_vis = batch["input_ids"].shape[1], int(visual.sum())
    kept = count(0.25, n_vis)
    short = prompt - n_vis + kept
    assert kv_lengths(pruned) == [prompt + NEW_TOKENS - 1] * k + [short + NEW_TOKENS - 1] * (4 - k)
    assert kv_lengths(masked) == [prompt + NEW_TOKENS - 1] * 4
    assert state.visual_per_layer == [n_vis] * k + [kept] * (4 - k)
    # survivors: every non-candidate column (text, LLaVA newline) plus exactly `kept` candidates, sorted
    survivors = state.keep[k]
    assert torch.equal(survivors, torch.sort(survivors).values)
    assert int(visual[survivors].sum()) == kept
    assert torch.equal(survivors[~visual[survivors]], (~visual).nonzero().squeeze(1))
    assert_restored(model)


def test_fastv_deepstack_gathered_when_pruning_before_last_level(models):
    # tiny Qwen3-VL adds DeepStack levels after layers 0 and 1: pruning before layer 1 exercises the gather
    model, batch = models("qwen3_vl")
    method = get_method("fastv", prune_layer=1)
    pruned, _, _ = run(model, batch, method, 0.3)
    masked, _, _ = run(model, batch, method, 0.3, mode="mask")
    assert_same_generation(pruned, masked)
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_fastv_left_padding_materialised_mask(models, arch):
    # a padded prompt makes the mask 4-D in prefill and decode: rows/columns sliced, decode columns gathered
    model, batch = models(arch)
    pad = 3
    padded = dict(batch)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in batch:
            fill = 0
            padded[key] = torch.cat([torch.full((1, pad), fill, dtype=batch[key].dtype), batch[key]], dim=1)
    method = get_method("fastv", prune_layer=2)
    pruned, _, _ = run(model, padded, method, 0.25)
    masked, _, _ = run(model, padded, method, 0.25, mode="mask")
    assert_same_generation(pruned, masked)


@pytest.mark.parametrize("arch", ARCHS)
def test_pdrop_prune_equals_mask_mode_and_stage_counts(models, arch):
    model, batch = models(arch)
    method = get_method("pdrop")  # quarter depth of 4 layers: stages before layers 1, 2, 3
    pruned, state, visual = run(model, batch, method, 0.25)
    masked, _, _ = run(model, batch, method, 0.25, mode="mask")
    assert_same_generation(pruned, masked)
    n_vis, prompt = int(visual.sum()), batch["input_ids"].shape[1]
    lam = 0.25 ** (1 / 3)
    expected = [n_vis, count(lam, n_vis), count(lam**2, n_vis), count(0.25, n_vis)]
    assert state.visual_per_layer == expected
    assert kv_lengths(pruned) == [prompt - n_vis + e + NEW_TOKENS - 1 for e in expected]
    # nested survivors, each stage choosing among the previous one's
    assert set(state.keep[2].tolist()) <= set(state.keep[1].tolist())
    assert set(state.keep[3].tolist()) <= set(state.keep[2].tolist())
    assert state.position_mode == ("contiguous" if arch == "llava_onevision" else "original")
    mrope = get_adapter(model).mrope
    assert in_llm.plan_for(method, 0.25, 4, n_vis, mrope=mrope).position_mode == state.position_mode
    assert in_llm.plan_for(get_method("fastv"), 0.25, 4, n_vis, mrope=mrope).position_mode == "original"
    assert_restored(model)


def test_pdrop_quarter_depth_schedule_on_eight_layers(models):
    model, batch = models("llava_onevision", text_layers=8)
    _, state, visual = run(model, batch, get_method("pdrop"), 0.35)
    n = int(visual.sum())
    lam = 0.35 ** (1 / 3)
    # boundaries round(8 * [1/4, 1/2, 3/4]) = [2, 4, 6]
    stages = [n, count(lam, n), count(lam**2, n), count(0.35, n)]
    assert state.visual_per_layer == [stages[0]] * 2 + [stages[1]] * 2 + [stages[2]] * 2 + [stages[3]] * 2
    avg = sum(state.visual_per_layer) / (8 * n)
    assert abs(avg - (2 + 2 * lam + 2 * lam**2 + 2 * 0.35) / 8) < 2 / n


def test_pdrop_contiguous_positions_on_qwen_match_mask_mode(models):
    # the contiguous rule on an M-RoPE model (all three axes renumbered) is still exact against its reference
    model, batch = models("qwen2_vl")
    method = get_method("pdrop")
    pruned, _, _ = run(model, batch, method, 0.25, position_mode="contiguous")
    masked, _, _ = run(model, batch, method, 0.25, mode="mask", position_mode="contiguous")
    assert_same_generation(pruned, masked)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_5_vl"])
@pytest.mark.parametrize("name", ["fastv", "pdrop"])
@pytest.mark.parametrize("impl, use_cache", [("eager", True), ("sdpa", False)])
def test_eager_backend_and_cacheless_generation(models, arch, name, impl, use_cache):
    # eager: float additive masks are sliced / extended; no cache: every forward is a prefill of the longer prompt
    model, batch = models(arch)
    text_model = model.model.language_model
    text_model.config._attn_implementation = impl
    try:
        options = dict(use_cache=use_cache)
        pruned, _, _ = run(model, dict(batch, **options), get_method(name), 0.25)
        masked, _, _ = run(model, dict(batch, **options), get_method(name), 0.25, mode="mask")
        assert text_model.config._attn_implementation == impl
    finally:
        text_model.config._attn_implementation = "sdpa"
    assert_same_generation(pruned, masked)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", ["fastv", "pdrop"])
def test_keep_all_equals_unhooked(models, arch, name):
    model, batch = models(arch)
    pruned, state, visual = run(model, batch, get_method(name), 1.0)
    reference = unhooked(model, batch)
    assert_same_generation(pruned, reference, tol=1e-6)
    assert state.visual_per_layer == [int(visual.sum())] * 4


def eager_last_rows(model, batch):
    """Independent reference: transformers' eager attention weights of every text layer, last query, head mean."""
    text_model = model.model.language_model
    forward = {k: v for k, v in batch.items()}
    text_model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = model(**forward, output_attentions=True)
    finally:
        text_model.config._attn_implementation = "sdpa"
    return [a[0, :, -1, :].mean(dim=0) for a in out.attentions]


@pytest.mark.parametrize("arch", ARCHS)
def test_fastv_recorded_row_equals_eager_attention(models, arch):
    model, batch = models(arch)
    with torch.no_grad():
        _, state, _ = run(model, batch, get_method("fastv", prune_layer=3), 0.25)
    rows = eager_last_rows(model, batch)
    recorded = state.rows[3]
    assert recorded.shape == rows[2].shape
    assert torch.allclose(recorded, rows[2].float(), atol=1e-6, rtol=1e-5)
    assert abs(recorded.sum().item() - 1) < 1e-5


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen3_vl"])
def test_pdrop_first_stage_row_equals_eager_attention_of_that_layer(models, arch):
    # nothing is pruned before the first stage, so the row recomputed with layer l1's own norm/q/k(+q_norm/k_norm)
    # and RoPE must equal that layer's real attention row in an unhooked run
    model, batch = models(arch)
    with torch.no_grad():
        _, state, _ = run(model, batch, get_method("pdrop"), 0.25)
    rows = eager_last_rows(model, batch)
    assert torch.allclose(state.rows[1], rows[1].float(), atol=1e-6, rtol=1e-5)


def test_last_row_handles_gqa_and_masks():
    torch.manual_seed(0)
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8)
    probs = torch.softmax((q @ k.repeat_interleave(2, dim=1).transpose(-1, -2)) * 0.3, dim=-1)
    dense = probs[0, :, -1].mean(dim=0)
    assert torch.allclose(attention.last_row(q, k, 0.3, None), dense, atol=1e-6)
    hide = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    hide[..., 1] = False
    masked = attention.last_row(q, k, 0.3, hide)
    assert masked[1] == 0 and abs(masked.sum().item() - 1) < 1e-6
    additive = torch.zeros(1, 1, 5, 5).masked_fill(~hide, torch.finfo(torch.float32).min)
    assert torch.allclose(attention.last_row(q, k, 0.3, additive), masked, atol=1e-6)


def test_restored_after_exception(models):
    model, batch = models("qwen3_vl")
    adapter = get_adapter(model)
    text_model, layers = adapter.text_model(model), adapter.decoder_layers(model)
    with pytest.raises(RuntimeError, match="boom"):
        with in_llm.attach(adapter, model, get_method("fastv", prune_layer=1), 0.25, batch):
            assert text_model.config._attn_implementation == "vidcom2_in_llm_sdpa"
            assert "_deepstack_process" in vars(text_model)
            assert layers[1]._forward_pre_hooks and in_llm.dispatcher_routes()[0] > 0
            raise RuntimeError("boom")
    assert_restored(model)
    # and the model is the model it was
    assert_same_generation(unhooked(model, batch), unhooked(model, batch), tol=0)


def test_generate_entry_point_notes_counts_on_the_recorder(models):
    model, batch = models("llava_onevision")
    adapter = get_adapter(model)
    rec = Recorder()
    kwargs = dict(batch, max_new_tokens=3, do_sample=False)
    out = in_llm.generate(adapter, model, model.generate, kwargs, get_method("fastv"), 0.5, rec)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3
    n = 4 * 196  # the video newline is never a candidate
    assert rec.fields == {
        "visual_tokens_out": count(0.5, n),
        "visual_tokens_layer_avg": (2 * n + 2 * 392) / 4,
        "visual_tokens_per_layer": [(n, n, 392, 392)],  # K=2 of 4 layers; one row
    }
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen3_vl"])
def test_candidates_without_pixels_match_the_slots(models, arch):
    # compress hands generate() a prompt rebuilt around mm_encoder_outputs (no pixels): same candidates
    model, batch = models(arch)
    adapter = get_adapter(model)
    with_slots = in_llm.candidates(adapter, model, batch)
    no_pixels = {k: v for k, v in batch.items() if k not in adapter.encoder_inputs}
    assert torch.equal(in_llm.candidates(adapter, model, no_pixels), with_slots)
    video = adapter.visual_token_mask(model, batch)[0]
    assert int(video.sum()) - int(with_slots.sum()) == (1 if arch == "llava_onevision" else 0)
    # slots of another layout of the prompt (e.g. before compress dropped left padding) are not trusted
    shifted = {
        k: torch.cat([torch.zeros_like(v[:, :2]), v], dim=1) for k, v in no_pixels.items() if k in PER_TOKEN
    }
    slots = adapter.video_slots(model, batch)
    expected = torch.cat([torch.zeros(2, dtype=torch.bool), with_slots])
    assert torch.equal(in_llm.candidates(adapter, model, dict(no_pixels, **shifted), slots), expected)


@pytest.mark.parametrize("name", ["fastv", "pdrop"])
def test_through_compress_equals_direct_pruning(models, name):
    # LLaVA-OV keep-all rebuild = the processor prompt, so compress(in-LLM) must equal pruning() on raw inputs
    model, batch = models("llava_onevision")
    with vidcom2.compress(model, method=name, retention_ratio=0.25) as session:
        via = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
    direct, state, visual = run(model, batch, get_method(name), 0.25)
    assert torch.equal(via, direct.sequences)
    sample = session.samples[0]
    assert sample.visual_tokens_in == int(visual.sum())
    assert sample.visual_tokens_out == state.visual_per_layer[-1]
    assert sample.visual_tokens_layer_avg == sum(state.visual_per_layer) / 4
    assert sample.visual_tokens_per_layer == tuple(state.visual_per_layer)
    assert_restored(model)


def test_refuses_batches_and_static_caches(models):
    model, batch = models("llava_onevision")
    adapter = get_adapter(model)
    two = {
        k: torch.cat([v, v]) if k in ("input_ids", "attention_mask", "pixel_values_videos") else v
        for k, v in batch.items()
    }
    with pytest.raises(ValueError, match="batch size 1"):
        in_llm.generate(adapter, model, model.generate, two, get_method("fastv"), 0.5)
    with pytest.raises(ValueError, match="DynamicCache"):
        in_llm.generate(
            adapter,
            model,
            model.generate,
            dict(batch, cache_implementation="static"),
            get_method("fastv"),
            0.5,
        )
    with pytest.raises(ValueError, match="prune_layer"):
        in_llm.plan_for(get_method("fastv", prune_layer=4), 0.5, 4, 10, mrope=False)
    with pytest.raises(ValueError, match="floor"):
        in_llm.plan_for(get_method("fastv", budget_mode="layer_avg"), 0.3, 4, 10, mrope=False)
    assert_restored(model)


def test_layer_avg_budget_mode_hits_the_target(models):
    model, batch = models("llava_onevision")
    _, state, visual = run(model, batch, get_method("fastv", budget_mode="layer_avg"), 0.75)
    n = int(visual.sum())
    assert abs(sum(state.visual_per_layer) / (4 * n) - 0.75) <= 1 / n
