"""Small helpers shared by the in-LLM engine (:mod:`vidcom2.stages._pruner`) and its callers
(:mod:`vidcom2.stages.in_llm`, :mod:`vidcom2.stages.decode`): the cache check, the per-layer visual-token counts of a
plan, and the hidden states of a decoder layer's pre-hook arguments."""

from __future__ import annotations


def check_cache(past) -> None:
    """Refuse a cache whose layers cannot hold different lengths (in-LLM and decode pruning need DynamicLayers)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if past is None:
        return
    if not isinstance(past, DynamicCache) or not all(type(layer) is DynamicLayer for layer in past.layers):
        raise ValueError(
            f"in-LLM pruning needs a DynamicCache of full-attention DynamicLayers (layers hold different lengths "
            f"after pruning); got {type(past).__name__}. Do not pass cache_implementation='static' or a StaticCache."
        )


def layer_counts(plan, num_layers: int, num_visual: int) -> list[int]:
    """Visual tokens processed by each decoder layer during prefill, ``[L]`` ints (baselines.md 1)."""
    out, current, stages = [], num_visual, {s.layer: s.keep + s.recycled for s in plan.stages}
    for layer in range(num_layers):
        current = stages.get(layer, current)
        out.append(current)
    return out


def layer_hidden(args: tuple, kwargs: dict):
    """The hidden states a decoder layer's forward pre-hook receives (first positional argument or keyword)."""
    return args[0] if args else kwargs["hidden_states"]


def with_hidden(args: tuple, kwargs: dict, hidden) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of a decoder layer's forward pre-hook with ``hidden`` in place of its hidden states."""
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs["hidden_states"] = hidden
    return args, kwargs
