"""Compressed ``generate`` (shrunk prompt, KV cache) == a full-sequence teacher-forced forward in which the dropped
video tokens are hidden by a 4-D boolean mask, for every pre-LLM and vision-encoder method on every architecture (spec
hooks_transformers.md section 7). The reference (``reference.py``) uses only raw transformers calls."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from tests.vidcom2._helpers import PRE_LLM_ONLY, generate_compressed
from vidcom2.testing import tiny

from .reference import ARCHS, masked_teacher_forced

NEW = 5
# dycoke_ttm keeps its anchor frames whole, so its ratio has a floor (1/2 with the Qwen tiny videos' 2 patches)
RATIO = {"dycoke_ttm": 0.6}
# vision-encoder methods take the same prompt-shrinking path (with encoder scores); visionzip also merges features
# (methods that also act while decoding, e.g. dycoke's stage 2, change more than the prompt: tested on their own in
# tests/vidcom2/stages/test_decode.py)
METHODS = [
    m
    for m in vidcom2.list_methods(stage="pre_llm") + vidcom2.list_methods(stage="vision_encoder")
    if not vidcom2.get_method(m).info.decode
]
CASES = [(m, a) for m in METHODS for a in ARCHS]
# Qwen towers have no MAP head: FastVID runs its labelled encoder-signal fallback there (the adapter refuses map_head)
HPARAMS = {("fastvid", a): {"signal": "encoder"} for a in ARCHS if a.startswith("qwen")}
HPARAMS.update({(m, a): hp for m, hp in PRE_LLM_ONLY.items() for a in ARCHS})


def _inputs(arch, processor):
    return tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=1), "What moves where?")


def _run(model, batch, method, ratio, **kw):
    return generate_compressed(model, batch, method, ratio, NEW, **kw)


@pytest.mark.parametrize("method,arch", CASES)
def test_compressed_generate_equals_masked_reference(tiny_model, method, arch):
    model, processor = tiny_model(arch)
    batch = _inputs(arch, processor)
    # hf5: the reference takes transformers' own get_rope_index (the reference rule is tested on its own)
    kw = {"text_rule": "hf5"} if arch.startswith("qwen2") else {}
    pm = "original" if arch == "llava_onevision" and method == "vidcom2" else None
    ratio = RATIO.get(method, 0.25)
    hp = HPARAMS.get((method, arch), {})
    out, session = _run(model, batch, method, ratio, position_mode=pm, **kw, **hp)
    L = batch["input_ids"].shape[1]
    generated = out.sequences[:, L:]
    got = torch.stack(out.logits, dim=1)
    ref, sels = masked_teacher_forced(
        model, batch, arch, generated, method, ratio, position_mode=session.info["position_mode"], **hp
    )
    assert (got - ref).abs().max().item() <= 1e-5
    allowed = ref.clone()
    allowed[..., [model.config.video_token_id, model.config.image_token_id]] = float("-inf")
    assert torch.equal(allowed.argmax(-1), generated)
    assert session.samples[0].visual_tokens_out == int(sels[0].keep.sum())
    assert session.samples[0].visual_tokens_in == sels[0].keep.numel()


@pytest.mark.parametrize("arch", ARCHS)
def test_llava_contiguous_and_vidcom2_uniform_budget(tiny_model, arch):
    """Extra hyper-parameters reach the method, and LLaVA-OV's default contiguous positions match the reference
    with renumbered positions."""
    model, processor = tiny_model(arch)
    batch = _inputs(arch, processor)
    kw = {"text_rule": "hf5"} if arch.startswith("qwen2") else {}
    out, session = _run(model, batch, "vidcom2", 0.4, budget="uniform", **kw)
    assert session.info["hparams"] == {"budget": "uniform"}
    generated = out.sequences[:, batch["input_ids"].shape[1] :]
    ref, sels = masked_teacher_forced(
        model,
        batch,
        arch,
        generated,
        "vidcom2",
        0.4,
        position_mode=session.info["position_mode"],
        budget="uniform",
    )
    assert (torch.stack(out.logits, 1) - ref).abs().max().item() <= 1e-5
    assert session.samples[0].visual_tokens_out == int(sels[0].keep.sum())


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_with_cache_equals_masked_reference(tiny_model, arch):
    """Sampling (not only greedy) runs through the compressed prompt and KV cache: the logits of every sampled step
    equal the masked teacher-forced reference on the sampled tokens, and a seed reproduces the sample."""
    model, processor = tiny_model(arch)
    batch = _inputs(arch, processor)
    kw = {"text_rule": "hf5"} if arch.startswith("qwen2") else {}
    suppress = [model.config.video_token_id, model.config.image_token_id]

    def sample(seed):
        torch.manual_seed(seed)
        with vidcom2.compress(model, "vidcom2", 0.25, **kw) as session:
            out = model.generate(**batch, max_new_tokens=NEW, do_sample=True, temperature=1.5, top_k=0, top_p=1.0,
                                 output_logits=True, return_dict_in_generate=True, suppress_tokens=suppress)
        return out, session

    out, session = sample(3)
    again, _ = sample(3)
    assert torch.equal(out.sequences, again.sequences)
    L = batch["input_ids"].shape[1]
    generated = out.sequences[:, L:]
    ref, _ = masked_teacher_forced(model, batch, arch, generated, "vidcom2", 0.25,
                                   position_mode=session.info["position_mode"])
    assert (torch.stack(out.logits, dim=1) - ref).abs().max().item() <= 1e-5
