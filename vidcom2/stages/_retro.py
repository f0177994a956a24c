"""Retroactive KV pruning for the in-LLM stage (``Plan.retroactive``: PruneVid prunes the cache of the layers up to
its selection layer once it has chosen): while decoding, the attention of every layer before the first stage reads
only the prompt columns that survived the stage, plus every generated token. A gather on read through the attention
dispatcher (the cache keeps its entries, so no memory is freed, but no layer attends to a dropped token). Prefill is
untouched: those layers have already run on the full prompt, as in the official code."""

from __future__ import annotations

import torch

from vidcom2.stages.masks import restrict_kv


def reader(state, stage_layer: int, mode: str, backend: str):
    """The dispatcher gather of the layers before ``stage_layer`` for the prune state ``state`` (``PruneState``):
    ``prune`` selects the surviving key/value columns, ``mask`` (the reference) hides the dropped ones."""

    def read(module, key, value, attention_mask):
        if state.phase != "decode" or stage_layer not in state.keep:
            return key, value, attention_mask
        kv = key.shape[2]
        cols = torch.ones(kv, dtype=torch.bool, device=key.device)
        cols[: state.prompt_len] = False
        cols[state.keep[stage_layer].to(key.device)] = True
        return restrict_kv(key, value, attention_mask, cols, mode, backend)

    return read
