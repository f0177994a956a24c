"""DyCoke stage 2 (decode-time dynamic KV pruning) on tiny random models.

- prune mode (the selected cache columns gathered on read at layers >= L_d) equals the mask-mode reference (full
  cache read, the unselected visual columns masked for that step), with steps that prune, steps that read the full
  cache (official) and steps that reuse the last selection (``reuse=True``);
- a threshold no step reaches below reads the full cache every step: the unhooked model, exactly;
- each step's row equals transformers' eager attention of layer ``L_d - 1`` in a teacher-forced full forward
  (rows of layers < L_d never see the pruning), and the selection is its top ``int(n (1 - P))`` visual columns;
- ``dycoke`` through ``vidcom2.compress``: TTM as ``dycoke_ttm``, stage 2 on top, everything restored.
Spec: shared/spec/baselines.md 8.2; hooks_transformers.md 5.1.
"""

from __future__ import annotations

import statistics

import pytest
import torch

import vidcom2
from tests.vidcom2._helpers import assert_restored, assert_same_generation, left_pad, model_batches
from vidcom2.adapters import get_adapter
from vidcom2.methods.dycoke import CosinePolicy
from vidcom2.stages import decode, in_llm
from vidcom2.types import DecodeStage

NEW_TOKENS = 8
L_D = 2  # rows from layer 1, reads of layers 2 and 3 pruned (4-layer tiny LLM)
P = 0.7


@pytest.fixture(scope="module")
def models():
    return model_batches(seed=2, question='What is shown?', text_layers=4)


def span(model, batch, off_by_one=True):
    adapter = get_adapter(model)
    return decode.span_of(in_llm.candidates(adapter, model, batch), off_by_one)


def dycoke(threshold=0.9, reuse=False, **hparams):
    return vidcom2.get_method(
        "dycoke", stage2_layer=L_D, stage2_prune=P, stage2_threshold=threshold, stage2_reuse=reuse, **hparams
    )


def run(model, batch, threshold, reuse=False, mode="prune", **gen):
    """generate() under `decode.attach` (DyCoke's decode stage on the uncompressed prompt); (output, state)."""
    with decode.attach(get_adapter(model), model, dycoke(threshold, reuse), 1.0, batch, mode=mode) as state:
        out = model.generate(
            **batch,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **gen,
        )
    return out, state


def unhooked(model, batch):
    return model.generate(
        **batch, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )






# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
@pytest.mark.parametrize("reuse", [False, True])
def test_prune_equals_mask_mode_with_mixed_steps(models, arch, reuse):
    model, batch = models(arch)
    _, probe = run(model, batch, threshold=2.0)  # every step prunes: collect the similarities
    threshold = statistics.median(probe.notes[1:])
    pruned, state = run(model, batch, threshold, reuse=reuse)
    masked, ref_state = run(model, batch, threshold, reuse=reuse, mode="mask")
    assert_same_generation(pruned, masked)
    steps = NEW_TOKENS - 1  # the first token comes from the prefill
    assert len(state.selected) == steps and state.notes[0] == 0.0
    assert [s is None for s in state.selected] == [s is None for s in ref_state.selected]
    fresh = [sim < threshold for sim in state.notes]
    assert any(fresh) and not all(fresh)  # both kinds of steps happened
    n = span(model, batch).numel()
    for sim, sel in zip(state.notes, state.selected):
        if sim < threshold or reuse:
            assert sel.numel() == int(n * (1 - P))
        else:
            assert sel is None  # official: the full cache when the attention is stable
    # the cache itself is never shrunk
    prompt = batch["input_ids"].shape[1]
    assert all(layer.keys.shape[-2] == prompt + steps for layer in pruned.past_key_values.layers)
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_left_padding_gathers_mask_columns(models, arch):
    model, batch = models(arch)
    padded = left_pad(batch, 3)
    pruned, _ = run(model, padded, threshold=2.0)
    masked, _ = run(model, padded, threshold=2.0, mode="mask")
    assert_same_generation(pruned, masked)


def test_never_pruning_is_the_unhooked_model(models):
    model, batch = models("llava_onevision")
    out, state = run(model, batch, threshold=-1.0)  # cos >= -1 always, even the first step's 0
    assert all(s is None for s in state.selected)
    assert_same_generation(out, unhooked(model, batch), tol=0)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_rows_equal_eager_attention_and_selection_is_their_top(models, arch):
    model, batch = models(arch)
    with torch.no_grad():
        out, state = run(model, batch, threshold=2.0)
    prompt = batch["input_ids"].shape[1]
    seq = out.sequences[:, : prompt + NEW_TOKENS - 1]
    full = dict(batch, input_ids=seq, attention_mask=torch.ones_like(seq))
    if "mm_token_type_ids" in batch:
        extra = torch.zeros((1, seq.shape[1] - prompt), dtype=batch["mm_token_type_ids"].dtype)
        full["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], extra], dim=1)
    text_model = model.model.language_model
    text_model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            attn = model(**full, output_attentions=True).attentions[L_D - 1][0]
    finally:
        text_model.config._attn_implementation = "sdpa"
    cols = span(model, batch)
    k = int(cols.numel() * (1 - P))
    for t, (row, sel) in enumerate(zip(state.rows, state.selected)):
        want = attn[:, prompt + t, : prompt + t + 1].mean(dim=0)[cols].float()
        assert torch.allclose(row, want, atol=1e-6, rtol=1e-5), t
        top = torch.sort(cols[torch.topk(want, k).indices]).values
        assert torch.equal(sel, top), t


def test_span_leaves_out_the_last_token_like_the_official_code(models):
    model, batch = models("llava_onevision")
    adapter = get_adapter(model)
    cand = in_llm.candidates(adapter, model, batch).nonzero().squeeze(1)
    assert torch.equal(decode.span_of(in_llm.candidates(adapter, model, batch), True), cand[:-1])
    assert torch.equal(decode.span_of(in_llm.candidates(adapter, model, batch), False), cand)


def test_dycoke_through_compress(models):
    model, batch = models("llava_onevision")
    gen = dict(max_new_tokens=NEW_TOKENS, do_sample=False)
    with vidcom2.compress(model, method="dycoke_ttm", retention_ratio=0.75) as ttm:
        ttm_out = model.generate(**batch, **gen)
    with vidcom2.compress(model, method="dycoke", retention_ratio=0.75, stage2=False) as off:
        off_out = model.generate(**batch, **gen)
    with vidcom2.compress(model, method="dycoke", retention_ratio=0.75, stage2_threshold=-1.0) as stable:
        stable_out = model.generate(**batch, **gen)
    assert torch.equal(off_out, ttm_out) and torch.equal(stable_out, ttm_out)
    with vidcom2.compress(model, method="dycoke", retention_ratio=0.75, stage2_threshold=2.0) as full:
        full_out = model.generate(**batch, **gen)
    assert full_out.shape == ttm_out.shape
    for session in (off, stable, full):
        assert session.samples[0].visual_tokens_out == ttm.samples[0].visual_tokens_out
    assert_restored(model)
    assert "generate" not in vars(model)


def test_refusals_and_restoration_after_exception(models):
    model, batch = models("qwen2_vl")
    adapter = get_adapter(model)
    text_model = adapter.text_model(model)
    with pytest.raises(ValueError, match="stage2_layer"):
        with decode.attach(adapter, model, vidcom2.get_method("dycoke", stage2_layer=4), 1.0, batch):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with decode.attach(adapter, model, dycoke(), 1.0, batch):
            assert text_model.config._attn_implementation == "vidcom2_in_llm_sdpa"
            assert in_llm.dispatcher_routes() == (1, 2)
            raise RuntimeError("boom")
    assert_restored(model)
    two = {k: torch.cat([v, v]) if k in ("input_ids", "attention_mask") else v for k, v in batch.items()}
    method = vidcom2.get_method("dycoke")
    with pytest.raises(ValueError, match="batch size 1"):
        decode.generate(adapter, model, model.generate, two, method, 1.0)


def test_compress_dycoke_equals_ttm_plus_mask_mode_stage2_on_the_shrunk_prompt(models):
    # independent composition: dycoke_ttm's compressed prompt (LLaVA-OV: prefix, T TTM tokens, newline, suffix) with
    # the mask-mode stage 2 on the span of its first T - 1 video tokens (the official off-by-one)
    model, batch = models("llava_onevision")
    gen = dict(max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with vidcom2.compress(
        model, method="dycoke", retention_ratio=0.75, stage2_threshold=2.0, stage2_layer=L_D
    ) as s:
        got = model.generate(**batch, **gen)
    start = int((batch["input_ids"][0] == model.config.video_token_id).nonzero()[0])
    kept = s.samples[0].visual_tokens_out
    cols = torch.arange(start, start + kept - 1)
    adapter = get_adapter(model)
    text_model, layers = adapter.text_model(model), adapter.decoder_layers(model)
    stage = DecodeStage(L_D, CosinePolicy(prune=0.7, threshold=2.0))  # dycoke's default P
    with decode.decode_pruning(text_model, layers, cols, stage, mode="mask") as state:
        with vidcom2.compress(model, method="dycoke_ttm", retention_ratio=0.75):
            want = model.generate(**batch, **gen)
    assert len(state.selected) == NEW_TOKENS - 1 and all(sel is not None for sel in state.selected)
    assert_same_generation(got, want)
    assert_restored(model)
