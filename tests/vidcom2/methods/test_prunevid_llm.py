"""PruneVid's LLM stage (``MethodInfo.in_llm``): the plan's groups and layer, the selection against the official
``attn_weights_wo_pos`` + ``process_attention`` (``ref_prunevid``) on the real shrunk prompt, prune == mask mode
through ``compress`` on every architecture (LLaVA-Video: both newline orders, per-layer counts against the plan) and
the retroactive part (the earlier layers decode over the survivors only)."""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import ClassVar

import pytest
import torch

import vidcom2
from tests.vidcom2._helpers import assert_restored, generate_compressed
from tests.vidcom2.methods import ref_prunevid as ref
from vidcom2.adapters import adapter_for, get_adapter
from vidcom2.stages import in_llm, rebuild
from vidcom2.testing import tiny
from vidcom2.types import Selection

compress_module = importlib.import_module("vidcom2.compress")  # the module (vidcom2.compress is the function)

ARCHS = ("llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
# (arch, LLaVA-Video newline order): its row newlines are in no group and never candidates, in either order
CASES = [(a, None) for a in ARCHS] + [("llava_video", "after_frame"), ("llava_video", "row")]
NEW = 4
R = 0.5


def _batch(arch, processor):
    return tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=4), "What moves where?")


def _kw(arch, order=None):
    if order is not None:
        return {"adapter": adapter_for(arch, newline_order=order)}
    return {"text_rule": "hf5"} if arch.startswith("qwen2") else {}


def test_plan_keeps_int_size_times_alpha_per_group_at_the_scaled_layer():
    m = vidcom2.get_method("prunevid")
    assert m.info.acts == ("pre_llm", "in_llm") and m.info.single_prompt is not None
    groups = torch.tensor([[0, 0, 0, 1, 1, -1], [2, 2, 2, 2, 2, -1]])  # sizes 3, 2, 5 (-1: dropped)
    sel = Selection(keep=groups >= 0, groups=groups)
    plan = m.plan(R, 32, 10, mrope=False, selections=[sel])
    assert plan.stages[0].layer == 11 and plan.retroactive and plan.budget == "groups"  # after layer 10 of 32
    assert plan.groups[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    assert plan.groups[1].tolist() == [1, 0, 2]  # int(3 * 0.4), int(2 * 0.4), int(5 * 0.4)
    assert plan.stages[0].keep == 3 and plan.hparams["visual_tokens_llm_kept"] == 3
    assert m.plan(R, 28, 10, mrope=False, selections=[sel]).stages[0].layer == 10  # round(10 * 28 / 32) = 9, + 1
    assert m.plan(R, 4, 10, mrope=False, selections=[sel]).stages[0].layer == 2  # the tiny LLM: 1, + 1
    assert vidcom2.get_method("prunevid", llm_alpha=1.0).plan(R, 32, 10, mrope=False, selections=[sel]).stages == ()
    with pytest.raises(ValueError, match="selected_layer must be in"):
        vidcom2.get_method("prunevid", selected_layer=31).plan(R, 32, 10, mrope=False, selections=[sel])
    with pytest.raises(ValueError, match="one candidate per kept token"):
        m.plan(R, 32, 12, mrope=False, selections=[sel])


def _shrunk(model, batch, r, seed=0, adapter=None):
    """What compress hands the in-LLM stage: the shrunk prompt's generate kwargs, the Selection and the features."""
    adapter = adapter or get_adapter(model)
    with torch.no_grad():
        encoded = adapter.encode(model, batch)
        sel = vidcom2.apply("prunevid", encoded.feats[0], r, seed=seed)
        prompt, _ = rebuild.shrink(adapter, model, batch, encoded, [sel], position_mode=adapter.position_modes[0],
                                   text_rule="hf5")  # fmt: skip
    drop = (*compress_module._PROMPT_KEYS, *adapter.encoder_inputs)
    call = {k: v for k, v in batch.items() if k not in drop}
    return dict(call, **prompt), sel, encoded.feats[0]


@pytest.mark.parametrize("arch, order", [("llava_onevision", None), ("qwen2_5_vl", None), ("qwen3_vl", None),
                                         ("llava_video", "after_frame"), ("llava_video", "row")])  # fmt: skip
def test_selection_equals_the_official_process_attention(tiny_model, arch, order):
    model, processor = tiny_model(arch)
    adapter = adapter_for(arch, newline_order=order) if order else get_adapter(model)
    call, sel, feats = _shrunk(model, _batch(arch, processor), R, adapter=adapter)
    with torch.no_grad(), in_llm.attach(adapter, model, vidcom2.get_method("prunevid"), R, call,
                                        selections=[sel]) as state:  # fmt: skip
        model.generate(**call, max_new_tokens=1, do_sample=False)
    # the reference: layer 1's input in an unhooked run (read by a pre-hook: Qwen3-VL adds DeepStack features after
    # layer 0, which hidden_states do not show), its pre-RoPE unmasked attention, the official groups
    layer = model.model.language_model.layers[1]
    seen = []
    handle = layer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(**call)
    finally:
        handle.remove()
    with torch.no_grad():
        weights = ref.attention_wo_pos(layer, seen[0])
    sizes = []
    ref.prunevid(feats, R, torch.Generator().manual_seed(0), sizes=sizes)
    # the image span without layout tokens, in sequence order: the official concatenation (Selection.order)
    cols = in_llm.candidates(adapter, model, call, selections=[sel]).nonzero().squeeze(1)
    assert cols.numel() == int(sel.keep.sum())  # LLaVA-Video: its row newlines are not in the span
    video = adapter.visual_token_mask(model, call)[0]
    text_start = int(video.nonzero().max()) + 1
    text_to_image = weights[:, :, text_start:][..., cols]
    want = cols[ref.process_attention(text_to_image, *zip(*sizes), alpha=0.4)]
    got = state.keep[2][torch.isin(state.keep[2], cols)]
    assert got.numel() == sum(int(s * 0.4) for s, _, _ in sizes) + sum(
        w * int(d // w * 0.4) for _, d, w in sizes
    )
    assert set(got.tolist()) == set(want.tolist())
    assert_restored(model)


@pytest.mark.parametrize("arch, order", CASES)
def test_prune_equals_mask_mode_through_compress(tiny_model, arch, order, monkeypatch):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    pruned, session = generate_compressed(model, batch, "prunevid", R, NEW, **_kw(arch, order))
    with monkeypatch.context() as mp:
        mp.setitem(compress_module.GENERATE_STAGES, "in_llm", functools.partial(in_llm.generate, mode="mask"))
        masked, _ = generate_compressed(model, batch, "prunevid", R, NEW, **_kw(arch, order))
    assert (torch.stack(pruned.logits) - torch.stack(masked.logits)).abs().max().item() <= 1e-5
    assert torch.equal(pruned.sequences, masked.sequences)
    s = session.samples[0]
    entering, kept = s.visual_tokens_per_layer[0], s.visual_tokens_out
    assert s.visual_tokens_per_layer == (entering,) * 2 + (kept,) * 2 and kept < entering
    # layers 0-1 keep their cache entries (hidden on read), layers 2-3 hold only the survivors
    shrunk, steps = s.prompt_tokens_out, NEW - 1
    lengths = [layer.keys.shape[-2] for layer in pruned.past_key_values.layers]
    assert lengths == [shrunk + steps] * 2 + [shrunk - entering + kept + steps] * 2
    if order is not None:  # the counts the plan names: the selection's kept tokens, then int(size * 0.4) per group
        _, sel, _ = _shrunk(model, batch, R, adapter=_kw(arch, order)["adapter"])
        sizes = torch.bincount(sel.groups.reshape(-1)[sel.flat_indices()]).tolist()
        assert (entering, kept) == (int(sel.keep.sum()), sum(int(n * 0.4) for n in sizes))
    assert_restored(model)


@dataclasses.dataclass(frozen=True)
class _ForwardOnly:
    """PruneVid's plan without the retroactive part (the comparison for the test below)."""

    info: ClassVar = vidcom2.get_method("prunevid").info

    def plan(self, *args, **kwargs):
        return dataclasses.replace(vidcom2.get_method("prunevid").plan(*args, **kwargs), retroactive=False)


def test_retroactive_pruning_changes_decoding_only(tiny_model):
    model, processor = tiny_model("qwen2_5_vl")
    adapter = get_adapter(model)
    call, sel, _ = _shrunk(model, _batch("qwen2_5_vl", processor), R)
    outs = []
    for method in (vidcom2.get_method("prunevid"), _ForwardOnly()):
        with torch.no_grad(), in_llm.attach(adapter, model, method, R, call, selections=[sel]):
            outs.append(model.generate(**call, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                                       output_logits=True, return_dict_in_generate=True))  # fmt: skip
    retro, forward = outs
    assert torch.equal(retro.logits[0], forward.logits[0])  # the prefill is the same
    assert not torch.allclose(retro.logits[1], forward.logits[1], atol=1e-4)  # layers 0-1 decode over fewer tokens
    assert_restored(model)

