"""Small helpers shared by the adapter families."""

from __future__ import annotations

import copy

import torch


def attention_mask(inputs: dict) -> torch.Tensor:
    """The ``[B, L]`` 0/1 mask of ``inputs`` (all ones when absent)."""
    ids = inputs["input_ids"]
    am = inputs.get("attention_mask")
    return torch.ones_like(ids) if am is None else am


def text_positions(am: torch.Tensor) -> torch.Tensor:
    """1-D positions ``[B, L]`` as ``generate`` builds them: ``cumsum(mask) - 1``, padding columns set to 1."""
    return (am.long().cumsum(-1) - 1).masked_fill(am == 0, 1)


def decoder_query_key(layer, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``Adapter.layer_query_key`` for the HF Qwen2/Qwen3 decoder layer (every supported family's LLM):
    ``input_layernorm``, then ``self_attn.q_proj`` (last token) / ``k_proj`` (every token), split into heads of
    ``head_dim``, Qwen3's ``q_norm`` / ``k_norm`` where the layer has them; ``scaling`` is the attention's own."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    d = attn.head_dim
    q = attn.q_proj(x[:, -1:]).view(1, 1, -1, d)
    k = attn.k_proj(x).view(1, x.shape[1], -1, d)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q.transpose(1, 2), k.transpose(1, 2), attn.scaling


def with_pooler(output, pooler_output, **fields):
    """A shallow copy of a ``ModelOutput`` with ``pooler_output`` (and other fields) replaced.

    ``last_hidden_state`` / ``hidden_states`` are dropped: the LLM reads only the pooler output (and DeepStack
    levels), and keeping the full tower outputs alive costs memory for nothing."""
    new = copy.copy(output)
    new.pooler_output = pooler_output
    for key in ("last_hidden_state", "hidden_states", "attentions"):
        if key in new.keys():
            new[key] = None
            setattr(new, key, None)
    for key, value in fields.items():
        setattr(new, key, value)
    return new


def check_video_inputs(inputs: dict) -> None:
    if inputs.get("input_ids") is None:
        raise ValueError(
            "compress needs `input_ids` from the processor (inputs_embeds prompts are not supported)"
        )
    if inputs.get("pixel_values") is not None or inputs.get("image_grid_thw") is not None:
        raise NotImplementedError(
            "prompts with images are not supported by the compression adapters (video-only prompts); "
            "pass videos through the processor's `videos=` argument"
        )


def video_chunks(mask: torch.Tensor, per_video: int, hint: str, n_videos: int):
    """``(row, columns)`` of every video in a prompt batch: each row's video-token columns (``mask [B, L]``) cut into
    runs of ``per_video``; a row whose count is not a multiple is an error that says ``hint``, and so is a prompt
    whose number of videos differs from ``n_videos`` (the entries of ``pixel_values_videos``)."""
    found = 0
    for row in range(mask.shape[0]):
        cols = mask[row].nonzero().squeeze(1)
        if cols.numel() % per_video:
            raise ValueError(f"row {row} holds {cols.numel()} video tokens, not a multiple of {hint}")
        for chunk in cols.split(per_video):
            found += 1
            yield row, chunk
    if found != n_videos:
        raise ValueError(f"the prompt holds {found} videos but pixel_values_videos has {n_videos}")
