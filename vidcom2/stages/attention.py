"""Pure attention math on tensors, without hooks: one attention row, rows of chosen queries, RoPE helpers and the
"attention received" of a vision-encoder frame. Shared by the stages, the methods' score recipes and the adapters'
encoder hooks; nothing here touches a module.

GQA everywhere: query ``[1, Hq, q, d]``, key ``[1, Hkv, kv, d]`` post-RoPE, before repetition; kv head ``j`` serves
query heads ``j*r .. j*r+r-1`` (transformers' ``repeat_kv``), grouped here instead of repeated, so no
``[Hq, kv, d]`` copy exists. A call's ``mask`` is 4-D ``[1, 1, q, kv]`` (bool: True = attend; float: additive) or a
2-D ``[1, kv]`` 0/1 padding mask (flash backends).
"""

from __future__ import annotations

import torch

#: Queries per block when accumulating attention received (memory ``heads * block * n`` floats per frame).
QUERY_BLOCK = 256


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``cat(-x2, x1)`` of the two halves of the last dimension (transformers' ``rotate_half``)."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Standard rotate-half RoPE; ``x [B, H, n, d]``, ``cos/sin [B, n, d]`` (M-RoPE already composed)."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def vision_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Qwen vision RoPE in float32 (as ``apply_rotary_pos_emb_vision``): ``x [S, H, d]``, ``cos/sin [S, d]``."""
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def _apply_mask(logits: torch.Tensor, mask: torch.Tensor | None, rows, kv: int) -> torch.Tensor:
    """``logits [1, Hq, R, kv]`` with the call's mask applied (its query ``rows``; ``None`` = the last one)."""
    if mask is None:
        return logits
    if mask.dim() == 2:
        m = mask[:, None, None, -kv:].bool()
    else:
        m = mask[:, :, -1:, -kv:] if rows is None else mask[:, :, rows][..., -kv:]
    return logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.float()


def last_row(
    query: torch.Tensor, key: torch.Tensor, scaling: float, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention probabilities of the last query, mean over heads: ``[kv_len]`` float32.

    query ``[1, Hq, q_len, d]``, key ``[1, Hkv, kv_len, d]`` post-RoPE; ``mask`` as in the module docstring (its
    last query row is applied)."""
    b, hq, _, d = query.shape
    hkv, kv = key.shape[1], key.shape[2]
    q = query[:, :, -1:, :].float().reshape(b, hkv, hq // hkv, d)
    logits = (q @ key.float().transpose(-1, -2)) * scaling  # [1, Hkv, r, kv_len]
    logits = _apply_mask(logits.reshape(b, hq, 1, kv), mask, None, kv)
    return torch.softmax(logits, dim=-1).mean(dim=1).reshape(-1)


def query_rows(
    query: torch.Tensor, key: torch.Tensor, rows: torch.Tensor, scaling: float, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention probabilities ``[Hq, R, kv_len]`` float32 of the prefill query ``rows`` (``[R]`` positions) only,
    each with the causal mask of its own position (row ``p`` sees keys ``<= p``) and the call's ``mask`` (its rows
    ``rows``). query ``[1, Hq, q_len, d]``, key ``[1, Hkv, kv_len, d]`` post-RoPE, ``q_len == kv_len``."""
    b, hq, _, d = query.shape
    hkv, kv = key.shape[1], key.shape[2]
    r = rows.numel()
    q = query[:, :, rows, :].float().reshape(b, hkv, hq // hkv, r, d)
    logits = (q @ key.float().unsqueeze(2).transpose(-1, -2)) * scaling  # [1, Hkv, g, R, kv_len]
    logits = logits.reshape(b, hq, r, kv)
    allowed = torch.arange(kv, device=key.device).view(1, -1) <= rows.view(-1, 1)  # [R, kv]
    logits = _apply_mask(logits.masked_fill(~allowed, float("-inf")), mask, rows, kv)
    return torch.softmax(logits, dim=-1)[0]


def attention_received(
    q: torch.Tensor, k: torch.Tensor, scale: float, block: int = QUERY_BLOCK
) -> torch.Tensor:
    """Mean over heads and queries of ``softmax(q k^T * scale)``: ``[n]`` float32.

    q, k: ``[heads, n, d]`` of one frame. Query blocks of ``block`` rows bound memory to ``heads * block * n``.
    """
    q, k = q.float(), k.float()
    heads, n = q.shape[0], q.shape[1]
    total = torch.zeros(k.shape[1], dtype=torch.float32, device=k.device)
    kt = k.transpose(-1, -2)
    for start in range(0, n, block):
        probs = torch.softmax((q[:, start : start + block] @ kt) * scale, dim=-1)
        total += probs.sum(dim=(0, 1))
    return total / (heads * n)
