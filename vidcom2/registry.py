"""Method registry: one snake_case name per method, "did you mean ...?" errors.

A method is a frozen dataclass whose fields are its hyper-parameters and whose ``__call__`` maps
``features [F, N, D]`` and a ``retention_ratio`` to a :class:`~vidcom2.types.Selection`. The registered name is
the method's id everywhere (module file, Hydra config, results folder).

The registry imports no method: the package ``vidcom2/__init__`` imports :mod:`vidcom2.methods`, which registers the
built-in methods (as timm's package init does), so any import of ``vidcom2.registry`` sees them, and the import
graph runs one way (methods -> registry).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from vidcom2.types import MethodInfo

_METHODS: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: register a method dataclass under ``cls.info.name``."""
    info = getattr(cls, "info", None)
    if not isinstance(info, MethodInfo):
        raise TypeError(f"{cls.__name__} needs a class attribute `info: MethodInfo` to be registered")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass (its fields are the method's hyper-parameters)")
    if info.name in _METHODS and _METHODS[info.name] is not cls:
        raise ValueError(f"method {info.name!r} is registered twice ({_METHODS[info.name].__name__}, {cls.__name__})")
    _METHODS[info.name] = cls
    return cls


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Choices: {', '.join(sorted(choices))}."


def list_methods(stage: str | None = None) -> list[str]:
    """Names of all registered methods, sorted; with ``stage``, only those acting there (``MethodInfo.acts``: a
    pre-LLM method with an in-LLM part is listed under both)."""
    return sorted(n for n, c in _METHODS.items() if stage is None or stage in c.info.acts)


def method_class(name: str) -> type:
    if not isinstance(name, str) or name not in _METHODS:
        raise KeyError(f"unknown method {name!r}.{did_you_mean(str(name), list(_METHODS))}")
    return _METHODS[name]


def hparam_names(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(method_class(name))]


def get_method(name: str, **hparams: Any) -> Callable:
    """An instance of method ``name`` with ``hparams`` (unknown hyper-parameters are an error)."""
    cls = method_class(name)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in hparams:
        if key not in known:
            raise TypeError(
                f"method {name!r} has no hyper-parameter {key!r}.{did_you_mean(key, known) if known else ' It takes none.'}"
            )
    return cls(**hparams)
