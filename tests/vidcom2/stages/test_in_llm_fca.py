"""FCA inside the LLM (paper Figure 5): FastV and SparseVLM with ``budget=fca`` (and ``uniform``) select per frame.

Prune mode against the mask-mode reference as for the global methods; the per-frame counts against the float64 loop
reference of VidCom2's budgets (tests/vidcom2/reference.py) on the pre-LLM features the LLM received, and the kept
tokens of each frame against that frame's top attention scores, computed here with torch.topk."""

from __future__ import annotations

import pytest
import torch

from tests.vidcom2 import reference as ref
from tests.vidcom2._helpers import assert_restored, assert_same_generation, model_batches
from vidcom2 import get_method
from vidcom2.adapters import get_adapter
from vidcom2.measure import Recorder
from vidcom2.stages import in_llm

NEW_TOKENS = 4


@pytest.fixture(scope="module")
def models():
    return model_batches(seed=1, question="What moves?", text_layers=4)


def run(model, batch, method, ratio, mode="prune"):
    """generate() under ``pruning`` with the video's frame columns; returns (output, state, visual, columns, embeds)."""
    adapter = get_adapter(model)
    text_model = adapter.text_model(model)
    visual = in_llm.candidates(adapter, model, batch)
    columns = adapter.video_slots(model, batch)[0].columns
    seen = []
    hook = text_model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True)
    try:
        with in_llm.attach(adapter, model, method, ratio, batch, mode=mode) as state:
            out = model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True)  # fmt: skip
    finally:
        hook.remove()
    return out, state, visual, columns, seen[0]


def per_frame(ids: torch.Tensor, columns: torch.Tensor) -> list[int]:
    return [int(torch.isin(columns[t], ids).sum()) for t in range(columns.shape[0])]


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_5_vl"])
def test_fastv_fca_prune_equals_mask_and_follows_fca_budgets(models, arch):
    model, batch = models(arch)
    method = get_method("fastv", budget="fca")
    pruned, state, visual, columns, embeds = run(model, batch, method, 0.25)
    masked, _, _, _, _ = run(model, batch, method, 0.25, mode="mask")
    assert_same_generation(pruned, masked)
    survivors = state.keep[2]
    want = ref.vidcom2_mask(embeds[0, columns].double(), 0.25)[1]  # FCA budgets of the pre-LLM features
    assert per_frame(survivors, columns) == want
    assert state.visual_per_layer == [int(visual.sum())] * 2 + [sum(want)] * 2
    row = state.rows[2]
    for t, k in enumerate(want):  # inside each frame: FastV's own highest-attention tokens
        top = torch.topk(row[columns[t]].float(), k).indices
        assert set(columns[t][top].tolist()) == set(survivors[torch.isin(survivors, columns[t])].tolist())
    assert_restored(model)


def test_fastv_uniform_frames_keep_equal_counts(models):
    model, batch = models("qwen2_vl")
    pruned, state, _, columns, _ = run(model, batch, get_method("fastv", budget="uniform"), 0.3)
    masked, _, _, _, _ = run(model, batch, get_method("fastv", budget="uniform"), 0.3, mode="mask")
    assert_same_generation(pruned, masked)
    assert per_frame(state.keep[2], columns) == [ref.budget(0.3, columns.shape[1])] * columns.shape[0]


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen3_vl"])
def test_sparsevlm_fca_prune_equals_mask(models, arch):
    model, batch = models(arch)
    method = get_method("sparsevlm", layers=(0, 1, 2), recycle=False, budget="fca")
    pruned, state, visual, columns, embeds = run(model, batch, method, 0.25)
    masked, _, _, _, _ = run(model, batch, method, 0.25, mode="mask")
    assert_same_generation(pruned, masked)
    last = state.keep[max(state.keep)]
    feats = embeds[0, columns].double()
    final = [min(k, n) for k, n in zip(ref.vidcom2_mask(feats, state.plan.stages[-1].fraction)[1], per_frame(state.keep[min(state.keep)], columns))]
    assert per_frame(last, columns) <= [max(final)] * len(final)  # never above the stage's largest frame budget
    assert sum(per_frame(last, columns)) == state.visual_per_layer[-1]
    assert set(state.keep[3].tolist()) <= set(state.keep[2].tolist()) <= set(state.keep[1].tolist())
    assert_restored(model)


def test_generate_entry_point_finds_the_frames_and_records_the_real_counts(models):
    model, batch = models("llava_onevision")
    rec = Recorder()
    kwargs = dict(batch, max_new_tokens=2, do_sample=False)
    in_llm.generate(get_adapter(model), model, model.generate, kwargs, get_method("fastv", budget="fca"), 0.25, rec)
    _, state, _, columns, _ = run(model, batch, get_method("fastv", budget="fca"), 0.25)
    assert rec.fields["visual_tokens_out"] == sum(per_frame(state.keep[2], columns))
    assert_restored(model)


def test_tensor_form_and_refusals():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 12, 8, generator=g, dtype=torch.float64)
    x[1] += 3
    scores = torch.rand(5, 12, generator=g)
    keep = get_method("fastv", budget="fca")(x, 0.25, scores=scores).keep
    assert keep.sum(dim=1).tolist() == ref.vidcom2_mask(x, 0.25)[1]
    for t in range(5):
        assert set(keep[t].nonzero().squeeze(1).tolist()) == set(torch.topk(scores[t], int(keep[t].sum())).indices.tolist())
    with pytest.raises(ValueError, match="budget"):
        get_method("fastv", budget="frames")
    with pytest.raises(ValueError, match="recycle=false"):
        in_llm.plan_for(get_method("sparsevlm", layers=(0, 1, 2), budget="fca"), 0.25, 4, 100, mrope=False)
