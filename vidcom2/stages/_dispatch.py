"""The registered attention dispatcher (the only module that writes its tables), used through :func:`scoped`.

Recipe: shared/spec/hooks_transformers.md section 5 (transformers 5.23). A stateless function is registered in
``AttentionInterface`` and ``AttentionMaskInterface`` under ``vidcom2_in_llm_<backend>`` and switched on the **text
config only** for the block. For the attention modules a block names, it runs

- a row callback ``callback(module, query, key, attention_mask, kwargs)`` on the post-RoPE q/k (to compute a score
  row: never a full attention matrix, never a second pass of the layer), then
- a gather ``gather(module, key, value, attention_mask) -> (key, value, attention_mask)``: what the backend reads
  this call (the cache itself is untouched),

then the real backend. The registered names stay in transformers' interfaces after exit (stateless); the per-call
tables are filled only while a block is open and emptied in ``finally``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

NAME_PREFIX = "vidcom2_in_llm_"
_ROWS: dict[int, Callable] = {}  # id(attention module) -> row callback
_GATHERS: dict[int, Callable] = {}  # id(attention module) -> gather
_DISPATCHERS: dict[str, Callable] = {}


def _dispatcher(backend: str) -> Callable:
    if backend in _DISPATCHERS:
        return _DISPATCHERS[backend]
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(module, query, key, value, attention_mask, **kwargs):
        callback = _ROWS.get(id(module))
        if callback is not None:
            callback(module, query, key, attention_mask, kwargs)
        gather = _GATHERS.get(id(module))
        if gather is not None:
            key, value, attention_mask = gather(module, key, value, attention_mask)
        if backend == "eager":
            # eager is not in the interface; each modeling file has its own (identical) eager function
            real = sys.modules[type(module).__module__].eager_attention_forward
        else:
            real = ALL_ATTENTION_FUNCTIONS[backend]
        return real(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = f"{NAME_PREFIX}{backend}"
    _DISPATCHERS[backend] = attention
    return attention


def _register(backend: str) -> str:
    """Register (idempotently) the dispatcher and the backend's mask function under a new name; return the name.

    Both registrations are required: with an unknown name ``create_causal_mask`` returns ``None``. The name keeps
    ``flash`` in it for flash backends because transformers branches on ``"flash" in _attn_implementation``.
    """
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    if backend != "eager" and backend not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"in-LLM pruning cannot wrap attention implementation {backend!r} (not registered)")
    if backend not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"in-LLM pruning cannot wrap attention implementation {backend!r}: it has no mask function; "
            "load the model with attn_implementation='sdpa' (CPU default) or 'flash_attention_2'"
        )
    name = NAME_PREFIX + backend
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _dispatcher(backend))
    if name not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[backend])
    return name


@contextmanager
def scoped(text_model, *, rows: dict | None = None, gathers: dict | None = None) -> Iterator[str]:
    """Route ``text_model``'s attention through the dispatcher for the block, with ``rows`` (attention module ->
    row callback) and ``gathers`` (attention module -> gather); yields the wrapped backend's name (``"sdpa"``,
    ...). On exit the config's implementation and both tables are as before, also when the block raises."""
    rows, gathers = rows or {}, gathers or {}
    config = text_model.config
    backend = config._attn_implementation
    taken = [id(m) for m in rows if id(m) in _ROWS] + [id(m) for m in gathers if id(m) in _GATHERS]
    if taken:
        raise RuntimeError("an attention module is already routed by another vidcom2 block; nest nothing")
    name = _register(backend)
    try:
        _ROWS.update({id(m): cb for m, cb in rows.items()})
        _GATHERS.update({id(m): g for m, g in gathers.items()})
        config._attn_implementation = name
        yield backend
    finally:
        config._attn_implementation = backend
        for m in rows:
            _ROWS.pop(id(m), None)
        for m in gathers:
            _GATHERS.pop(id(m), None)


def routes() -> tuple[int, int]:
    """``(row callbacks, gathers)`` routed now by open blocks; ``(0, 0)`` when none is open."""
    return len(_ROWS), len(_GATHERS)
