"""The VidCom2 paper's published numbers, its method names, and its two averaging rules.

Source: ``results/paper/paper_results.csv`` (the five tables of the VidCom2 project page, arXiv 2505.14454) and
``results/paper/methods.csv`` (paper method name -> registry name -> display label).

The averaging rules were recovered from the paper's own rows (see ``tests/eval/test_report_paper.py``):

- "Avg." (``avg_score``, Qwen3-VL-30B-A3B table) is the plain mean of the seven accuracy columns
  MVBench, LongVideoBench, MLVU, VideoMME overall, short, medium, long — VideoMME counts four times. It reproduces
  all four published values to 0.1.
- "average relative accuracy" (``avg_relative_pct``) is the mean over the same seven columns of
  ``score / vanilla score``, times 100, against the vanilla row of the same model and frame count. Rounded to one
  decimal it reproduces 36 of the 39 published values exactly; the other three (LLaVA-OV-7B at 25%: FastV,
  PDrop, Random) differ by 0.1 in the last digit (94.98/94.16/94.85 computed vs 94.9/94.1/94.8 printed). Rules
  that count VideoMME once (4 columns: 2/39), use only its breakdown (6 columns: 11/39), or divide averaged
  scores (13/39) do not reproduce the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"

# The paper's accuracy columns, in its order; the scale of every value is 0-100.
ACCURACY_COLUMNS = (
    "mvbench",
    "longvideobench",
    "mlvu",
    "videomme_overall",
    "videomme_short",
    "videomme_medium",
    "videomme_long",
)
# Table 3's benchmarks: shown as columns where a group has them, never part of "Avg." or the relative accuracy
# (the paper's averages are over the seven columns above).
EXTRA_COLUMNS = ("egoschema", "perceptiontest")
COLUMN_LABELS = {
    "egoschema": "EgoSchema",
    "perceptiontest": "PerceptionTest",
    "mvbench": "MVBench",
    "longvideobench": "LongVideoBench",
    "mlvu": "MLVU",
    "mlvu_present_types": "MLVU (types present)",
    "videomme_overall": "VideoMME",
    "videomme_short": "Short",
    "videomme_medium": "Medium",
    "videomme_long": "Long",
    "avg_score": "Avg.",
    "avg_relative_pct": "Rel. (%)",
}
# benchmark_kind of a record -> the column its headline fills; VideoMME's breakdown fills short/medium/long.
KIND_COLUMN = {
    "mvbench": "mvbench",
    "longvideobench": "longvideobench",
    "mlvu": "mlvu",
    "videomme": "videomme_overall",
    "egoschema": "egoschema",
    "perceptiontest": "perceptiontest",
}

# The efficiency table's metrics: paper metric name -> (our column, label). Latencies are totals over the
# benchmark (the paper's 618 s for vanilla LLaVA-OV-7B is the whole of MVBench), memory in GB as printed.
EFFICIENCY_METRICS = {
    "llm_generation_latency_s": ("llm_generation_s", "LLM gen. (s)"),
    "model_generation_latency_s": ("model_generation_s", "Model gen. (s)"),
    "total_latency_s": ("total_s", "Total"),
    "gpu_peak_memory_gb": ("peak_memory_gb", "Peak mem. (GB)"),
    "throughput_samples_per_s": ("throughput", "Throughput (samples/s)"),
    "mvbench_accuracy": ("accuracy", "Accuracy"),
}


# Named variants of a method (the paper's ablation rows, written ``<method>:<variant>`` or ``<method>+fca`` in
# paper_results.csv): the hyper-parameters that differ from conf/method/<method>.yaml. A variant whose overrides
# are empty is the method's default (e.g. Table 5's u_frame + u_video is VidCom2 itself) and compares with its
# plain row. Reading of each knob: vidcom2/methods/vidcom2.py (Tables 5-8) and vidcom2/methods/fastv.py (Figure 5).
VARIANTS: dict[str, dict] = {
    "vidcom2:s_frame": {"token_score": "s_frame"},
    "vidcom2:neg_s_frame": {"token_score": "neg_s_frame"},
    "vidcom2:s_video": {"token_score": "s_video"},
    "vidcom2:neg_s_video": {"token_score": "neg_s_video"},
    "vidcom2:u_frame_plus_u_video": {},
    "vidcom2:uniform": {"budget": "uniform"},
    "vidcom2:max_u_video": {"frame_score": "max"},
    "vidcom2:mean_u_video": {},
    "vidcom2:window_4": {"window": 4},
    "vidcom2:window_8": {"window": 8},
    "vidcom2:window_16": {"window": 16},
    "vidcom2:window_32": {},  # 32 frames: the global centre
    "vidcom2:u_frame_only": {"score_weights": [1.0, 0.0]},
    "vidcom2:u_video_only": {"score_weights": [0.0, 1.0]},
    "vidcom2:weight_1_1": {},
    "vidcom2:weight_1_2": {"score_weights": [1.0, 2.0]},
    "vidcom2:weight_2_1": {"score_weights": [2.0, 1.0]},
    "fastv+fca": {"budget": "fca"},
    "sparsevlm+fca": {"budget": "fca", "recycle": False},  # recycled centres belong to no frame
}


def base_method(key: str) -> str:
    """``vidcom2:s_frame`` -> ``vidcom2``; ``fastv+fca`` -> ``fastv``; a plain name is returned unchanged."""
    return key.split(":", 1)[0].split("+", 1)[0]


def variant_overrides(key: str) -> dict:
    """The hyper-parameters of a row key (``{}`` for a plain method); unknown variants are an error."""
    if key == base_method(key):
        return {}
    if key not in VARIANTS:
        raise KeyError(f"unknown method variant {key!r}: add it to eval.paper.VARIANTS (known: {', '.join(VARIANTS)})")
    return VARIANTS[key]


def row_key(rec: dict) -> str:
    """The table row of a record: its method, or the named variant whose overrides its ``hparams`` carry."""
    method, hparams = rec["method"], rec.get("hparams") or {}
    for key, over in VARIANTS.items():
        if over and base_method(key) == method and all(_same(hparams.get(k), v) for k, v in over.items()):
            return key
    return method


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b))


def load_methods(path: Path | None = None) -> pd.DataFrame:
    """``methods.csv`` as a frame: method (registry name), label, paper_method ("" if the paper has none), note.

    Row order is the table order (the paper's, VidCom2 last)."""
    frame = pd.read_csv(path or PAPER_DIR / "methods.csv", dtype=str, keep_default_na=False)
    named = frame.loc[frame["paper_method"] != "", "paper_method"]
    if named.duplicated().any() or frame["method"].duplicated().any():
        raise ValueError(f"{path or PAPER_DIR / 'methods.csv'}: method and paper_method must each be unique")
    return frame


def method_label(method: str, methods: pd.DataFrame | None = None) -> str:
    """Display label of a registry method name ("vidcom2" -> "VidCom2"); unknown names are returned unchanged."""
    methods = load_methods() if methods is None else methods
    base = base_method(method)
    if base != method:  # a variant: "VidCom2 (s_frame)", "FastV + FCA"
        label = method_label(base, methods)
        return f"{label} + FCA" if method.endswith("+fca") else f"{label} ({method.split(':', 1)[1]})"
    hit = methods.loc[methods["method"] == method, "label"]
    return str(hit.iloc[0]) if len(hit) else method


def to_registry_name(paper_method: str, methods: pd.DataFrame | None = None) -> str:
    """The registry name of a paper method name (``vanilla`` -> ``none``); registry names pass through. A variant
    (``vidcom2:s_frame``) keeps its key, or becomes the plain method when it is the method's default."""
    methods = load_methods() if methods is None else methods
    if base_method(paper_method) != paper_method:
        base = to_registry_name(base_method(paper_method), methods)
        return base if not variant_overrides(paper_method) else paper_method
    hit = methods.loc[(methods["paper_method"] == paper_method) & (methods["paper_method"] != ""), "method"]
    if len(hit):
        return str(hit.iloc[0])
    if paper_method in set(methods["method"]):
        return paper_method
    raise KeyError(
        f"unknown method {paper_method!r}: add it to {PAPER_DIR / 'methods.csv'} "
        f"(known paper names: {', '.join(m for m in methods['paper_method'] if m)})"
    )


def mmss_to_seconds(text: str) -> float:
    """'26:03' -> 1563.0 (the paper prints total latency as minutes:seconds)."""
    minutes, _, seconds = str(text).partition(":")
    if not seconds:
        raise ValueError(f"expected mm:ss, got {text!r}")
    return 60.0 * int(minutes) + float(seconds)


def load_published(path: Path | None = None, methods: pd.DataFrame | None = None) -> pd.DataFrame:
    """The published numbers, tidy: table, model, frames (nullable Int64), paper_method, method (registry
    name), retention_ratio, metric, value (float), source.

    ``total_latency_mmss`` becomes ``total_latency_s`` in seconds; every other value is a plain float.
    """
    path = path or PAPER_DIR / "paper_results.csv"
    raw = pd.read_csv(path, dtype={"value": str, "model": str, "method": str, "metric": str})
    missing = {"table", "model", "frames", "method", "retention", "metric", "value"} - set(raw.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    methods = load_methods() if methods is None else methods
    frame = raw.rename(columns={"method": "paper_method", "retention": "retention_ratio"})
    frame["method"] = [to_registry_name(m, methods) for m in frame["paper_method"]]
    frame["frames"] = frame["frames"].astype("Int64")
    is_mmss = frame["metric"] == "total_latency_mmss"
    frame["value"] = [mmss_to_seconds(v) if t else float(v) for v, t in zip(frame["value"], is_mmss)]
    frame.loc[is_mmss, "metric"] = "total_latency_s"
    frame["retention_ratio"] = frame["retention_ratio"].astype(float).round(4)
    return frame


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
    if not table:
        return published
    out = published[published["table"] == table].copy()
    out["table"] = table if table.startswith(("acc_", "efficiency_")) else f"acc_{table}"
    return out


def average_score(scores: Mapping[str, float], columns: tuple[str, ...] = ACCURACY_COLUMNS) -> float | None:
    """Mean of the accuracy columns present in ``scores`` (the paper's "Avg."); None if none is present."""
    values = [float(scores[c]) for c in columns if _present(scores.get(c))]
    return sum(values) / len(values) if values else None


def relative_accuracy(
    scores: Mapping[str, float], vanilla: Mapping[str, float], columns: tuple[str, ...] = ACCURACY_COLUMNS
) -> float | None:
    """The paper's average relative accuracy in %: mean over columns of ``100 * score / vanilla``.

    Only columns present (not None/NaN) in both rows count; None if there is none. With all seven columns this
    is the paper's rule (module docstring); with fewer, tables say how many columns were used.
    """
    ratios = [
        100.0 * float(scores[c]) / float(vanilla[c])
        for c in columns
        if _present(scores.get(c)) and _present(vanilla.get(c)) and float(vanilla[c]) != 0.0
    ]
    return sum(ratios) / len(ratios) if ratios else None


def implemented_methods() -> set[str]:
    """Registry names this project implements (``vidcom2.list_methods()``)."""
    import vidcom2

    return set(vidcom2.list_methods())


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


# ------------------------------------------------------------------------------------------------ presets

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
    )


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
    try:
        import vidcom2.compress as compress
    except ImportError:
        return "ok"
    check = getattr(compress, "check_supported", None)
    if check is not None:
        try:
            check(family, method)
        except (ValueError, NotImplementedError, KeyError):
            return f"not supported by {family}"
    if pretrained is not None:
        import yaml

        from eval import validate

        try:
            conf = {**yaml.safe_load((CONF_DIR / "method" / f"{method}.yaml").read_text()), **(overrides or {})}
            hparams = validate.method_hparams(conf, None)
            for ratio in ratios:
                validate.check_compatible(family, method, None, hparams, ratio, pretrained)
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

    parser = argparse.ArgumentParser(prog="python -m eval.paper", description="Run a table or sweep preset.")
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
