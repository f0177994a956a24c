"""Attention-mask surgery for a pruned sequence and the per-stage top-k selection (pure tensor functions, no hooks),
used by the in-LLM stage.

Masks are what transformers hands a decoder layer: 4-D ``[B, 1, q, kv]`` (bool: True = attend; float: additive) or
a 2-D ``[B, kv]`` 0/1 padding mask (flash backends), or ``None``.
"""

from __future__ import annotations

import torch

from vidcom2.budget import keep_highest


def take(mask: torch.Tensor | None, rows: torch.Tensor | None, cols: torch.Tensor) -> torch.Tensor | None:
    """Select query ``rows`` (None: all) and key ``cols`` of a 4-D ``[B, 1, q, kv]`` mask, or ``cols`` of a 2-D
    ``[B, kv]`` padding mask (flash backends)."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask[:, cols]
    if rows is not None:
        mask = mask[:, :, rows]
    return mask[:, :, :, cols]


def with_new_tokens(mask: torch.Tensor | None, ids: torch.Tensor, prompt_len: int) -> torch.Tensor | None:
    """Prefill mask for a sequence ``ids`` holding new tokens (ids ``>= prompt_len``, never padding; SparseVLM's
    recycled centres): causal, padding keys hidden (read from the last prompt row, which sees every non-padding
    key), every token sees itself. 4-D bool/additive as given; a 2-D padding mask (flash) gets its columns
    gathered."""
    if mask is None:
        return None
    extra = int(ids.max()) + 1 - prompt_len
    if mask.dim() == 2:
        return torch.cat([mask, mask.new_ones(mask.shape[0], extra)], dim=1)[:, ids]
    last = mask[0, 0, -1, :prompt_len]
    valid = last if last.dtype == torch.bool else last == 0
    valid = torch.cat([valid, valid.new_ones(extra)])[ids]
    m = ids.numel()
    ar = torch.arange(m, device=ids.device)
    allowed = ((ar.view(1, -1) <= ar.view(-1, 1)) & valid.view(1, -1)) | (ar.view(1, -1) == ar.view(-1, 1))
    allowed = allowed.view(1, 1, m, m)
    if mask.dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=mask.dtype, device=mask.device).masked_fill(
        ~allowed, torch.finfo(mask.dtype).min
    )


def reference_mask(existing, keep: torch.Tensor, q_len: int, kv_len: int, device) -> torch.Tensor:
    """The ``mode="mask"`` reference: ``existing`` with the dropped key columns hidden (``keep`` bool over the
    first columns; later ones, generated tokens, stay). The diagonal stays, so a dropped query row is never empty."""
    cols = torch.ones(kv_len, dtype=torch.bool, device=device)
    cols[: keep.numel()] = keep
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device).view(-1, 1)
    k_pos = torch.arange(kv_len, device=device).view(1, -1)
    allowed = ((k_pos <= q_pos) & (cols.view(1, -1) | (k_pos == q_pos))).view(1, 1, q_len, kv_len)
    if existing is None:
        return allowed
    if existing.dtype == torch.bool:
        return existing & allowed
    return existing.masked_fill(~allowed, torch.finfo(existing.dtype).min)


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[n]``: the ``k`` highest scores (ties: lower index first), the library's rule."""
    return keep_highest(scores.float().view(1, -1), torch.tensor([k])).view(-1)


def frame_keep(row: torch.Tensor, frame: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """Bool ``[n]``: in each frame ``t`` the ``min(budgets[t], available)`` highest ``row`` entries, where
    ``frame [n]`` is each candidate's frame index (the per-frame selection of ``budget=uniform|fca``)."""
    chosen = torch.zeros(row.shape[0], dtype=torch.bool, device=row.device)
    for t in range(int(budgets.numel())):
        idx = (frame == t).nonzero().squeeze(1)
        if idx.numel():
            chosen[idx] = top(row[idx], min(int(budgets[t]), idx.numel()))
    return chosen


def restrict_kv(key, value, attention_mask, cols: torch.Tensor, mode: str, backend: str, idx=None):
    """One layer's key/value read limited to the cache columns ``cols`` (bool ``[kv]``), for the attention
    dispatcher's gather: ``prune`` selects those columns (``idx``: their indices, computed when not given), ``mask``
    (the reference) keeps every column and hides the others in the mask (additive for eager attention)."""
    kv = key.shape[2]
    if mode == "prune":
        idx = cols.nonzero().squeeze(1) if idx is None else idx
        if attention_mask is not None:
            attention_mask = attention_mask[..., -kv:].index_select(-1, idx)
        return key.index_select(2, idx), value.index_select(2, idx), attention_mask
    allowed = cols.view(1, 1, 1, kv)
    if attention_mask is None and backend == "eager":  # eager adds its mask: make it additive
        attention_mask = torch.zeros(allowed.shape, dtype=key.dtype, device=key.device)
    if attention_mask is None:
        return key, value, allowed
    if attention_mask.dtype == torch.bool:
        return key, value, attention_mask[..., -kv:] & allowed
    return key, value, attention_mask[..., -kv:].masked_fill(~allowed, torch.finfo(attention_mask.dtype).min)
