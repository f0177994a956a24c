"""In-LLM token merging (engine side), run by :class:`vidcom2.stages._pruner.Pruner` for a plan with a merge recipe
(``Plan.merge``): knows no method by name.

Before each decoder layer, from layer 0 on, until the recipe is done, ``merge.step(state, layer, hidden, patch,
row)`` gets the hidden states entering the layer (``[n, D]``, the current sequence), each token's in-frame position
(``patch [n]``, -1 for non-candidates; 0 for every candidate when the recipe does not need frames) and, when the
previous step asked for it, the plan's score row recorded inside the previous layer's attention (e.g. the last
query's row, over the current tokens). It returns a :class:`~vidcom2.types.MergeStep`: the tokens that leave and
the new hidden states of the rest (merged representatives; a prune is a step that only drops). Positions stay the
original ones (a representative keeps its own; cos/sin, position ids and the mask are gathered at the survivors).

Prune mode slices the sequence (the KV cache of layer ``l`` holds the tokens that entered layer ``l``); mask mode,
the reference, writes the merged states into the full sequence and hides the columns that left by a 4-D mask.
"""

from __future__ import annotations

import torch

from vidcom2.stages import masks
from vidcom2.stages._common import layer_hidden, with_hidden


def check(plan, position_mode: str, frame_columns) -> None:
    """Refuse merge plans the engine cannot run: with static stages, renumbered positions, no frame columns for a
    recipe that needs frames, a row wanted from a score that is not computed inside attention."""
    if plan.stages or plan.retroactive:
        raise ValueError(f"{plan.method}: a plan with a merge recipe takes no static stages and no retroactive reads")
    if position_mode != "original":
        raise ValueError(f"{plan.method}: merging keeps original positions; position_mode={position_mode!r} is not supported")
    if getattr(plan.merge, "needs_frames", False) and frame_columns is None:
        raise ValueError(f"{plan.method}: merging by frame needs frame_columns (the video's [F, N] prompt columns)")
    if plan.score is not None and plan.score.where != "attention":
        raise ValueError(f"{plan.method}: a merge plan's score row is recorded inside attention (score.where='attention')")


def start(pruner, embeds: torch.Tensor) -> None:
    """Per prefill: the recipe's state, each prompt position's in-frame index, no row wanted."""
    state, n = pruner.state, embeds.shape[1]
    patch = torch.full((n,), -1, dtype=torch.long, device=embeds.device)
    if getattr(pruner.plan.merge, "needs_frames", False):
        cols = pruner.frame_columns.to(embeds.device)
        frames, per_frame = cols.shape
        patch[cols.reshape(-1)] = torch.arange(per_frame, device=embeds.device).repeat(frames)
    else:
        patch[state.visual] = 0
    patch[~state.visual] = -1  # only candidates merge (layout tokens such as LLaVA-OV's newline never do)
    state.patch, state.merge_state = patch, pruner.plan.merge.start(pruner.num_layers)
    state.merging, state.row_layer, state.merged, state.kept_cos_sin = True, None, {}, None


def row_callbacks(pruner) -> dict:
    """Attention module -> callback recording the plan's score row in the one layer the recipe asked for."""

    def make(layer_idx: int):
        def callback(module, query, key, attention_mask, kwargs):
            state = pruner.state
            if state.phase != "prefill" or query.shape[2] == 1 or state.row_layer != layer_idx:
                return
            scaling = kwargs.get("scaling") or module.scaling
            ids = state.current if pruner.mode == "prune" else torch.arange(query.shape[2], device=query.device)
            ids = ids.to(query.device)
            state.rows[layer_idx] = pruner.plan.score.attention_row(
                state.scoring, query, key, scaling, attention_mask, ids=ids, visual=state.visual[ids], positions=None
            )

        return callback

    if pruner.plan.score is None:
        return {}
    return {pruner.layers[i].self_attn: make(i) for i in range(pruner.num_layers)}


def prefill(pruner, layer_idx: int, args, kwargs):
    """Forward pre-hook body of decoder layer ``layer_idx`` in prefill: this layer's merge step, then the layer's
    inputs for the current sequence."""
    state = pruner.state
    hidden = layer_hidden(args, kwargs)
    before = state.current
    if state.merging:
        hidden = _merge(pruner, layer_idx, hidden)
    keep = state.layer_keep[layer_idx] = state.current
    if pruner.mode == "prune":
        if keep.numel() != before.numel():  # the sequence changed here: gather cos/sin once for the layers after
            cos, sin = kwargs["position_embeddings"]  # the parent's, full prompt (the same for every layer)
            state.kept_cos_sin = (cos[:, keep], sin[:, keep])
        if state.kept_cos_sin is not None:
            _sliced_kwargs(kwargs, keep, state.kept_cos_sin)
        state.visual_per_layer[layer_idx] = int(state.visual[keep].sum())
    else:
        pruner._mask_kwargs(kwargs, hidden, keep)
    return with_hidden(args, kwargs, hidden)


def _merge(pruner, layer_idx: int, hidden: torch.Tensor) -> torch.Tensor:
    state, cur = pruner.state, pruner.state.current
    row = None
    if state.row_layer is not None and state.row_layer == layer_idx - 1:
        row = state.rows.get(layer_idx - 1)
        if row is None:
            raise RuntimeError(f"{pruner.plan.method}: no score row was recorded at layer {layer_idx - 1}")
        row = row[cur] if pruner.mode == "mask" else row
    h = hidden[0] if pruner.mode == "prune" else hidden[0, cur]
    step = pruner.plan.merge.step(state.merge_state, layer_idx, h, state.patch[cur], row)
    if step is None:
        return hidden
    keep = step.keep.to(cur.device)
    if bool((~keep & ~state.visual[cur]).any()):
        raise RuntimeError(f"{pruner.plan.method}: the merge recipe dropped a non-candidate token at layer {layer_idx}")
    if step.want_row and pruner.plan.score is None:
        raise RuntimeError(f"{pruner.plan.method}: the merge recipe wants a score row but the plan has no score")
    state.merging = not step.done
    state.row_layer = layer_idx if step.want_row else None
    state.merged[layer_idx] = int((~keep).sum())
    new = step.hidden.to(hidden.dtype)
    if pruner.mode == "prune":
        hidden = new[keep].unsqueeze(0)
    else:
        hidden = hidden.clone()
        hidden[0, cur] = new
    state.keep[layer_idx] = state.current = cur[keep]
    return hidden


def _sliced_kwargs(kwargs, keep: torch.Tensor, cos_sin) -> None:
    kwargs["position_embeddings"] = cos_sin
    if kwargs.get("position_ids") is not None:
        kwargs["position_ids"] = kwargs["position_ids"][..., keep]
    kwargs["attention_mask"] = masks.take(kwargs.get("attention_mask"), keep, keep)
