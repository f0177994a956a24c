"""The decode stage: dynamic KV-cache pruning while decoding (DyCoke stage 2), with scoped hooks and no eager
attention. It knows no method by name: the method's :class:`~vidcom2.types.Plan` carries a
:class:`~vidcom2.types.DecodeStage` (the layer ``L_d`` and a ``policy``).

At every decode step (one query) the attention dispatcher (:mod:`vidcom2.stages._dispatch`) computes layer
``L_d - 1``'s attention row of the current token, mean over heads (:func:`~vidcom2.stages.attention.last_row`),
restricted to the visual span, and hands it to ``policy.step(row, state)``; the policy returns the sorted prompt positions of
the span that layers ``>= L_d`` read this step (``None``: the full cache) and one number to record (DyCoke: the cosine to the
previous step's row). Those layers then read, for this step only, the cache entries of every non-visual position
plus the selected ones (a gather on read: the cache keeps everything). Prefill is never reduced (nor is a
cache-less forward: it is a prefill), and every prompt starts afresh. ``mode="mask"`` is the reference for tests:
the full cache is read and the unselected visual columns are masked instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from vidcom2.stages import masks
from vidcom2.stages._dispatch import scoped
from vidcom2.stages.attention import last_row
from vidcom2.stages.in_llm import candidates, check_cache, check_generate_kwargs, plan_for

MODES = ("prune", "mask")


@dataclass
class DecodeState:
    """What one decode-stage context saw, for the last prompt. Per decode step: ``rows`` (the row over the span,
    float32), ``notes`` (the policy's number, e.g. DyCoke's cosine to the previous row), ``selected`` (the span
    positions layers ``>= L_d`` read that step: a sorted index tensor into the prompt, or ``None`` = the full
    cache). ``last_selection``: the last non-``None`` selection (a policy may reuse it)."""

    span: torch.Tensor  # long [n] prompt positions of the visual span
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    selected: list = field(default_factory=list)
    phase: str = "idle"
    prompt_len: int = 0
    last_selection: torch.Tensor | None = None
    columns: torch.Tensor | None = None  # bool [kv_len] cache entries read this step (built once per step)
    index: torch.Tensor | None = None  # long: the same as indices (prune mode)


def span_of(visual: torch.Tensor, excludes_last: bool) -> torch.Tensor:
    """Prompt positions of the visual span from a bool ``[L]`` mask; ``excludes_last`` drops the last one."""
    span = torch.as_tensor(visual).reshape(-1).bool().nonzero().squeeze(1)
    return span[:-1] if excludes_last and span.numel() > 1 else span


class _DecodePruner:
    """The hooks of one context: phase tracking on the text model, the row at ``L_d - 1``, gathers after it."""

    def __init__(self, stage, span: torch.Tensor, mode: str, backend: str):
        self.stage, self.mode, self.backend = stage, mode, backend
        self.state = DecodeState(span=span)

    def on_text_forward(self, module, args, kwargs):
        check_cache(kwargs.get("past_key_values"))
        embeds, state = kwargs.get("inputs_embeds"), self.state
        if embeds is not None and embeds.shape[0] != 1:
            raise ValueError(f"decode-time pruning supports batch size 1 only (got {embeds.shape[0]})")
        past = kwargs.get("past_key_values")
        if past is not None and past.get_seq_length() > 0:
            state.phase = "decode"
        else:  # a new prompt: reset the step history
            state.phase, state.prompt_len = "prefill", embeds.shape[1] if embeds is not None else 0
            state.last_selection = state.columns = state.index = None
            state.rows, state.notes, state.selected = [], [], []
        return None

    def on_row(self, module, query, key, attention_mask, kwargs):
        state = self.state
        if state.phase != "decode" or query.shape[2] != 1:
            return
        scaling = kwargs.get("scaling") or module.scaling
        span = state.span.to(key.device)
        row = last_row(query, key, scaling, attention_mask)[span]
        current, note = self.stage.policy.step(row, state)  # before this step's row joins the history
        if current is not None:
            state.last_selection = current
        state.rows.append(row)
        state.notes.append(note)
        state.selected.append(current)
        state.columns = state.index = None
        if current is not None:  # once per step, shared by every layer >= L_d (same cache length)
            cols = torch.ones(key.shape[2], dtype=torch.bool, device=key.device)
            cols[span] = False
            cols[current] = True
            state.columns, state.index = cols, cols.nonzero().squeeze(1)

    def read(self, module, key, value, attention_mask):
        state = self.state
        if state.phase != "decode" or state.columns is None:
            return key, value, attention_mask
        kv, cols = key.shape[2], state.columns
        if cols.numel() != kv:
            raise RuntimeError(f"decode-time pruning: layer cache holds {kv} entries, layer L_d - 1 held {cols.numel()}")
        return masks.restrict_kv(key, value, attention_mask, cols, self.mode, self.backend, idx=state.index)


@contextmanager
def decode_pruning(text_model, layers, span: torch.Tensor, stage, *, mode: str = "prune") -> Iterator[DecodeState]:
    """Attach the decode stage ``stage`` (a :class:`~vidcom2.types.DecodeStage`) to ``text_model`` for the block;
    everything is undone on exit. span: long ``[n]`` prompt positions of the visual tokens (:func:`span_of`)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 1 <= stage.layer < len(layers):
        raise ValueError(f"decode-time pruning: the layer (L_d) must be in [1, {len(layers) - 1}], got {stage.layer}")
    config = text_model.config
    if mode == "mask" and "flash" in str(config._attn_implementation):
        raise ValueError("mode='mask' (the reference) needs a 4-D mask: run it with sdpa or eager attention")
    pruner = _DecodePruner(stage, torch.as_tensor(span).reshape(-1).long(), mode, config._attn_implementation)
    readers = [layers[i].self_attn for i in range(stage.layer, len(layers))]
    handle = text_model.register_forward_pre_hook(pruner.on_text_forward, with_kwargs=True)
    try:
        with scoped(text_model, rows={layers[stage.layer - 1].self_attn: pruner.on_row},
                    gathers=dict.fromkeys(readers, pruner.read)):  # fmt: skip
            yield pruner.state
    finally:
        handle.remove()
        pruner.state.phase = "idle"


@contextmanager
def attach(adapter, model, method, retention_ratio: float, inputs: dict, *, mode: str = "prune"):
    """``method``'s decode stage for the prompt ``inputs`` (already compressed by its pre-LLM stage) for the block;
    yields its :class:`DecodeState`, or ``None`` when the method's plan has no decode stage. The visual span is every
    video token of the prompt except layout tokens (LLaVA-OV's newline; :func:`~vidcom2.stages.in_llm.candidates`)."""
    layers = adapter.decoder_layers(model)
    plan = plan_for(method, retention_ratio, len(layers), None, mrope=adapter.mrope)
    if plan.decode is None:
        yield None
        return
    ids = inputs.get("input_ids")
    if ids is None or ids.shape[0] != 1:
        raise ValueError(
            f"{plan.method}: decode-time KV pruning supports batch size 1 only: run one sample per generate() call, "
            "or switch the method's decode stage off"
        )
    check_generate_kwargs(model, inputs)
    span = span_of(candidates(adapter, model, inputs), plan.decode.span_excludes_last)
    with decode_pruning(adapter.text_model(model), layers, span, plan.decode, mode=mode) as state:
        yield state


def generate(
    adapter, model, generate_fn, kwargs: dict, method, retention_ratio: float, recorder=None, *, slots=None,
    seed: int = 0, mode: str = "prune",
):  # fmt: skip
    """Run ``generate_fn(**kwargs)`` (the unwrapped ``model.generate``) with ``method``'s decode stage (see
    :func:`attach`). The signature is the in-LLM stage's (``vidcom2.compress`` calls both alike); ``recorder``,
    ``slots`` (of the uncompressed prompt, not this one) and ``seed`` are unused. Returns what ``generate_fn``
    returns."""
    with attach(adapter, model, method, retention_ratio, kwargs, mode=mode):
        return generate_fn(**kwargs)
