"""Scoped attachment: every instance attribute set and every hook registered here is undone in ``finally``.

No class is ever modified: ``instance_attr`` shadows a bound method (or any attribute) on one object and restores
the previous state (including "no instance attribute at all") on exit, also when the block raises.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from torch import nn

_MISSING = object()


@contextmanager
def scoped_item(mapping: MutableMapping, key: Any, value: Any) -> Iterator[None]:
    """Set ``mapping[key] = value`` for the block; afterwards the key holds its old value, or is absent again."""
    previous = mapping.get(key, _MISSING)
    mapping[key] = value
    try:
        yield
    finally:
        if previous is _MISSING:
            mapping.pop(key, None)
        else:
            mapping[key] = previous


def instance_attr(obj: Any, name: str, value: Any):
    """Set ``obj.<name> = value`` on the instance for the block; afterwards the instance is as before."""
    # via __dict__: instance attributes win over class attributes (and over nn.Module's _modules lookup)
    return scoped_item(obj.__dict__, name, value)


@contextmanager
def forward_hooks(module: nn.Module, *, pre=None, post=None) -> Iterator[None]:
    """Register a forward pre-hook and/or forward hook on ``module`` for the block (removed in ``finally``)."""
    handles = []
    try:
        if pre is not None:
            handles.append(module.register_forward_pre_hook(pre))
        if post is not None:
            handles.append(module.register_forward_hook(post))
        yield
    finally:
        for handle in handles:
            handle.remove()
