"""The in-LLM pruning engine behind :func:`vidcom2.stages.in_llm.attach`: hooks that slice the prefill sequence at
each stage of a method's :class:`~vidcom2.types.Plan` and keep the decode steps consistent with the sliced cache.

Knows no method: the plan's score recipe gives the score rows, its recycler (if any) the new tokens, its merge
recipe (if any) the merged hidden states (run by :mod:`vidcom2.stages._merger`); the adapter gives RoPE (``rotary``) and family-specific per-token inputs (``prefill_sequence``: Qwen3-VL DeepStack).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from vidcom2.budget import count, counts, fca_ratios
from vidcom2.similarity import gaussian_scores
from vidcom2.stages import _merger, masks
from vidcom2.stages import _retro as retro
from vidcom2.stages._common import check_cache, layer_counts, layer_hidden, with_hidden
from vidcom2.stages._dispatch import scoped
from vidcom2.stages.masks import frame_keep, top

MODES = ("prune", "mask")
POSITION_MODES = ("original", "contiguous")


@dataclass
class PruneState:
    """What one pruning context saw. ``rows``: layer -> score row over the sequence entering that stage
    (``[n]`` float32); ``keep``: layer -> kept original prompt indices ``[n']`` (sorted) from that layer on
    (recycling: ids ``>= prompt_len`` are the new tokens, in sequence order); ``visual_per_layer``: visual tokens each
    layer processed in the last prefill; ``scoring``: what the score recipe's ``start`` returned for the last
    prefill (SparseVLM: ``{"raters": ...}``); ``recycled``: layer -> dict(sources = ids merged, centres ``[c, D]``)."""

    plan: object
    num_layers: int
    position_mode: str = "original"
    mode: str = "prune"
    rows: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)
    visual_per_layer: list = field(default_factory=list)
    prefills: int = 0
    # per-prefill working state
    visual: torch.Tensor | None = None  # bool [L] candidates of this forward (grows with recycled tokens)
    phase: str = "idle"
    current: torch.Tensor | None = None  # original indices of the sequence the last layer processed
    layer_keep: dict = field(default_factory=dict)  # layer -> original indices used by that layer (>= first stage)
    cos_sin: dict = field(default_factory=dict)  # stage layer -> (cos, sin) of its survivors (prefill)
    scored_positions: dict = field(default_factory=dict)  # stage layer -> (cos, sin) layer - 1 really used
    prompt_len: int = 0
    scoring: dict = field(default_factory=dict)
    recycled: dict = field(default_factory=dict)
    generator: torch.Generator | None = None
    next_id: int = 0
    frame_of: torch.Tensor | None = None  # per-frame budgets: frame index of every prompt position (-1: none)
    frame_s_video: torch.Tensor | None = None  # FCA: [F, N] similarities of the pre-LLM features to the video centre
    # merge plans (vidcom2.stages._merger): the recipe's state, whether it still merges
    merge_state: object = None
    merging: bool = False
    row_layer: int | None = None  # the layer whose attention records the score row (merge plans)
    patch: torch.Tensor | None = None  # long [n]: in-frame position of each prompt position (-1: not a candidate)
    merged: dict = field(default_factory=dict)  # layer -> tokens that left before it (merge plans)
    kept_cos_sin: tuple | None = None  # (cos, sin) of state.current (merge plans, prune mode)


class Pruner:
    """One pruning context on one model: validated settings, the hooks and the :class:`PruneState` they fill."""

    def __init__(self, adapter, model, visual, plan, *, mode="prune", position_mode=None, text_start=None,
                 seed=0, frame_columns=None):  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.adapter, self.model, self.plan, self.mode = adapter, model, plan, mode
        self.text_model, self.layers = adapter.text_model(model), adapter.decoder_layers(model)
        if mode == "mask" and "flash" in str(self.text_model.config._attn_implementation):
            raise ValueError("mode='mask' (the reference) needs a 4-D mask: run it with sdpa or eager attention")
        self.position_mode = position_mode or plan.position_mode
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {self.position_mode!r}")
        self.visual = torch.as_tensor(visual).reshape(-1).bool()
        self.num_layers = len(self.layers)
        # a plan without stages (SparseVLM keeping everything) attaches only the bookkeeping hook
        self.first = min((s.layer for s in plan.stages), default=self.num_layers)
        self.stages = {s.layer: s for s in plan.stages}
        if not 1 <= self.first or max(self.stages, default=0) >= self.num_layers:
            raise ValueError(f"pruning layers {sorted(self.stages)} must lie in [1, {self.num_layers - 1}]")
        self._check_recycling()
        if plan.merge is not None:
            _merger.check(plan, self.position_mode, frame_columns)
            self.first = 0  # merging starts before layer 0
        if plan.retroactive and (len(self.stages) != 1 or plan.recycle is not None or self.position_mode != "original"):
            raise ValueError(f"{plan.method}: retroactive KV pruning needs one stage, no recycling and original positions")
        if plan.budget not in ("global", "groups") and frame_columns is None:
            raise ValueError(
                f"{plan.method} budget={plan.budget!r} selects per frame: pass frame_columns (the video's [F, N] columns)"
            )
        self.text_start, self.seed, self.frame_columns = text_start, seed, frame_columns
        self.state = PruneState(plan=plan, num_layers=self.num_layers, position_mode=self.position_mode, mode=mode)

    def _check_recycling(self) -> None:
        if self.plan.recycle is None:
            return
        if self.mode == "mask":
            raise ValueError(
                "mode='mask' cannot reproduce SparseVLM's recycled (new) tokens: use recycle=False for the reference"
            )
        if self.position_mode != "contiguous":
            raise ValueError(
                "SparseVLM recycling inserts new tokens, which have no original position: use 'contiguous'"
            )

    @contextlib.contextmanager
    def attached(self) -> Iterator[PruneState]:
        """Hooks, the attention dispatcher's row callbacks and the adapter's per-token alignment for the block."""
        handles, score = [], self.plan.score
        rows, gathers = {}, {}
        if self.plan.merge is not None:
            rows = _merger.row_callbacks(self)
        elif score is not None and score.where == "attention":
            rows = {self.layers[s.layer - 1].self_attn: self._attention_callback(s.layer) for s in self.plan.stages}
        if self.plan.retroactive:  # layers before the stage decode over its survivors only (stages/_retro.py)
            read = retro.reader(self.state, self.first, self.mode, str(self.text_model.config._attn_implementation))
            gathers = {self.layers[i].self_attn: read for i in range(self.first)}
        aligned = self.adapter.prefill_sequence(self.model, self._pruned_current) if self.mode == "prune" else None
        try:
            handles.append(self.text_model.register_forward_pre_hook(self._on_text_forward, with_kwargs=True))
            # from the layer before the first stage on: it records the positions the first scored layer uses
            start = 0 if self.plan.merge is not None else self.first - 1 if self.stages else self.num_layers
            for layer_idx in range(start, self.num_layers):
                hook = self._layer_hook(layer_idx)
                handles.append(self.layers[layer_idx].register_forward_pre_hook(hook, with_kwargs=True))
            with scoped(self.text_model, rows=rows, gathers=gathers), aligned or contextlib.nullcontext():
                yield self.state
        finally:
            for h in handles:
                h.remove()
            self.state.phase = "idle"

    def _pruned_current(self):
        return self.state.current if self.state.phase == "prefill" else None

    # -- per forward ------------------------------------------------------------------------------------------------
    def _on_text_forward(self, module, args, kwargs):
        past = kwargs.get("past_key_values")
        check_cache(past)
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise ValueError("in-LLM pruning expects the text model to be called with inputs_embeds (the VLM path)")
        if embeds.shape[0] != 1:
            raise ValueError(
                f"in-LLM pruning supports batch size 1 only (got {embeds.shape[0]}); run one sample at a time"
            )
        if past is not None and past.get_seq_length() > 0:
            self.state.phase = "decode"
            return None
        self._start_prefill(embeds)
        return None

    def _start_prefill(self, embeds: torch.Tensor) -> None:
        state, plan, visual, n = self.state, self.plan, self.visual, embeds.shape[1]
        if n < visual.numel():
            raise ValueError(f"prompt of {n} tokens is shorter than the visual mask ({visual.numel()})")
        # without a cache every forward is a prefill of prompt + generated tokens (never candidates)
        state.visual = torch.cat([visual, visual.new_zeros(n - visual.numel())]).to(embeds.device)
        state.phase, state.prompt_len, state.prefills = "prefill", n, state.prefills + 1
        state.current = torch.arange(n, device=embeds.device)
        state.layer_keep, state.cos_sin, state.rows, state.keep = {}, {}, {}, {}
        state.scored_positions, state.recycled, state.next_id = {}, {}, n
        state.generator = torch.Generator().manual_seed(int(self.seed))
        n_vis = int(state.visual.sum())
        state.visual_per_layer = (
            layer_counts(plan, self.num_layers, n_vis) if self.mode == "prune" else [n_vis] * self.num_layers
        )
        for s in plan.stages:
            if s.keep > n_vis:
                raise ValueError(f"{plan.method}: stage at layer {s.layer} keeps {s.keep} > {n_vis} visual tokens")
        if plan.score is not None:
            start = self.text_start
            if start is None and bool(visual.any()):
                start = int(visual.nonzero().max()) + 1
            # prompt tokens only: without a cache, later forwards also carry generated tokens
            state.scoring = plan.score.start(embeds[0], state.visual, text_start=start, prompt_len=visual.numel())
        if plan.budget == "groups":  # a multistage method's groups (vidcom2.types.Plan.groups), candidates in order
            group_of = torch.as_tensor(plan.groups[0], device=embeds.device).long().reshape(-1)
            if group_of.numel() != n_vis:
                raise ValueError(f"{plan.method}: plan.groups names {group_of.numel()} candidates, the prompt has {n_vis}")
            state.frame_of = torch.full((n,), -1, dtype=torch.long, device=embeds.device)
            state.frame_of[state.visual] = group_of
        elif plan.budget != "global":
            cols = self.frame_columns.to(embeds.device)
            state.frame_of = torch.full((n,), -1, dtype=torch.long, device=embeds.device)
            frames = torch.arange(cols.shape[0], device=embeds.device).repeat_interleave(cols.shape[1])
            state.frame_of[cols.reshape(-1)] = frames
            if plan.budget == "fca":
                state.frame_s_video = gaussian_scores(embeds[0, cols])[0]
        if plan.merge is not None:
            _merger.start(self, embeds)

    def _attention_callback(self, stage_layer: int):
        def callback(module, query, key, attention_mask, kwargs):
            # the score row inside layer `stage_layer - 1`'s attention, prefill only (never a full matrix)
            state = self.state
            if state.phase != "prefill" or query.shape[2] == 1:
                return
            scaling = kwargs.get("scaling") or module.scaling
            ids = state.current if self.mode == "prune" else torch.arange(query.shape[2], device=query.device)
            state.rows[stage_layer] = self.plan.score.attention_row(
                state.scoring, query, key, scaling, attention_mask, ids=ids.to(query.device),
                visual=state.visual[ids], positions=state.scored_positions.get(stage_layer),
            )  # fmt: skip

        return callback

    def _layer_hook(self, layer_idx: int):
        def hook(module, args, kwargs):
            result = None
            if self.state.phase == "prefill" and layer_idx >= self.first:
                result = self._prefill(layer_idx, args, kwargs)
            elif self.state.phase == "decode" and layer_idx >= self.first:
                result = self._decode(layer_idx, args, kwargs)
            if self.state.phase == "prefill" and layer_idx + 1 in self.stages:
                # the cos/sin the scored layer really uses (after this hook's renumbering): SparseVLM v2's gravity
                self.state.scored_positions[layer_idx + 1] = (result[1] if result else kwargs)["position_embeddings"]
                if self.plan.score is not None and self.plan.score.where == "prev_layer_input":
                    self._prev_input_row(layer_idx, *(result if result else (args, kwargs)))
            return result

        return hook

    def _prev_input_row(self, layer_idx, args, kwargs) -> None:
        """``where="prev_layer_input"``: the row of stage ``layer_idx + 1`` from the input of layer ``layer_idx``
        (PruneVid: layer 10's own attention decides what layers >= 11 see), over the sequence entering it."""
        state = self.state
        hidden = layer_hidden(args, kwargs)
        ids = state.current if self.mode == "prune" else torch.arange(hidden.shape[1], device=hidden.device)
        cos, sin = kwargs["position_embeddings"]
        state.rows[layer_idx + 1] = self.plan.score.layer_row(
            self.layers[layer_idx], hidden, cos, sin, kwargs.get("attention_mask"), scoring=state.scoring, ids=ids
        )

    # -- prefill ----------------------------------------------------------------------------------------------------
    def _prefill(self, layer_idx, args, kwargs):
        if self.plan.merge is not None:
            return _merger.prefill(self, layer_idx, args, kwargs)
        hidden = layer_hidden(args, kwargs)
        local = None  # indices into the incoming (prune-mode) sequence when this layer drops tokens
        if layer_idx in self.stages:
            hidden, local = self._stage(layer_idx, hidden, kwargs)
        state = self.state
        keep = state.layer_keep[layer_idx] = state.current
        stage_layer = max(layer for layer in self.stages if layer <= layer_idx)
        if self.mode == "prune":
            if local is not None:
                hidden = hidden.index_select(1, local)
            self._prune_kwargs(kwargs, keep, stage_layer)
        else:
            self._mask_kwargs(kwargs, hidden, keep)
        return with_hidden(args, kwargs, hidden)

    def _score_row(self, layer_idx, hidden, kwargs) -> torch.Tensor:
        state, cur = self.state, self.state.current
        if self.plan.score.where in ("attention", "prev_layer_input"):
            row = state.rows.get(layer_idx)
            if row is None:
                raise RuntimeError(f"{self.plan.method}: no attention row was recorded at layer {layer_idx - 1}")
            return row[cur] if self.mode == "mask" else row
        cos, sin = kwargs["position_embeddings"]
        earlier = [layer for layer in self.stages if layer < layer_idx]
        c, s = state.cos_sin[max(earlier)] if earlier else (cos[:, cur], sin[:, cur])
        mask = masks.take(kwargs.get("attention_mask"), cur, cur)  # the parent's full-prompt mask
        seq = cur if self.mode == "mask" else slice(None)
        row = self.plan.score.layer_row(*self.adapter.layer_query_key(self.layers[layer_idx], hidden[:, seq]), c, s, mask)
        state.rows[layer_idx] = row
        return row

    def _stage(self, layer_idx, hidden, kwargs):
        """Choose the survivors of stage ``layer_idx``; returns ``(hidden, local)`` (``local``: the rows of the
        incoming sequence to keep, ``None`` when ``hidden`` already holds the new sequence)."""
        state, stage, cur = self.state, self.stages[layer_idx], self.state.current
        row = self._score_row(layer_idx, hidden, kwargs)
        vis_cur = state.visual[cur]
        chosen = torch.zeros_like(vis_cur)
        if self.plan.budget == "global":
            chosen[vis_cur] = top(row[vis_cur], stage.keep)
        else:
            chosen[vis_cur] = frame_keep(row[vis_cur], state.frame_of[cur][vis_cur], self._frame_budgets(stage))
        survive = ~vis_cur | chosen
        local = survive.nonzero().squeeze(1)
        state.current = cur[survive]
        if self.plan.recycle is not None:
            hidden, state.current = self._recycle(stage, hidden, cur, row, vis_cur, chosen, survive)
            local = None  # already applied
        state.keep[layer_idx] = state.current
        if self.plan.budget != "global" and self.mode == "prune":  # per-frame budgets: data-dependent counts
            kept = int(state.visual[state.current[state.current < state.prompt_len]].sum())
            kept += int((state.current >= state.prompt_len).sum())
            state.visual_per_layer[layer_idx:] = [kept] * (self.num_layers - layer_idx)
        # cos/sin of the survivors, computed once per stage (the parent hands every layer the same tensors)
        cos, sin = kwargs["position_embeddings"]
        if self.position_mode == "contiguous":
            pos = torch.arange(state.current.numel(), device=hidden.device)
            state.cos_sin[layer_idx] = self.adapter.rotary(self.model, hidden, pos)
        else:
            state.cos_sin[layer_idx] = (cos[:, state.current], sin[:, state.current])
        return hidden, local

    def _frame_budgets(self, stage) -> torch.Tensor:
        if self.plan.budget == "groups":
            return torch.as_tensor(self.plan.groups[1]).long().reshape(-1)
        frames, n = self.frame_columns.shape
        if self.plan.budget == "fca":
            return counts(fca_ratios(self.state.frame_s_video, stage.fraction), n)
        return torch.full((frames,), count(stage.fraction, n), dtype=torch.long)

    def _recycle(self, stage, hidden, cur, row, vis_cur, chosen, survive):
        """The plan's recycler turns the pruned tokens into new ones, inserted right after the last kept visual
        token; returns the new ``(hidden [1, n', D], ids [n'])`` (new ids ``state.next_id, ...``)."""
        state = self.state
        pruned = (vis_cur & ~chosen).nonzero().squeeze(1)
        local = survive.nonzero().squeeze(1)
        if pruned.numel() == 0:
            return hidden.index_select(1, local), cur[local]
        src, centres = self.plan.recycle.merge(hidden[0], row, pruned, stage, state.generator)
        c = centres.shape[0]
        last = int((survive & vis_cur).nonzero().max())
        before, after = local[local <= last], local[local > last]
        new_ids = torch.arange(state.next_id, state.next_id + c, device=cur.device)
        state.next_id += c
        state.visual = torch.cat([state.visual, state.visual.new_ones(c)])
        state.recycled[stage.layer] = {"sources": cur[src], "centres": centres}
        hidden = torch.cat([hidden[:, before], centres.unsqueeze(0), hidden[:, after]], dim=1)
        return hidden, torch.cat([cur[before], new_ids, cur[after]])

    def _prune_kwargs(self, kwargs, keep, stage_layer) -> None:
        kwargs["position_embeddings"] = self.state.cos_sin[stage_layer]
        if kwargs.get("position_ids") is not None:
            if self.position_mode == "contiguous":
                kwargs["position_ids"] = torch.arange(keep.numel(), device=keep.device).view(1, -1)
            else:
                kwargs["position_ids"] = kwargs["position_ids"][..., keep]
        prompt_len = self.state.prompt_len
        if int(keep.max()) >= prompt_len:  # recycled tokens: no rows/columns in the parent's mask
            kwargs["attention_mask"] = masks.with_new_tokens(kwargs.get("attention_mask"), keep, prompt_len)
        else:
            kwargs["attention_mask"] = masks.take(kwargs.get("attention_mask"), keep, keep)

    def _mask_kwargs(self, kwargs, hidden, keep) -> None:
        n = hidden.shape[1]
        kept = torch.zeros(n, dtype=torch.bool, device=hidden.device)
        kept[keep] = True
        if self.position_mode == "contiguous":
            # dropped tokens take the rank of the previous survivor (their values never reach a survivor)
            rank = (kept.long().cumsum(0) - 1).clamp(min=0)
            kwargs["position_embeddings"] = self.adapter.rotary(self.model, hidden, rank)
            if kwargs.get("position_ids") is not None:
                kwargs["position_ids"] = rank.view(1, -1)
        kwargs["attention_mask"] = masks.reference_mask(kwargs.get("attention_mask"), kept, n, n, hidden.device)

    # -- decode -----------------------------------------------------------------------------------------------------
    def _decode(self, layer_idx, args, kwargs):
        state = self.state
        keep, prompt_len = state.layer_keep[layer_idx], state.prompt_len
        past = kwargs.get("past_key_values")
        hidden = layer_hidden(args, kwargs)
        q_len = hidden.shape[1]
        cache_len = past.layers[layer_idx].get_seq_length() if past is not None else 0
        mask = kwargs.get("attention_mask")
        if self.mode == "prune":
            if mask is not None:
                # recycled tokens (ids >= prompt_len) read the last prompt column: never padding
                old = torch.where(keep >= prompt_len, prompt_len - 1, keep)
                cols = torch.cat([old, torch.arange(prompt_len, mask.shape[-1], device=keep.device)])
                kwargs["attention_mask"] = masks.take(mask, None, cols)
        else:
            kept = torch.zeros(prompt_len, dtype=torch.bool, device=hidden.device)
            kept[keep] = True
            kwargs["attention_mask"] = masks.reference_mask(mask, kept, q_len, cache_len + q_len, hidden.device)
        if self.position_mode == "contiguous":
            dropped = prompt_len - keep.numel() if self.mode == "mask" else 0
            start = cache_len - dropped
            pos = torch.arange(start, start + q_len, device=hidden.device)
            kwargs["position_embeddings"] = self.adapter.rotary(self.model, hidden, pos)
            if kwargs.get("position_ids") is not None:
                kwargs["position_ids"] = pos.view(1, -1)
        return args, kwargs
