"""DyCoke stage 2: dynamic KV-cache pruning during decoding, with scoped hooks and no eager attention.

Paper: Tao et al., *DyCoke*, CVPR 2025, arXiv 2411.15024. Official code: github.com/KD-TAO/DyCoke
``llava/model/language_model/modeling_qwen2.py`` (``PrunableDynamicCache.dycoke_pruning`` / ``update_cache``).
Spec: shared/spec/baselines.md 8.2.

At every decode step (one query), layer ``L_d - 1``'s attention row of the current token (mean over heads) over the
visual span gives ``a_t``; ``s = cos(a_t, a_{t-1})`` (first step: 0). If ``s < threshold`` the top
``int(n_span * (1 - P))`` visual positions are selected and layers ``>= L_d`` read, for this step only, the cache
entries of every non-visual position plus the selected ones (a gather on read: the cache keeps everything). If
``s >= threshold`` the official code leaves the selection unset, so layers ``>= L_d`` read the **full** cache
(``reuse=False``, default); ``reuse=True`` reads the last selection instead (the paper's description). Prefill is
never reduced (nor is a cache-less forward: it is a prefill). Every prompt starts afresh (first step: 0); the
official ``DycokeConfigs`` object is never reset, so there a sample's first step is compared with the previous
sample's last row.

Implementation: the in-LLM attention dispatcher (``vidcom2.adapters.in_llm``) is switched on the text config only;
at layer ``L_d - 1`` it computes the single decode row (``[kv_len]``, :func:`~vidcom2.adapters.in_llm.last_row`),
at layers ``>= L_d`` it gathers the selected key/value/mask columns before the real backend. ``mode="mask"`` is the
reference for tests: the full cache is read and the unselected visual columns are masked instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vidcom2.adapters import in_llm

MODES = ("prune", "mask")


@dataclass
class DecodeState:
    """What one stage-2 context saw, for the last ``generate`` call. Per decode step: ``rows`` (``a_t`` over the
    span, float32), ``similarity`` (``cos(a_t, a_{t-1})``, 0 for the first step), ``selected`` (the span positions
    layers ``>= L_d`` read that step: a sorted index tensor into the prompt, or ``None`` = the full cache)."""

    span: torch.Tensor  # long [n] prompt positions of the visual span
    keep: int  # visual positions kept when a step prunes
    rows: list = field(default_factory=list)
    similarity: list = field(default_factory=list)
    selected: list = field(default_factory=list)
    phase: str = "idle"
    prompt_len: int = 0
    previous: torch.Tensor | None = None
    last_selection: torch.Tensor | None = None
    current: torch.Tensor | None = None  # the selection of the step in flight
    columns: torch.Tensor | None = None  # bool [kv_len] cache entries read this step (built once per step)
    index: torch.Tensor | None = None  # long: the same as indices (prune mode)


def span_of(visual: torch.Tensor, off_by_one: bool) -> torch.Tensor:
    """Prompt positions of the visual span from a bool ``[L]`` mask; ``off_by_one`` drops the last one (the
    official ``image_token_length = #tokens - 1``, baselines.md 8.1)."""
    span = torch.as_tensor(visual).reshape(-1).bool().nonzero().squeeze(1)
    return span[:-1] if off_by_one and span.numel() > 1 else span


@contextmanager
def decode_pruning(
    text_model,
    layers,
    span: torch.Tensor,
    *,
    layer: int = 3,
    prune: float = 0.7,
    threshold: float = 0.9,
    reuse: bool = False,
    mode: str = "prune",
) -> Iterator[DecodeState]:
    """Attach DyCoke stage 2 to ``text_model`` for the block; everything is undone on exit.

    span: long ``[n]`` prompt positions of the visual tokens (see :func:`span_of`). layer: ``L_d`` (rows from layer
    ``L_d - 1``, selection read by layers ``>= L_d``). prune: ``P``. threshold: the cosine threshold.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 1 <= layer < len(layers):
        raise ValueError(f"dycoke: stage2_layer must be in [1, {len(layers) - 1}], got {layer}")
    if not 0.0 <= prune < 1.0:
        raise ValueError(f"dycoke: stage2_prune (P) must be in [0, 1), got {prune}")
    config = text_model.config
    if mode == "mask" and "flash" in str(config._attn_implementation):
        raise ValueError("mode='mask' (the reference) needs a 4-D mask: run it with sdpa or eager attention")
    span = torch.as_tensor(span).reshape(-1).long()
    state = DecodeState(span=span, keep=int(span.numel() * (1 - prune)))  # official int() truncation
    old_impl = config._attn_implementation
    handles, scored = [], layers[layer - 1].self_attn
    readers = [layers[i].self_attn for i in range(layer, len(layers))]

    def on_text_forward(module, args, kwargs):
        in_llm._check_cache(kwargs.get("past_key_values"))
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[0] != 1:
            raise ValueError(f"dycoke stage 2 supports batch size 1 only (got {embeds.shape[0]})")
        past = kwargs.get("past_key_values")
        if past is not None and past.get_seq_length() > 0:
            state.phase = "decode"
        else:  # a new prompt: reset the step history
            state.phase, state.prompt_len = "prefill", embeds.shape[1] if embeds is not None else 0
            state.previous = state.last_selection = state.current = None
            state.columns = state.index = None
            state.rows, state.similarity, state.selected = [], [], []
        return None

    def on_row(module, query, key, attention_mask, kwargs):
        if state.phase != "decode" or query.shape[2] != 1:
            return
        scaling = kwargs.get("scaling") or module.scaling
        row = in_llm.last_row(query, key, scaling, attention_mask)[state.span.to(key.device)]
        sim = 0.0 if state.previous is None else float(F.cosine_similarity(row, state.previous, dim=0))
        state.previous = row
        if sim < threshold:
            top = torch.topk(row, state.keep, sorted=False).indices if state.keep else row.new_zeros(0).long()
            state.current = state.last_selection = torch.sort(state.span.to(key.device)[top]).values
        else:
            state.current = state.last_selection if reuse else None
        state.rows.append(row)
        state.similarity.append(sim)
        state.selected.append(state.current)
        state.columns = state.index = None
        if state.current is not None:  # once per step, shared by every layer >= L_d (same cache length)
            cols = torch.ones(key.shape[2], dtype=torch.bool, device=key.device)
            cols[state.span.to(key.device)] = False
            cols[state.current] = True
            state.columns, state.index = cols, cols.nonzero().squeeze(1)

    def read(module, key, value, attention_mask):
        if state.phase != "decode" or state.columns is None:
            return key, value, attention_mask
        kv, cols = key.shape[2], state.columns
        if cols.numel() != kv:
            raise RuntimeError(
                f"dycoke stage 2: layer cache holds {kv} entries, layer L_d - 1 held {cols.numel()}"
            )
        if mode == "mask":
            allowed = cols.view(1, 1, 1, kv)
            if attention_mask is None and old_impl == "eager":  # eager adds its mask: make it additive
                attention_mask = torch.zeros(allowed.shape, dtype=key.dtype, device=key.device)
            if attention_mask is None:
                return key, value, allowed
            if attention_mask.dtype == torch.bool:
                return key, value, attention_mask[..., -kv:] & allowed
            return (
                key,
                value,
                attention_mask[..., -kv:].masked_fill(~allowed, torch.finfo(attention_mask.dtype).min),
            )
        idx = state.index
        if attention_mask is not None:
            attention_mask = attention_mask[..., -kv:].index_select(-1, idx)
        return key.index_select(2, idx), value.index_select(2, idx), attention_mask

    try:
        name = in_llm._register(old_impl)
        handles.append(text_model.register_forward_pre_hook(on_text_forward, with_kwargs=True))
        in_llm._ACTIVE[id(scored)] = on_row
        for attn in readers:
            in_llm._GATHER[id(attn)] = read
        config._attn_implementation = name
        yield state
    finally:
        config._attn_implementation = old_impl
        in_llm._ACTIVE.pop(id(scored), None)
        for attn in readers:
            in_llm._GATHER.pop(id(attn), None)
        for h in handles:
            h.remove()
        state.phase = "idle"


def generate(adapter, model, generate_fn, kwargs: dict, method, *, mode: str = "prune"):
    """Run ``generate_fn(**kwargs)`` (the prompt already compressed by the method's pre-LLM stage) with DyCoke
    stage 2 by ``method`` (a ``dycoke`` instance: ``stage2_layer``, ``stage2_prune``, ``stage2_threshold``,
    ``stage2_reuse``, ``span_off_by_one``). The visual span is every video token of the prompt except layout
    tokens (LLaVA-OV's newline; ``in_llm.candidates``). Returns what ``generate_fn`` returns."""
    ids = kwargs.get("input_ids")
    if ids is None or ids.shape[0] != 1:
        raise ValueError(
            "dycoke stage 2 (decode-time KV pruning) supports batch size 1 only: run one sample per generate() "
            "call, or set stage2=False"
        )
    in_llm.check_generate_kwargs(model, kwargs)
    visual = in_llm.candidates(adapter, model, kwargs)
    span = span_of(visual, method.span_off_by_one)
    with decode_pruning(
        adapter.text_model(model),
        adapter.decoder_layers(model),
        span,
        layer=method.stage2_layer,
        prune=method.stage2_prune,
        threshold=method.stage2_threshold,
        reuse=method.stage2_reuse,
        mode=mode,
    ):
        out = generate_fn(**kwargs)
    return out
