"""The pre-LLM stage: shrink a prompt to the kept visual tokens (hook (a), spec hooks_transformers.md section 4).

Model-agnostic: it uses only the adapter's slots, positions (``full_positions``, ``position_ids``) and ``pack``.
Every batch row is shrunk on its own and the batch is left-padded again to the longest row.
"""

from __future__ import annotations

import torch

# [B, L] tensors of the prompt that are shrunk together with input_ids
_PER_TOKEN = ("mm_token_type_ids", "token_type_ids")


def shrink(
    adapter, model, inputs: dict, encoded, selections: list, *, position_mode: str, text_rule: str
):
    """The generate kwargs for the prompt with only the kept visual tokens, and per-row token counts.

    selections: per video, a :class:`~vidcom2.types.Selection` or ``None`` (keep everything). Kept features go in
    ``Selection.order`` order (ascending flat index when ``None``) into the kept slots in prompt order; each keeps
    the original position of the token it stands for (``order[j]``), so reordering methods reorder positions too.
    position_mode: ``"original"`` (gathered positions of the uncompressed prompt; Qwen: 3-D M-RoPE, row 0 of the
    ``[4, B, L']`` ids is ``arange`` over the kept tokens, it only drives mask building) or ``"contiguous"``
    (1-D RoPE models: no position ids, ``generate`` numbers the kept tokens ``0..L'-1``).
    Returns ``(kwargs, counts)``: kwargs with ``input_ids``, ``attention_mask``, ``mm_encoder_outputs``, the
    shrunk per-token tensors and ``position_ids`` where needed; counts: one dict per row with
    ``visual_tokens_in/out`` (scored tokens only: LLaVA-OV's always-kept newline is not counted) and
    ``prompt_tokens_in/out`` (without padding). encoded: the adapter's ``Encoded`` (``vidcom2.adapters.base``).
    """
    ids = inputs["input_ids"]
    am = inputs.get("attention_mask")
    am = torch.ones_like(ids) if am is None else am
    B, L = ids.shape
    device = ids.device
    full_pos = adapter.full_positions(model, inputs, text_rule=text_rule)  # [P, B, L]
    keep = am.bool().clone()
    src = torch.arange(L, device=device).expand(B, L).clone()  # position source column of each column
    kept_feats, flats = [], []
    vis_in, vis_out = [0] * B, [0] * B
    for slots, feats, sel in zip(encoded.slots, encoded.feats, selections):
        cols = slots.columns.reshape(-1).to(device)
        if sel is None:
            flat = torch.arange(cols.numel(), device=device)
            kept = feats.reshape(-1, feats.shape[-1])
        else:
            flat = sel.flat_indices().to(device)
            kept = sel.gather(feats).to(feats.dtype)
        if flat.numel() == 0 or flat.unique().numel() != flat.numel():
            raise ValueError(
                f"a selection must keep >= 1 distinct token per video, got {flat.numel()} indices"
            )
        row = slots.row
        keep[row, cols] = False
        slot_cols = cols[flat.sort().values]
        keep[row, slot_cols] = True
        src[row, slot_cols] = cols[flat]
        kept_feats.append(kept)
        flats.append(flat)
        vis_in[row] += cols.numel()
        vis_out[row] += flat.numel()

    lengths = keep.sum(1)
    pad_id = model.generation_config.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id if not isinstance(pad_id, list) else pad_id[0])
    new_ids, new_am, new_pos, extra = _left_padded(inputs, am, keep, src, full_pos, pad_id)
    kwargs = {"input_ids": new_ids, "attention_mask": new_am, **extra}
    kwargs["mm_encoder_outputs"] = {"video": adapter.pack(model, encoded, kept_feats, flats)}
    position_ids = adapter.position_ids(new_pos, new_am, position_mode=position_mode)
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    counts = [
        dict(
            visual_tokens_in=vis_in[b],
            visual_tokens_out=vis_out[b],
            prompt_tokens_in=int(am[b].sum()),
            prompt_tokens_out=int(lengths[b]),
        )
        for b in range(B)
    ]
    return kwargs, counts


def _left_padded(inputs: dict, am, keep: torch.Tensor, src: torch.Tensor, full_pos: torch.Tensor, pad_id: int):
    """The kept columns (``keep [B, L]``) of every row, left-padded to the longest: ids, mask, positions (gathered
    at ``src``, the position source column of each column) and the per-token tensors."""
    ids = inputs["input_ids"]
    B, device = ids.shape[0], ids.device
    Lp = int(keep.sum(1).max())
    new_ids = torch.full((B, Lp), pad_id, dtype=ids.dtype, device=device)
    new_am = torch.zeros((B, Lp), dtype=am.dtype, device=device)
    new_pos = torch.ones((full_pos.shape[0], B, Lp), dtype=torch.long, device=device)
    extra = {
        k: torch.zeros((B, Lp), dtype=inputs[k].dtype, device=device)
        for k in _PER_TOKEN
        if inputs.get(k) is not None
    }
    for b in range(B):
        idx = keep[b].nonzero().squeeze(1)
        n = idx.numel()
        new_ids[b, Lp - n :] = ids[b, idx]
        new_am[b, Lp - n :] = 1
        new_pos[:, b, Lp - n :] = full_pos[:, b, src[b, idx]]
        for k, t in extra.items():
            t[b, Lp - n :] = inputs[k][b, idx]
    return new_ids, new_am, new_pos, extra
