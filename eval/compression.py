"""The one compression object a run builds from its config, before any weights load.

- the method instance: Hydra ``instantiate`` of the method group (``_target_: vidcom2.get_method`` with ``name`` and
  the hyper-parameters, the root ``budget`` override applied), validated by the library as it is built (an unknown
  hyper-parameter or a value the method refuses is ``vidcom2.registry.HparamError``, naming the key, the value and
  the fix); the harness only prefixes the config path (``method.<key>``, or the root ``budget``);
- the retention ratio: checked once by ``vidcom2.check_ratio`` (a ``vidcom2.budget.Ratio``, which the library then
  passes on unchecked); vanilla (``none``) always runs at 1.0.

The wrapper (:class:`eval.models.base.Harnessed`) and ``vidcom2.compress`` receive both as built: nothing checks
them again. ``method._target_`` is allowlisted before anything is instantiated (:func:`instantiate_method`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval.config_shape import METHOD_TARGETS, ConfigError, check_target


@dataclass(frozen=True)
class Compression:
    """What the run compresses with: ``method`` (the instance), its ``name``, ``hparams`` (the method group's keys
    without ``_target_``/``name``, root ``budget`` applied: part of the record identity) and ``retention_ratio``."""

    method: Any
    name: str
    hparams: dict
    retention_ratio: float


def build(c: dict) -> Compression:
    """The run's :class:`Compression` from the resolved config ``c`` (a :class:`ConfigError` names the key)."""
    name = c["method"]["name"]
    ratio = run_ratio(name, c["retention_ratio"])
    hparams = {k: v for k, v in c["method"].items() if k not in ("_target_", "name")}
    budget = c.get("budget")
    if budget is not None:
        _check_budget_applies(name, budget)
        hparams["budget"] = budget
    return Compression(instantiate_method(c["method"], budget), name, hparams, ratio)


def run_ratio(method: str, retention_ratio) -> float:
    """The ratio a run of ``method`` uses: ``retention_ratio`` checked by the library (vanilla too), 1.0 for none."""
    from vidcom2.budget import check_ratio

    try:
        r = check_ratio(retention_ratio)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"retention_ratio={retention_ratio!r}: {e}") from None
    return check_ratio(1.0) if method == "none" else r


def instantiate_method(method_cfg: dict, budget: str | None = None):
    """The method instance: Hydra ``instantiate`` of the method group (plain Python values, ``_convert_="all"``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from vidcom2.registry import HparamError

    check_target("method._target_", method_cfg.get("_target_"), METHOD_TARGETS)  # configs call project code only
    override = {} if budget is None else {"budget": budget}
    try:
        return instantiate(method_cfg, _convert_="all", **override)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, HparamError):
            where = f"method.{cause.key}" if cause.key else "method"  # the config path of the key at fault
            if cause.key == "budget" and budget is not None:
                where = "budget"  # the root override set it
            raise ConfigError(f"{where}: {cause}") from None
        if isinstance(cause, KeyError):  # an unregistered method name (the registry's "did you mean")
            raise ConfigError(f"method.name: {cause.args[0]}") from None
        first = (str(cause or e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"method: {first}; fix the method group (conf/method/*.yaml)") from None


def _check_budget_applies(name: str, budget) -> None:
    """The root ``budget`` override (a harness key) names a hyper-parameter: only methods that have one take it."""
    from vidcom2.registry import hparam_names, list_methods, method_class

    try:
        method_class(name)
    except KeyError:
        return  # instantiate_method names the unknown method
    if "budget" not in hparam_names(name):
        with_budget = [m for m in list_methods() if "budget" in hparam_names(m)]
        raise ConfigError(
            f"budget={budget}: method {name!r} has no per-frame budget allocator; budget applies to "
            f"{', '.join(with_budget)}. Drop the budget override."
        )


def method_of(method, hparams: dict | None = None):
    """The method instance of a wrapper's ``method`` argument: an instance as built (the harness's run), or a
    registered name built with ``hparams`` (the lmms-eval CLI's ``--model_args method=...``)."""
    from vidcom2.registry import get_method

    return get_method(method, **(hparams or {})) if isinstance(method, str) else method
