"""Scoped attachment: every instance attribute set and every hook registered here is undone in ``finally``.

No class is ever modified: ``instance_attr`` shadows a bound method (or any attribute) on one object and restores
the previous state (including "no instance attribute at all") on exit, also when the block raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

_MISSING = object()


@contextmanager
def instance_attr(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``obj.<name> = value`` on the instance for the block; afterwards the instance is as before."""
    previous = obj.__dict__.get(name, _MISSING)
    # via __dict__: instance attributes win over class attributes (and over nn.Module's _modules lookup)
    obj.__dict__[name] = value
    try:
        yield
    finally:
        if previous is _MISSING:
            obj.__dict__.pop(name, None)
        else:
            obj.__dict__[name] = previous


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
