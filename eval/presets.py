"""Table and sweep presets: ``conf/experiment/<name>.yaml`` (one per paper table) and ``conf/sweep/<name>.yaml``.

    python -m eval.presets experiment llava_ov_7b [OVERRIDES...] [--dry-run | --check | --in-process]
    python -m eval.presets sweep ratios --check

A preset is composed with Hydra (:func:`load_preset`) into its grid of rows (method or named variant x retention
ratio, vanilla first) x benchmarks x seeds; :func:`sweep_commands` turns it into one resumable ``eval.run``
multirun per row key, :func:`run_in_process` runs it in this process (tiny presets), :func:`published_for` gives the
published rows its report compares with (:func:`method_published_for`: the other methods' own sources, for presets
with ``table.method_tables``). The published numbers themselves, the method names and the variants are in
:mod:`eval.paper`. Used by ``make table-<name>`` and ``make sweep`` (docs/reporting.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eval.paper import base_method, load_methods, variant_overrides

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PRESET_KINDS = ("experiment", "sweep")


@dataclass(frozen=True)
class Preset:
    """A table preset (``conf/experiment/<name>.yaml``) or a sweep (``conf/sweep/<name>.yaml``), composed.

    rows: (registry method, retention ratio) in table order, vanilla ``("none", 1.0)`` first; each becomes one
    Hydra multirun over ``benchmarks`` x ``seeds`` (see :func:`sweep_commands`).
    """

    kind: str
    name: str
    model: str
    family: str
    frames: int
    benchmarks: tuple[str, ...]
    rows: tuple[tuple[str, float], ...]
    seeds: tuple[int, ...]
    requires_gpu: bool
    paper_table: str | None
    extra: tuple[str, ...] = ()
    pretrained: str | None = None  # the model's checkpoint (resolved), for the pre-load checks of row_status
    paper_model: str | None = None  # the model's name in paper_results.csv (null for tiny models)
    stands_in_for: tuple[str, ...] = ()  # a tiny preset: the paper presets whose code path it exercises
    method_tables: tuple[str, ...] = ()  # the method sources compared with (eval.paper.load_method_published)


def preset_names(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / kind).glob("*.yaml"))


def load_preset(kind: str, name: str, overrides: tuple[str, ...] = ()) -> Preset:
    """Compose ``conf/eval.yaml`` with ``+<kind>=<name>`` (and ``overrides``) and read its grid.

    The grid comes from the ``table`` block: ``benchmarks`` (conf ids), either ``rows`` (method -> list of ratios,
    in the paper's order) or ``methods`` x ``ratios``, optional ``seeds`` (default [seed]), ``paper_table``,
    ``requires_gpu`` (default: the model has real weights), ``stands_in_for`` (a tiny counterpart: the paper
    presets it stands in for, see :func:`published_for`); or, for plain sweeps, from ``hydra.sweeper.params``
    (``method`` x ``retention_ratio``, optional ``benchmark`` and ``seed``; default: the composed benchmark).
    """
    if kind not in PRESET_KINDS:
        raise ValueError(f"preset kind must be one of {PRESET_KINDS}, got {kind!r}")
    if not (CONF_DIR / kind / f"{name}.yaml").is_file():
        raise FileNotFoundError(
            f"no preset {CONF_DIR / kind / name}.yaml; available {kind} presets: {', '.join(preset_names(kind))}"
        )
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("eval", overrides=[f"+{kind}={name}", *overrides], return_hydra_config=True)
    table = OmegaConf.to_container(cfg.table, resolve=True) if cfg.get("table") is not None else {}
    params = {k: [v.strip() for v in str(p).split(",")] for k, p in (cfg.hydra.sweeper.params or {}).items()}
    if "rows" in table:
        grid = {m: list(r) for m, r in table["rows"].items()}
    elif "methods" in table and "ratios" in table:
        grid = {m: list(table["ratios"]) for m in table["methods"]}
    elif "method" in params and "retention_ratio" in params:  # a plain Hydra grid (conf/sweep)
        grid = {m: [float(r) for r in params["retention_ratio"]] for m in params["method"]}
    else:
        raise ValueError(
            f"{kind}/{name}.yaml: give `table.rows` (method: [ratios]), `table.methods` + `table.ratios`, or "
            "`hydra.sweeper.params` with `method` and `retention_ratio` (see docs/reporting.md)"
        )
    benchmarks = table.get("benchmarks") or params.get("benchmark") or [str(cfg.benchmark.name)]
    seeds = table.get("seeds") or params.get("seed") or [cfg.seed]
    order = {m: i for i, m in enumerate(grid)}
    if "rows" not in table:  # a grid has no paper order: use methods.csv's, VidCom2 last as in the paper
        known = [m for m in load_methods()["method"] if m != "vidcom2"] + ["vidcom2"]
        order = {m: known.index(m) if m in known else len(known) + i for i, m in enumerate(grid)}
    pairs = {(m, round(float(r), 4)) for m, ratios in grid.items() if m != "none" for r in ratios}
    rows = [("none", 1.0)] + sorted(pairs, key=lambda p: (-p[1], order[p[0]]))
    return Preset(
        kind=kind,
        name=name,
        model=str(cfg.model.name),
        family=str(cfg.model.family),
        frames=int(cfg.model.frames),
        benchmarks=tuple(benchmarks),
        rows=tuple(rows),
        seeds=tuple(int(s) for s in seeds),
        requires_gpu=bool(table.get("requires_gpu", not cfg.model.random_weights)),
        paper_table=table.get("paper_table"),
        extra=tuple(overrides),
        pretrained=str(cfg.model.pretrained),
        paper_model=cfg.model.get("paper_model"),
        stands_in_for=tuple(table.get("stands_in_for") or ()),
        method_tables=tuple(table.get("method_tables") or ()),
    )


def implemented_methods() -> set[str]:
    """Registry names this project implements (``vidcom2.list_methods()``)."""
    import vidcom2

    return set(vidcom2.list_methods())


def published_for(published: pd.DataFrame, preset=None) -> pd.DataFrame:
    """The published rows a report compares with: all of them, or only the preset's ``paper_table`` (an ablation or
    figure id is given the ``acc_`` prefix the accuracy comparison selects on; ``efficiency_*`` ids keep theirs).

    A tiny counterpart (``stands_in_for``) compares with the published rows of the paper presets it stands in for,
    relabelled as its own model and frame count: random-weight numbers against the paper's, so that the
    comparison's code path (row matching, deltas, CI markers, the figure's diamonds) runs offline. Its tables carry
    the random-weights marker; the numbers mean nothing.
    """
    if preset is not None and getattr(preset, "stands_in_for", ()):
        parts = []
        for name in preset.stands_in_for:
            real = load_preset("experiment", name)
            rows = published_for(published, real)
            rows = rows[(rows["model"] == real.paper_model) & (rows["frames"].isna() | (rows["frames"] == real.frames))]
            parts.append(rows.assign(model=preset.model, frames=preset.frames))
        return pd.concat(parts, ignore_index=True).astype({"frames": "Int64"})
    table = getattr(preset, "paper_table", None)
    if not table:  # a preset of a method source's table compares with that source only (method_published_for)
        return published.iloc[0:0] if getattr(preset, "method_tables", ()) else published
    out = published[published["table"] == table].copy()
    out["table"] = table if table.startswith(("acc_", "efficiency_")) else f"acc_{table}"
    return out


def method_published_for(published: pd.DataFrame, preset=None) -> pd.DataFrame:
    """The method sources' rows a report compares with (:func:`eval.paper.load_method_published`): all of them, or
    only the preset's ``method_tables``. A tiny counterpart gets the rows of the method-table presets it stands in
    for, relabelled as its own model and frame count (random-weight numbers against published ones: the code path
    runs offline, the numbers mean nothing), as :func:`published_for` does for the VidCom2 paper's rows."""
    if preset is not None and getattr(preset, "stands_in_for", ()):
        parts = [published.iloc[0:0]]
        for name in preset.stands_in_for:
            real = load_preset("experiment", name)
            if not real.method_tables:
                continue
            rows = method_published_for(published, real)
            rows = rows[(rows["model"] == real.paper_model) & (rows["frames"].isna() | (rows["frames"] == real.frames))]
            parts.append(rows.assign(model=preset.model, frames=preset.frames))
        return pd.concat(parts, ignore_index=True).astype({"frames": "Int64"})
    tables = getattr(preset, "method_tables", ())
    return published[published["table"].isin(tables)].copy() if tables else published


def row_status(
    method: str, family: str, pretrained: str | None = None, ratios: tuple[float, ...] = (), overrides: dict | None = None
) -> str:
    """"ok", "not implemented" (not registered), "no conf/method/<name>.yaml" or "not supported by <family>".

    With ``pretrained`` and ``ratios``, also the checks ``eval.run`` makes before loading (``eval.validate``), with
    the method's own conf/method defaults: e.g. in-LLM pruning layers beyond a tiny checkpoint's depth give "not
    supported by the 4-layer LLM with conf/method/<name>.yaml" instead of a failed run.
    """
    if method not in implemented_methods():
        return "not implemented"
    if not (CONF_DIR / "method" / f"{method}.yaml").is_file():
        return f"no conf/method/{method}.yaml"
    from eval import compression, validate
    from vidcom2.registry import get_method

    try:  # the family has an adapter (what compress checks first)
        validate.check_compatible(family, get_method(method))
    except validate.ConfigError:
        return f"not supported by {family}"
    if pretrained is not None:
        import yaml

        try:
            conf = {**yaml.safe_load((CONF_DIR / "method" / f"{method}.yaml").read_text()), **(overrides or {})}
            impl = compression.instantiate_method(conf)
            for ratio in ratios:
                validate.check_compatible(family, impl, None, compression.run_ratio(method, ratio), pretrained)
        except validate.ConfigError:
            depth = validate.llm_depth(pretrained)
            model = f"the {depth}-layer LLM" if depth else pretrained
            return f"not supported by {model} with conf/method/{method}.yaml"
    return "ok"


def runnable(preset: Preset) -> tuple[dict[str, list[float]], list[str]]:
    """The preset's rows that can run (row key -> ratios, in table order) and one message per row that cannot.

    Rows with a status other than "ok" (:func:`row_status`) are not run; they stay in the tables as labelled rows.
    """
    ratios: dict[str, list[float]] = {}
    for method, ratio in preset.rows:
        ratios.setdefault(method, []).append(ratio)
    ok, skipped = {}, []
    for method, rs in ratios.items():
        status = row_status(base_method(method), preset.family, preset.pretrained, tuple(rs), variant_overrides(method))
        if status != "ok":
            skipped.append(f"{method} at {', '.join(f'{r:g}' for r in rs)}: {status} (kept as a row in the tables)")
        else:
            ok[method] = rs
    return ok, skipped


def _method_overrides(key: str) -> list[str]:
    return [f"method={base_method(key)}", *(f"method.{k}={_hydra_value(v)}" for k, v in variant_overrides(key).items())]


def sweep_commands(preset: Preset, python: str = "python") -> tuple[list[list[str]], list[str]]:
    """One Hydra multirun per runnable row key (its ratios x benchmarks x seeds); messages for skipped rows.

    Every command is resumable: ``eval.run`` skips a run whose record exists.
    """
    ok, skipped = runnable(preset)
    commands = []
    for method, rs in ok.items():
        base, *over = _method_overrides(method)
        commands.append([
            python, "-m", "eval.run", "-m", f"+{preset.kind}={preset.name}", base,
            f"retention_ratio={','.join(f'{r:g}' for r in rs)}", f"benchmark={','.join(preset.benchmarks)}",
            f"seed={','.join(map(str, preset.seeds))}", *over, *preset.extra,
        ])  # fmt: skip
    return commands, skipped


def run_overrides(preset: Preset) -> tuple[list[list[str]], list[str]]:
    """The Hydra overrides of every single run of the preset (row x ratio x benchmark x seed), for an in-process
    run (:func:`run_in_process`); messages for skipped rows as in :func:`sweep_commands`."""
    ok, skipped = runnable(preset)
    runs = [[f"+{preset.kind}={preset.name}", *_method_overrides(method), f"retention_ratio={r:g}", f"benchmark={b}",
             f"seed={s}", *preset.extra]
            for method, rs in ok.items() for r in rs for b in preset.benchmarks for s in preset.seeds]  # fmt: skip
    return runs, skipped


def run_in_process(preset: Preset) -> tuple[list[Path], list[str]]:
    """Every run of the preset in this process, one after the other (the model is loaded once and reused, see
    :func:`eval.runner.load_model`); finished runs of the same identity are skipped, so presets that share a
    configuration share its record. Returns the record paths and the configuration errors (one line each)."""
    from hydra import compose, initialize_config_dir

    from eval.runner import run
    from eval.validate import ConfigError

    paths, errors = [], []
    for overrides in run_overrides(preset)[0]:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("eval", overrides=overrides)
        try:
            paths.append(run(cfg))
        except ConfigError as e:
            errors.append(f"{' '.join(overrides)}: {e}")
    return paths, errors


def _hydra_value(value) -> str:
    """A Hydra override value: lists as ``[a,b]``, booleans ``true``/``false``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return str(value)


def check_device(preset: Preset) -> None:
    """Stop before anything loads when a real-weight preset has no CUDA device."""
    if not preset.requires_gpu:
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            f"{preset.kind} {preset.name!r} evaluates {preset.model} (real weights) and needs a CUDA GPU, but "
            "torch.cuda.is_available() is False. Nothing was loaded or downloaded. Run it on a GPU machine, or try "
            "the CPU-sized preset: make table-tiny."
        )


def main(argv: list[str] | None = None) -> int:
    import argparse
    import subprocess
    import sys

    parser = argparse.ArgumentParser(prog="python -m eval.presets", description="Run a table or sweep preset.")
    parser.add_argument("kind", choices=PRESET_KINDS)
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. limit=10)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--check", action="store_true", help="only compose the preset and check the device")
    parser.add_argument("--in-process", action="store_true",
                        help="every run in this process, one model load (tiny presets; no Hydra launcher)")
    args = parser.parse_intermixed_args(argv)  # flags may come after the overrides
    preset = load_preset(args.kind, args.name, tuple(args.overrides))
    if not args.dry_run:
        check_device(preset)
    if args.check:
        print(f"[{preset.name}] {preset.model}, {len(preset.rows)} rows x {len(preset.benchmarks)} benchmark(s): ok")
        return 0
    if args.in_process and not args.dry_run:
        for line in run_overrides(preset)[1]:
            print(f"[{preset.name}] skip {line}")
        paths, errors = run_in_process(preset)
        for line in errors:
            print(f"[{preset.name}] error: {line}", file=sys.stderr)
        print(f"[{preset.name}] {len(paths)} run(s) finished or found; {len(errors)} refused")
        return 1 if errors else 0
    commands, skipped = sweep_commands(preset, sys.executable)
    for line in skipped:
        print(f"[{preset.name}] skip {line}")
    failed = []
    for cmd in commands:
        print(f"[{preset.name}] $ {' '.join(cmd[1:]) if not args.dry_run else ' '.join(['python', *cmd[1:]])}")
        if not args.dry_run and subprocess.run(cmd).returncode != 0:
            failed.append(cmd[5])
    if failed:
        print(f"[{preset.name}] FAILED: {', '.join(failed)}; rerun the same command to resume", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
