"""SparseVLM in the LLM on tiny random models.

- drop part (``recycle=False``): prune mode (real slicing + KV cache) equals the mask-mode reference (full sequence,
  dropped columns hidden from the layer after each pruning layer, contiguous ranks as positions);
- rater rows equal an independent computation from transformers' eager attention weights and the input embeddings;
- recycling: the recycled tokens of the first stage equal a slow loop reference of the DPC-kNN clustering applied to
  that layer's real output states (unhooked run), and cached generation equals cache-less generation (every step a
  prefill of the longer sequence; the pruning and recycling of the prompt are causal, so both must agree), which
  checks the decode positions and masks around the new tokens;
- layer counts of the schedule, keep-all, compress, restoration after exceptions.
Spec: shared/spec/baselines.md 1.3 and 6; hooks_transformers.md 5 and 7.
"""

from __future__ import annotations

import pytest
import torch

import vidcom2
from tests.vidcom2._helpers import assert_restored, assert_same_generation, left_pad, model_batches
from tests.vidcom2.methods.test_sparsevlm import slow_cluster_and_merge
from vidcom2 import get_method
from vidcom2.adapters import get_adapter
from vidcom2.methods import sparsevlm as sv
from vidcom2.stages import in_llm, masks

NEW_TOKENS = 5
LAYERS = (0, 1, 2)  # pruning_loc on a 4-layer tiny LLM: outputs of layers 0, 1, 2 are pruned


@pytest.fixture(scope="module")
def models():
    return model_batches(seed=1, question='What moves here?', text_layers=4)


def text_start(model, batch):
    video = get_adapter(model).visual_token_mask(model, batch)[0]
    return int(video.nonzero().max()) + 1


def run(model, batch, method, ratio=0.25, mode="prune", seed=0, **gen):
    adapter = get_adapter(model)
    visual = in_llm.candidates(adapter, model, batch)
    with in_llm.attach(adapter, model, method, ratio, batch, mode=mode, seed=seed) as state:
        out = model.generate(
            **batch,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **gen,
        )
    return out, state, visual, state.plan






def kv_lengths(out):
    return [layer.keys.shape[-2] for layer in out.past_key_values.layers]


def eager_reference(model, batch):
    """Unhooked eager forward: (inputs_embeds [L, D], attention weights per layer [H, L, L], hidden states)."""
    text_model = model.model.language_model
    seen = {}

    def grab(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"][0].detach().clone()

    handle = text_model.register_forward_pre_hook(grab, with_kwargs=True)
    text_model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = model(**batch, output_attentions=True, output_hidden_states=True)
    finally:
        text_model.config._attn_implementation = "sdpa"
        handle.remove()
    return seen["embeds"], [a[0] for a in out.attentions], out.hidden_states


def reference_raters(embeds, visual, start, prompt_len):
    """Independent: float64 softmax over the text tokens of V T^T, mean over V, raters above the mean."""
    v, t = embeds[visual].double(), embeds[start:prompt_len].double()
    rel = torch.softmax(v @ t.T, dim=1).mean(dim=0)
    return (rel > rel.mean()).nonzero().squeeze(1) + start


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl", "qwen3_vl"])
def test_drop_part_prune_equals_mask_mode(models, arch):
    # qwen3_vl: pruning after layer 0 exercises the DeepStack gather (levels added after layers 0 and 1)
    model, batch = models(arch)
    method = get_method("sparsevlm", layers=LAYERS, recycle=False)
    pruned, state, visual, plan = run(model, batch, method)
    masked, _, _, _ = run(model, batch, method, mode="mask")
    assert_same_generation(pruned, masked)
    n, prompt = int(visual.sum()), batch["input_ids"].shape[1]
    keeps = [s.keep for s in plan.stages]
    assert keeps[-1] == vidcom2.budget.count(0.25, n)
    assert state.visual_per_layer == [n] + keeps
    assert kv_lengths(pruned) == [prompt - n + c + NEW_TOKENS - 1 for c in state.visual_per_layer]
    assert set(state.keep[3].tolist()) <= set(state.keep[2].tolist()) <= set(state.keep[1].tolist())
    assert state.position_mode == "contiguous"
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_drop_part_left_padding(models, arch):
    # a padded prompt materialises 4-D masks: rows/columns sliced in prefill, columns gathered in decode
    model, batch = models(arch)
    padded = left_pad(batch, 3)
    method = get_method("sparsevlm", layers=LAYERS, recycle=False)
    pruned, _, _, _ = run(model, padded, method)
    masked, _, _, _ = run(model, padded, method, mode="mask")
    assert_same_generation(pruned, masked)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_rater_rows_equal_eager_attention(models, arch):
    model, batch = models(arch)
    with torch.no_grad():
        _, state, visual, _ = run(model, batch, get_method("sparsevlm", layers=(1, 2)))
    embeds, attentions, _ = eager_reference(model, batch)
    raters = reference_raters(embeds, visual, text_start(model, batch), batch["input_ids"].shape[1])
    assert raters.numel() > 0 and torch.equal(state.scoring["raters"], raters)
    # layer 1 runs on the unpruned sequence: its rater rows are the eager rows, mean over heads then raters
    want = attentions[1][:, raters].mean(dim=0).mean(dim=0)
    assert torch.allclose(state.rows[2], want.float(), atol=1e-6, rtol=1e-5)
    assert abs(state.rows[2].sum().item() - 1) < 1e-5


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_recycled_tokens_equal_slow_reference_on_the_layer_output(models, arch):
    model, batch = models(arch)
    seed = 3
    with torch.no_grad():
        _, state, visual, plan = run(model, batch, get_method("sparsevlm", layers=(1, 2)), seed=seed)
    embeds, attentions, hidden = eager_reference(model, batch)
    raters = reference_raters(embeds, visual, text_start(model, batch), batch["input_ids"].shape[1])
    cand = visual.nonzero().squeeze(1)
    score = attentions[1][:, raters].mean(dim=0).mean(dim=0)[cand].double()
    k = plan.stages[0].keep
    order = sorted(range(cand.numel()), key=lambda i: (-score[i].item(), i))
    kept = sorted(order[:k])
    pruned = [i for i in range(cand.numel()) if i not in set(kept)]
    n_src = int(len(pruned) * 0.3) + 1
    src = sorted(range(len(pruned)), key=lambda j: (-score[pruned[j]].item(), j))[:n_src]
    sources = cand[[pruned[j] for j in src]]
    centres = int(n_src / 10) + 1
    assert plan.stages[0].recycled == centres
    got = state.recycled[2]
    # the same recycling sources; as a set, because two candidates can tie exactly in the eager fp32 reference while
    # the project's attention path puts one of them an ulp lower, swapping two adjacent sources (merge unaffected)
    assert sorted(got["sources"].tolist()) == sorted(sources.tolist())
    x = hidden[2][0, got["sources"]]  # output of layer 1 = input of layer 2, in the project's source order
    noise = torch.rand(n_src, generator=torch.Generator().manual_seed(seed))  # the first draw of the prefill
    want = slow_cluster_and_merge(x, centres, noise)
    assert torch.allclose(got["centres"].double(), want, atol=1e-5)
    # the new tokens sit right after the last kept candidate, in the sequence entering layer 2
    seq, prompt = state.keep[2], batch["input_ids"].shape[1]
    new = (seq >= prompt).nonzero().squeeze(1)
    assert new.numel() == centres and torch.equal(new, torch.arange(new[0], new[0] + centres))
    last_kept = int(cand[kept[-1]])
    assert int(seq[new[0] - 1]) == last_kept


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl", "qwen3_vl"])
def test_recycling_cached_equals_cacheless(models, arch):
    model, batch = models(arch)
    method = get_method("sparsevlm", layers=LAYERS)
    cached, state, visual, plan = run(model, batch, method)
    cacheless, _, _, _ = run(model, batch, method, use_cache=False)
    assert_same_generation(cached, cacheless)
    n, prompt = int(visual.sum()), batch["input_ids"].shape[1]
    after = [s.keep + s.recycled for s in plan.stages]
    assert after[-1] == vidcom2.budget.count(0.25, n)
    assert state.visual_per_layer == [n] + after
    assert kv_lengths(cached) == [prompt - n + c + NEW_TOKENS - 1 for c in state.visual_per_layer]
    assert sorted(state.recycled) == [1, 2, 3]
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_recycling_with_left_padding_cached_equals_cacheless(models, arch):
    # new tokens in a materialised 4-D mask: rebuilt in prefill, read as a non-padding column in decode
    model, batch = models(arch)
    padded = left_pad(batch, 2)
    method = get_method("sparsevlm", layers=LAYERS)
    cached, _, _, _ = run(model, padded, method)
    cacheless, _, _, _ = run(model, padded, method, use_cache=False)
    assert_same_generation(cached, cacheless)


def test_new_token_mask_matches_the_parent_mask_without_new_tokens():
    # without new ids the rebuilt mask equals the sliced parent mask on every non-padding query row
    n, pad = 7, 2
    ar = torch.arange(n)
    parent = ((ar.view(1, -1) <= ar.view(-1, 1)) & (ar.view(1, -1) >= pad)).view(1, 1, n, n)
    ids = torch.tensor([0, 1, 2, 4, 6])
    rebuilt = masks.with_new_tokens(parent, torch.cat([ids, torch.tensor([n])]), n)
    sliced = masks.take(parent, ids, ids)
    valid_rows = ids >= pad
    assert torch.equal(rebuilt[0, 0, :5, :5][valid_rows], sliced[0, 0][valid_rows])
    assert bool(rebuilt[0, 0, 5, 2:].all()) and not bool(rebuilt[0, 0, 5, :2].any())  # the new token
    additive = torch.zeros(parent.shape).masked_fill(~parent, torch.finfo(torch.float32).min)
    rebuilt_add = masks.with_new_tokens(additive, torch.cat([ids, torch.tensor([n])]), n)
    assert torch.equal(rebuilt_add == 0, rebuilt)


def test_keep_all_equals_unhooked(models):
    model, batch = models("qwen2_vl")
    pruned, state, visual, _ = run(model, batch, get_method("sparsevlm", layers=LAYERS), ratio=1.0)
    plain = model.generate(
        **batch, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    assert_same_generation(pruned, plain, tol=1e-6)
    assert state.visual_per_layer == [int(visual.sum())] * 4 and not state.recycled


def test_layer_avg_mode_and_compress_records_the_counts(models):
    model, batch = models("llava_onevision")
    method = get_method("sparsevlm", layers=LAYERS, budget_mode="layer_avg")
    with vidcom2.compress(
        model, method="sparsevlm", retention_ratio=0.5, layers=LAYERS, budget_mode="layer_avg"
    ) as s:
        via = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
    direct, state, visual, _ = run(model, batch, method, ratio=0.5)
    assert torch.equal(via, direct.sequences)
    n = int(visual.sum())
    sample = s.samples[0]
    assert sample.visual_tokens_in == n
    assert sample.visual_tokens_out == state.visual_per_layer[-1]
    assert sample.visual_tokens_layer_avg == sum(state.visual_per_layer) / 4
    assert sample.visual_tokens_layer_avg <= 0.5 * n and 0.5 * n - sample.visual_tokens_layer_avg < 0.02 * n
    assert state.visual_per_layer == sv.layer_counts(state.plan.hparams["fraction"], n, 4, LAYERS, True)
    assert_restored(model)


def test_refusals_and_restoration_after_exception(models):
    model, batch = models("qwen3_vl")
    adapter = get_adapter(model)
    text_model, layers = adapter.text_model(model), adapter.decoder_layers(model)
    method = get_method("sparsevlm", layers=LAYERS)
    with pytest.raises(ValueError, match="recycle=False"):
        with in_llm.attach(adapter, model, method, 0.25, batch, mode="mask"):
            pass
    with pytest.raises(ValueError, match="contiguous"):
        with in_llm.attach(adapter, model, method, 0.25, batch, position_mode="original"):
            pass
    with pytest.raises(ValueError, match="layers"):
        in_llm.plan_for(get_method("sparsevlm"), 0.25, 4, 100, mrope=True)  # default 2/6/15 on 4 layers
    with pytest.raises(RuntimeError, match="boom"):
        with in_llm.attach(adapter, model, method, 0.25, batch):
            assert text_model.config._attn_implementation == "vidcom2_in_llm_sdpa"
            assert layers[1]._forward_pre_hooks and in_llm.dispatcher_routes()[0] > 0
            raise RuntimeError("boom")
    assert_restored(model)


# ---------------------------------------------------------------------------------------------------------------
# v2 (SparseVLM+): gravity-corrected scores from the heads with the most rater->visual mass, original positions


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_v2_prune_equals_mask_mode(models, arch):
    model, batch = models(arch)
    method = get_method("sparsevlm", layers=LAYERS, version=2, heads=2)
    pruned, state, visual, plan = run(model, batch, method)
    masked, _, _, _ = run(model, batch, method, mode="mask")
    assert_same_generation(pruned, masked)
    assert state.position_mode == "original" and not state.recycled
    assert [s.recycled for s in plan.stages] == [0, 0, 0]
    assert state.visual_per_layer[-1] == vidcom2.budget.count(0.25, int(visual.sum()))
    assert_restored(model)


def test_v2_score_equals_independent_gravity_and_head_selection(models):
    # LLaVA-OV's 1-D RoPE: all-ones q/k after RoPE at positions i, j give 2 * sum_k cos((i - j) theta_k) / sqrt(d)
    model, batch = models("llava_onevision")
    with torch.no_grad():
        _, state, visual, _ = run(model, batch, get_method("sparsevlm", layers=(1, 2), version=2, heads=2))
    embeds, attentions, _ = eager_reference(model, batch)
    raters = reference_raters(embeds, visual, text_start(model, batch), batch["input_ids"].shape[1])
    assert torch.equal(state.scoring["raters"], raters)
    config = model.model.language_model.config
    d = config.hidden_size // config.num_attention_heads
    theta = config.rope_parameters["rope_theta"] ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    pos = torch.arange(embeds.shape[0], dtype=torch.float64)
    delta = pos[raters].view(-1, 1, 1) - pos.view(1, -1, 1)
    grav = 2 * torch.cos(delta * theta).sum(-1) / d**0.5  # [R, L]
    probs = attentions[1][:, raters].double()  # [H, R, L]
    corrected = torch.where(probs == 0, probs, probs / grav)
    mass = corrected[:, :, visual].sum(dim=(1, 2))
    top = torch.topk(mass, 2).indices
    want = corrected[top].mean(dim=0).mean(dim=0)
    assert torch.allclose(state.rows[2].double(), want, atol=1e-5, rtol=1e-4)


def test_v2_refuses_recycling(models):
    with pytest.raises(ValueError, match="does not recycle"):
        in_llm.plan_for(get_method("sparsevlm", version=2, recycle=True), 0.25, 28, 100, mrope=False)
    with pytest.raises(ValueError, match="version"):
        in_llm.plan_for(get_method("sparsevlm", version=3), 0.25, 28, 100, mrope=False)
    plan = in_llm.plan_for(get_method("sparsevlm", version=2), 0.25, 28, 1000, mrope=False)
    # v2 shape [300, 200, 118] scaled: 0.25 * 300/118 and 0.25 * 200/118 of N, then 0.25 of N, nothing recycled
    assert [s.keep for s in plan.stages] == [
        vidcom2.budget.count(0.25 * 300 / 118, 1000),
        vidcom2.budget.count(0.25 * 200 / 118, 1000),
        250,
    ]
    assert [s.layer for s in plan.stages] == [3, 7, 16] and plan.position_mode == "original"
