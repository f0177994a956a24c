"""The config's own shape, checked before anything is imported: types and ranges of the root keys, the names that
become folders, the ``_target_`` allowlists. Each failure is one :class:`ConfigError` line naming the key and the
fix. What the config refers to (data, checkpoints, devices, the results folder) is :mod:`eval.validate`'s; what the
library checks itself (the method and its hyper-parameters, the ratio) is built once by :mod:`eval.compression`.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A run configuration that cannot work; the message says how to fix it."""


DTYPES = ("auto", "float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# ``_target_`` allowlists: the project's own classes only (nothing else is ever imported or called from a config)
METHOD_TARGETS = ("vidcom2.get_method",)
LOGGER_TARGETS = ("eval.wandb_log.WandbMirror",)


def check_int(key: str, value, minimum: int, *, optional: bool = False, fix: str = "") -> int | None:
    """An integer >= ``minimum`` (``null`` too when ``optional``); a float such as 1.7 is refused, not truncated."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise ConfigError(f"{key}={value!r} is not {allowed}; {fix or f'set {key}={max(minimum, 1)}'}")
    return value


def check_bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not a boolean; set {key}=true or {key}=false")
    return value


def _reject_nested_targets(key: str, group: dict) -> None:
    for k, v in group.items():
        if isinstance(v, dict):
            if "_target_" in v:
                raise ConfigError(f"{key}.{k}._target_ is not allowed: only {key}._target_ names a class; drop it")
            _reject_nested_targets(f"{key}.{k}", v)


def check_target(key: str, target, allowed: tuple[str, ...]) -> str:
    """``<group>._target_`` must be one of the project's classes: configs never import arbitrary callables."""
    if target not in allowed:
        raise ConfigError(f"{key}={target!r} is not one of the project's classes; set {key} to one of {', '.join(allowed)}")
    return target


def check_root(c: dict) -> None:
    """Types and ranges of the root keys and of the names that become folders (before anything is imported)."""
    from eval.record import check_name

    check_int("seed", c.get("seed"), 0, fix="set seed=<integer >= 0>, e.g. seed=0")
    check_int("limit", c.get("limit"), 1, optional=True, fix="set limit=<N docs per task> (N >= 1) or limit=null for all")
    check_int("warmup", c.get("warmup"), 0, fix="set warmup=<samples excluded from latency means>, e.g. warmup=1")
    check_int("batch_size", c.get("batch_size", 1), 1, fix="set batch_size=1 (latency runs) or e.g. batch_size=4")
    check_bool("force", c.get("force", False))
    check_bool("progress", c.get("progress", True))
    for key in ("results_dir", "cache_dir", "tiny_data"):
        if not isinstance(c.get(key), str) or not c[key]:
            raise ConfigError(f"{key}={c.get(key)!r} is not a folder path; set {key}=<folder>")
    pm = c.get("position_mode")
    if pm is not None and not isinstance(pm, str):
        raise ConfigError(f"position_mode={pm!r} is not a mode name; set position_mode=null or a mode the adapter offers")
    for group in ("model", "benchmark", "method"):
        if not isinstance(c.get(group), dict):
            raise ConfigError(f"{group}={c.get(group)!r} is not a config group; choose {group}=<name> (conf/{group}/)")
    _named("benchmark.name", c["benchmark"].get("name"), check_name)
    _named("method.name", c["method"].get("name"), check_name)
    tasks = c["benchmark"].get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"benchmark.tasks={tasks!r} is not a list of lmms-eval task names; set benchmark.tasks=[<task>]")
    for task in tasks:
        _named("benchmark.tasks", task, check_name)
    _reject_nested_targets("method", c["method"])  # method._target_ itself: eval.compression.instantiate_method


def _named(key: str, value, check) -> str:
    try:
        return check(key, value)
    except ValueError as e:
        raise ConfigError(str(e)) from None
