"""Shared helpers of the model-level tests (stages, compress): tiny model + prompt factory, generation and restoration checks."""

from __future__ import annotations

from vidcom2.testing import tiny

# the hyper-parameters that switch off the in-LLM part of a method acting before and inside the LLM
# (MethodInfo.in_llm), so the pre-LLM equivalence suites check its pre-LLM part alone (the in-LLM part has its own
# prune-vs-mask tests in tests/vidcom2/methods/test_<name>_llm.py)
PRE_LLM_ONLY = {"flashvid": {"llm_retention_ratio": 1.0}, "prunevid": {"llm_alpha": 1.0}, "holitom": {"inner_ratio": 0.0}}


def model_batches(seed: int, question: str, text_layers: int = 4):
    """``get(arch, text_layers=...) -> (model, batch)``: a fresh tiny model (not the session-shared one, so module
    tests may attach things freely) and the processor outputs for a 4-frame 112x140 video."""
    cache = {}

    def get(arch: str, text_layers: int = text_layers):
        key = (arch, text_layers)
        if key not in cache:
            model, proc = tiny.build(arch, text_layers=text_layers)
            batch = dict(tiny.inputs(arch, proc, tiny.make_video(4, 112, 140, seed=seed), question))
            cache[key] = (model, batch)
        return cache[key]

    return get


def assert_same_generation(a, b, tol=1e-5):
    """Two ``generate(..., output_logits=True, return_dict_in_generate=True)`` outputs agree."""
    import torch

    la, lb = torch.stack(a.logits), torch.stack(b.logits)
    assert la.shape == lb.shape
    assert (la - lb).abs().max().item() <= tol
    assert torch.equal(a.sequences, b.sequences)


def assert_restored(model):
    """Nothing of in-LLM pruning outlives its block: attention implementation, hooks, registries, DeepStack wrap."""
    from vidcom2.stages import in_llm

    text_model = model.model.language_model
    assert text_model.config._attn_implementation == "sdpa"
    assert not text_model._forward_pre_hooks
    assert all(not layer._forward_pre_hooks for layer in text_model.layers)
    assert in_llm.dispatcher_routes() == (0, 0)
    assert "_deepstack_process" not in vars(text_model)


def generate_compressed(model, batch, method, ratio, new_tokens, **kw):
    """Greedy ``generate`` with logits inside ``vidcom2.compress``; returns ``(output, session)``.

    A random model may emit a video placeholder id; a teacher-forced reference would then read it as a video slot,
    so those ids are suppressed (raw logits, which the tests compare, are unaffected)."""
    import vidcom2

    suppress = [model.config.video_token_id, model.config.image_token_id]
    with vidcom2.compress(model, method, ratio, **kw) as session:
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, suppress_tokens=suppress)
    return out, session


def left_pad(batch: dict, n: int) -> dict:
    """``batch`` with ``n`` padding columns (id 0, mask 0, text type) prepended to its per-token tensors."""
    import torch

    padded = dict(batch)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in batch:
            padded[key] = torch.cat([torch.zeros((1, n), dtype=batch[key].dtype), batch[key]], dim=1)
    return padded
