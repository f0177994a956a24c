"""SparseVLM's parts of in-LLM pruning (used by ``vidcom2.adapters.in_llm``): the raters, the rater-row score
computed inside the attention function, v2's RoPE gravity correction and head selection, v1's recycling, and the
mask of a sequence that holds recycled (new) tokens.

Official code: github.com/Gumpest/SparseVLMs ``llava/model/language_model/modelling_sparse_llama.py`` and
``score.py`` (``attn_postprocess_topk``, ``select_attn_head_by_sum``). The model-agnostic math (schedule, raters,
clustering) lives in ``vidcom2.methods.sparsevlm``. Spec: shared/spec/baselines.md 6.
"""

from __future__ import annotations

import torch

from vidcom2.methods.sparsevlm import cluster_and_merge, recycle_sources, recycled_count, text_raters


def raters(embeds: torch.Tensor, visual: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Prompt positions (long) of the text raters among ``[start, end)``. embeds ``[L, D]`` input embeddings,
    visual bool ``[L]`` the visual tokens (``V``)."""
    if start >= end:
        raise ValueError("sparsevlm needs text tokens after the video (its raters); the prompt ends there")
    vis_idx = visual.nonzero().squeeze(1)
    chosen = text_raters(embeds[vis_idx], embeds[start:end]).nonzero().squeeze(1)
    return chosen.to(embeds.device) + start


def gravity(cos: torch.Tensor, sin: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """v2's RoPE "gravity" ``[R, kv]``: the attention logit that all-ones query and key vectors get after RoPE at
    the query ``rows`` and every key position, ``/ sqrt(d)`` (official ``rope_weights``). cos/sin ``[1, kv, d]``
    (the layer's position embeddings, M-RoPE already composed)."""
    c, s = cos[0].float(), sin[0].float()
    d = c.shape[-1]
    sign = torch.cat([-torch.ones(d // 2), torch.ones(d - d // 2)]).to(c.device)  # rotate_half(ones)
    e = c + sign * s  # [kv, d]
    return (e[rows] @ e.T) / d**0.5


def rater_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    rows: torch.Tensor,
    scaling: float,
    mask: torch.Tensor | None,
    *,
    gravity_rows: torch.Tensor | None = None,
    visual: torch.Tensor | None = None,
    heads: int | None = None,
) -> torch.Tensor:
    """SparseVLM's score row ``[kv_len]`` float32: attention probabilities of the query ``rows`` (prefill positions,
    ``[R]``), mean over heads, then mean over the rows. Only ``R`` rows are computed (``[Hq, R, kv_len]``), each with
    the causal mask of its own position (row ``p`` sees keys ``<= p``) and the call's ``mask`` (4-D
    ``[1, 1, q, kv]`` bool/additive, its rows ``rows``; or a 2-D ``[1, kv]`` 0/1 padding mask). GQA grouped as in
    ``in_llm.last_row``. query ``[1, Hq, q_len, d]``, key ``[1, Hkv, kv_len, d]`` post-RoPE, q_len == kv_len.

    v2 (``gravity_rows`` ``[R, kv]`` given): the probabilities are divided by the gravity (an exact 0 stays 0: the
    official full-matrix division would give 0 there too unless the gravity is 0), and only the ``heads`` heads
    with the largest mass on the ``visual`` (bool ``[kv]``) columns are averaged.
    """
    b, hq, _, d = query.shape
    hkv, kv = key.shape[1], key.shape[2]
    r = rows.numel()
    q = query[:, :, rows, :].float().reshape(b, hkv, hq // hkv, r, d)
    logits = (q @ key.float().unsqueeze(2).transpose(-1, -2)) * scaling  # [1, Hkv, g, R, kv_len]
    logits = logits.reshape(b, hq, r, kv)
    allowed = torch.arange(kv, device=key.device).view(1, -1) <= rows.view(-1, 1)  # [R, kv]
    logits = logits.masked_fill(~allowed, float("-inf"))
    if mask is not None:
        m = mask[:, None, None, -kv:].bool() if mask.dim() == 2 else mask[:, :, rows][..., -kv:]
        logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.float()
    probs = torch.softmax(logits, dim=-1)[0]  # [Hq, R, kv]
    if gravity_rows is not None:
        probs = torch.where(probs == 0, probs, probs / gravity_rows.to(probs.device))
        mass = probs[:, :, visual].sum(dim=(1, 2))  # [Hq]
        top = torch.topk(mass, min(int(heads), hq)).indices
        probs = probs[top]
    return probs.mean(dim=0).mean(dim=0)


def recycle(state, stage, hidden, cur, row, vis_cur, chosen, survive):
    """v1 recycling at one stage: the best 30% of the dropped visual tokens (by ``row``) are clustered from their
    layer-``l`` output states into ``stage.recycled`` new tokens, inserted right after the last kept visual token.

    hidden ``[1, n, D]`` (the layer-``l`` output), cur ``[n]`` ids of that sequence, row ``[n]`` scores, vis_cur /
    chosen / survive bool ``[n]``. Updates ``state`` (``next_id``, ``visual``, ``recycled``) and returns the new
    ``(hidden [1, n', D], ids [n'])``; new ids are ``state.next_id, ...`` (``>=`` the prompt length).
    """
    pruned = (vis_cur & ~chosen).nonzero().squeeze(1)
    local = survive.nonzero().squeeze(1)
    if pruned.numel() == 0:
        return hidden.index_select(1, local), cur[local]
    src = pruned[recycle_sources(row[pruned])]
    c = stage.recycled
    if c != recycled_count(pruned.numel()):
        raise RuntimeError(
            f"sparsevlm: planned {c} recycled tokens at layer {stage.layer}, the rule gives another"
        )
    centres = cluster_and_merge(hidden[0, src], c, state.generator)
    last = int((survive & vis_cur).nonzero().max())
    before, after = local[local <= last], local[local > last]
    new_ids = torch.arange(state.next_id, state.next_id + c, device=cur.device)
    state.next_id += c
    state.visual = torch.cat([state.visual, state.visual.new_ones(c)])
    state.recycled[stage.layer] = {"sources": cur[src], "centres": centres}
    hidden = torch.cat([hidden[:, before], centres.unsqueeze(0), hidden[:, after]], dim=1)
    return hidden, torch.cat([cur[before], new_ids, cur[after]])


def with_new_tokens(mask: torch.Tensor | None, ids: torch.Tensor, prompt_len: int) -> torch.Tensor | None:
    """Prefill mask for a sequence ``ids`` holding new tokens (ids ``>= prompt_len``, never padding): causal,
    padding keys hidden (read from the last prompt row, which sees every non-padding key), every token sees itself.
    4-D bool/additive as given; a 2-D padding mask (flash) gets its columns gathered."""
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
