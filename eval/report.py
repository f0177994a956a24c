"""Run records -> one tidy DataFrame (:mod:`eval.runs`) -> the paper's tables (Markdown, CSV, LaTeX) and plots.

Reads only ``record.json`` files (docs/record_schema.md, schemas 1 and 2); wandb is never consulted. A record
that does not load is named and skipped (exit status 3); runs whose identities differ in anything but the seed
are never averaged (:func:`split_variants`). Tables follow the
VidCom2 paper's layout: rows method x retention ratio (vanilla first), columns MVBench, LongVideoBench, MLVU,
VideoMME overall/short/medium/long, Avg. and average relative accuracy (rules in ``eval/paper.py``). Missing cells
print as "–". Usage: ``vtc-report --help`` and docs/reporting.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eval import compare, env, paper, plots, presets, record, report_methods, stats
from eval.runs import (  # noqa: F401  (re-exported: the reporter's records API)
    CELL,
    GROUP,
    LATENCY_PARTS,
    MLVU_PRESENT,
    MLVU_TYPES,
    ROW,
    accuracy_wide,
    aggregate_seeds,
    find_records,
    load_record,
    load_records,
    run_row,
    runs_frame,
    split_variants,
)
from eval.tables import (  # noqa: F401  (re-exported: the reporter's formatting API)
    APPROX_MARK,
    DASH,
    RANDOM_MARK,
    Table,
    fmt,
    fmt_change,
    fmt_delta,
    fmt_duration,
    fmt_num,
    fmt_ratio,
    pct_change,
    to_latex,
    to_markdown,
    write_tables,
)

RANDOM_NOTE = (
    f"{RANDOM_MARK} RANDOM WEIGHTS: these rows come from random-weight models (`random_weights: true`); "
    "their accuracy is meaningless and only shows that the pipeline runs."
)
SKIPPED_EXIT = 3  # the report was written, but some records could not be read


@dataclass
class Row:
    """One table row: a method at a retention ratio; status "not implemented" prints dashes and says so."""

    method: str
    retention_ratio: float
    status: str = "ok"


# ----------------------------------------------------------------------------------------------- row ordering


def default_rows(frame: pd.DataFrame, methods: pd.DataFrame) -> list[Row]:
    """Rows present in ``frame``, in the paper's order: vanilla, then ratios descending, methods in the order of
    ``results/paper/methods.csv`` (VidCom2 last, as in the paper), unknown methods alphabetically."""
    order = {m: i for i, m in enumerate(methods["method"]) if m != "vidcom2"}
    order["vidcom2"] = len(order) + 1000

    def key(r: tuple[str, float]) -> tuple:
        return (r[0] != "none", -r[1], order.get(r[0], len(order)), r[0])

    pairs = sorted({(m, float(r)) for m, r in zip(frame["method"], frame["retention_ratio"])}, key=key)
    return [Row(m, r) for m, r in pairs]


# ----------------------------------------------------------------------------------------------- formatting


def _label(row: Row, info: dict, methods: pd.DataFrame, approx: dict[str, str]) -> str:
    label = paper.method_label(row.method, methods)
    if row.status != "ok":
        return f"{label} ({row.status})"
    if _text(info.get("approximation")):
        approx[row.method] = info["approximation"]
        label += APPROX_MARK
    if info.get("random_weights"):
        label += RANDOM_MARK
    return label


def _text(value: object) -> bool:
    """True for a non-empty string (pandas gives NaN where a record had null)."""
    return isinstance(value, str) and bool(value.strip())


def _common_notes(flags: pd.DataFrame, approx: dict[str, str], methods: pd.DataFrame) -> list[str]:
    notes = []
    if len(flags) and flags["random_weights"].fillna(False).astype(bool).any():
        notes.append(RANDOM_NOTE)
    for method, text in sorted(approx.items()):
        notes.append(f"{APPROX_MARK} {paper.method_label(method, methods)} (`{method}`) is an approximation: {text}")
    if "n_seeds" in flags and len(flags) and (flags["n_seeds"].fillna(1) > 1).any():
        notes.append("Numbers are means over the seeds run (n_seeds column of the CSV).")
    return notes


# ------------------------------------------------------------------------------------------- accuracy table


def accuracy_table(wide: pd.DataFrame, group: tuple, rows: list[Row], methods: pd.DataFrame) -> Table:
    """The paper's accuracy table for one (model_key, frames) group."""
    model_key, frames = group
    sub = in_group(wide, model_key, frames).set_index(ROW)
    # Table 3's and MLVU over the types present, where run (outside Avg. and Rel.)
    extra = [c for c in (*paper.EXTRA_COLUMNS, MLVU_PRESENT) if c in sub and sub[c].notna().any()]
    cols = [*paper.ACCURACY_COLUMNS, *extra]
    vanilla = sub.loc[("none", 1.0)] if ("none", 1.0) in sub.index else None
    data, display, approx = [], [], {}
    for row in rows:
        info = sub.loc[(row.method, row.retention_ratio)] if (row.method, row.retention_ratio) in sub.index else {}
        scores = {c: info[c] for c in cols} if len(info) else {}
        n_cols = sum(not pd.isna(scores[c]) for c in paper.ACCURACY_COLUMNS) if scores else 0
        avg = paper.average_score(scores)
        rel = paper.relative_accuracy(scores, vanilla) if vanilla is not None and n_cols else None
        label = _label(row, dict(info) if len(info) else {}, methods, approx)
        data.append({"model_key": model_key, "frames": frames, "method": row.method,
                     "retention_ratio": row.retention_ratio, "status": row.status, **scores,
                     "avg_score": avg, "avg_relative_pct": rel, "n_columns": n_cols,
                     "random_weights": bool(info.get("random_weights", False)) if len(info) else None,
                     "n_seeds": info.get("n_seeds") if len(info) else None})  # fmt: skip
        display.append({"Method": label, "Ratio": fmt_ratio(row.retention_ratio),
                        **{paper.COLUMN_LABELS[c]: fmt(scores.get(c)) for c in cols},
                        "Avg.": fmt(avg), "Rel. (%)": fmt(rel)})  # fmt: skip
    data = pd.DataFrame(data)
    notes = _common_notes(sub.reset_index(), approx, methods)
    counts = sorted(set(data.loc[data["n_columns"] > 0, "n_columns"]))
    if counts and counts != [len(paper.ACCURACY_COLUMNS)]:
        notes.append(
            f"Avg. and Rel. average only the columns present ({', '.join(map(str, counts))} of {len(paper.ACCURACY_COLUMNS)}); "
            "the paper averages all seven (VideoMME overall, short, medium and long each count once)."
        )
    if MLVU_PRESENT in extra:
        k = sorted({int(n) for n in sub["mlvu_types_present"].dropna()})
        notes.append(f"MLVU is lmms-eval's headline, which divides by all {MLVU_TYPES} task types even when `limit` left "
                     f"some out (they count 0); {paper.COLUMN_LABELS[MLVU_PRESENT]} averages the {'/'.join(map(str, k))} "
                     "types evaluated (eval/accuracy.py).")
    if vanilla is None:
        notes.append("No vanilla (method none, ratio 100%) run for this model: Rel. is not computed.")
    elif (data["n_columns"] > 0).any() and data.loc[data["n_columns"] > 0, "avg_relative_pct"].isna().any():
        notes.append("Rel. is not computed where the vanilla score is 0 in every column present.")
    if (data["status"] != "ok").any():
        notes.append("'not implemented': the paper reports this method; this project does not implement it yet.")
    title = f"Accuracy — {model_key}, {frames} frames"
    return Table(title, data, pd.DataFrame(display), notes)


# ----------------------------------------------------------------------------------------- efficiency table

# (column of the aggregated frame, header, formatter); each also gets a change-vs-vanilla column.
EFFICIENCY_COLUMNS = (
    ("llm_generation_s", "LLM gen. (s)", fmt_num),
    ("model_generation_s", "Model gen. (s)", fmt_num),
    ("total_s", "Total", fmt_duration),
    ("peak_memory_gb", "Peak mem. (GiB)", fmt_num),
    ("throughput", "Throughput (samples/s)", fmt_num),
    ("prefill_tflops", "Prefill TFLOPs/sample", fmt_num),
)


def efficiency_table(agg: pd.DataFrame, group: tuple, rows: list[Row], methods: pd.DataFrame) -> Table:
    """Efficiency of one (model_key, frames, benchmark) group, each metric also as % change vs vanilla.

    LLM generation = prefill + decode and model generation = vision encoder + compression + prefill + decode,
    summed over the benchmark's samples (per-sample mean x n); total = the run's wall time.
    """
    model_key, frames, benchmark = group
    sub = in_group(agg, model_key, frames, benchmark)
    sub = sub.set_index(ROW)
    vanilla = sub.loc[("none", 1.0)] if ("none", 1.0) in sub.index else None
    data, display, approx = [], [], {}
    for row in rows:
        has = (row.method, row.retention_ratio) in sub.index
        info = sub.loc[(row.method, row.retention_ratio)] if has else pd.Series(dtype=object)
        rec = {"model_key": model_key, "frames": frames, "benchmark": benchmark, "method": row.method,
               "retention_ratio": row.retention_ratio, "status": row.status,
               "visual_tokens_out": info.get("visual_tokens_out"), "accuracy": info.get("accuracy")}  # fmt: skip
        shown = {"Method": _label(row, dict(info), methods, approx), "Ratio": fmt_ratio(row.retention_ratio),
                 "Tokens": fmt(info.get("visual_tokens_layer_avg"), 0)}  # fmt: skip
        for col, header, formatter in EFFICIENCY_COLUMNS:
            change = pct_change(info.get(col), None if vanilla is None else vanilla[col])
            rec[col], rec[f"{col}_change_pct"] = info.get(col), change
            # value and change vs vanilla in one cell, as the paper prints them
            extra = "" if row.method == "none" or pd.isna(change) else f" ({fmt_change(change)})"
            shown[header] = formatter(info.get(col)) + extra
        shown["Accuracy"] = fmt(info.get("accuracy"))
        data.append(rec)
        display.append(shown)
    notes = _common_notes(sub.reset_index(), approx, methods)
    notes.append(
        "Latencies are sums over the benchmark's samples (per-sample device-synchronised means x n); "
        "Tokens = visual tokens per sample seen by the LLM, averaged over layers; (±x%) = change vs vanilla."
    )
    if len(sub) and (sub["peak_memory_kind"] == "rss").any():
        notes.append("Peak memory is the process peak RSS (CPU run), not GPU memory.")
    if len(sub) and (sub["world_size"] > 1).any():
        dp = sorted({int(n) for n in sub["world_size"].dropna()})
        notes.append(
            f"Data parallel runs present (processes per run: {', '.join(map(str, dp))}): Total time is wall clock and "
            "shrinks with the process count; latencies, memory (largest process) and throughput are per process."
        )
    title = f"Efficiency — {model_key}, {frames} frames, {benchmark}"
    return Table(title, pd.DataFrame(data), pd.DataFrame(display), notes)


# ------------------------------------------------------------------------------------------------ the report


def build(
    records: list[dict],
    out_dir: Path,
    plots_dir: Path | None = None,
    rows: list[Row] | None = None,
    published: pd.DataFrame | None = None,
    title: str = "Results",
    method_published: pd.DataFrame | None = None,
) -> str:
    """All tables (and plots unless ``plots_dir`` is None) for ``records``; returns the Markdown report.

    ``rows``: the row order and the "not implemented" rows of an experiment preset; default: the rows present.
    Writes ``accuracy``, ``efficiency``, ``vs_paper``, ``efficiency_vs_paper`` (.md/.csv/.tex) and ``report.md``
    under ``out_dir``; with ``method_published`` (:func:`eval.paper.load_method_published`) also
    ``vs_method_papers``: ours next to each method source's own numbers (:mod:`eval.report_methods`).
    """
    methods = paper.load_methods()
    runs, variant_notes = split_variants(runs_frame(records))
    rows = _with_variants(rows, runs)
    agg = aggregate_seeds(runs)
    wide = accuracy_wide(agg)
    groups = list(dict.fromkeys(zip(wide["model_key"], wide["frames"])))
    acc_tables, eff_tables, vs_tables, eff_vs_tables, method_tables = [], [], [], [], []
    for group in groups:
        group_rows = rows if rows is not None else default_rows(in_group(wide, *group), methods)
        acc_tables.append(accuracy_table(wide, group, group_rows, methods))
        if published is not None and (vs := compare.vs_paper_table(acc_tables[-1], published, methods, default_rows)) is not None:
            vs_tables.append(vs)
        method_tables += report_methods.vs_method_tables(acc_tables[-1], method_published, methods)
        for benchmark in dict.fromkeys(in_group(agg, *group)["benchmark"]):
            in_bench = in_group(agg, *group, benchmark)
            if in_bench[[c for c, _, _ in EFFICIENCY_COLUMNS]].isna().all().all():
                continue  # nothing measured (e.g. accuracy-only records)
            bench_rows = rows if rows is not None else default_rows(in_bench, methods)
            eff_tables.append(efficiency_table(agg, (*group, benchmark), bench_rows, methods))
            kind = in_bench["benchmark_kind"].iloc[0]
            if published is not None and kind == "mvbench":
                if (evs := compare.efficiency_vs_paper_table(eff_tables[-1], published, methods)) is not None:
                    eff_vs_tables.append(evs)
            if plots_dir is not None:
                stem = _slug(f"{group[0]}_{group[1]}f_{benchmark}")
                plots.latency_breakdown(agg, (*group, benchmark), plots_dir / f"latency_{stem}")
                plots.accuracy_vs_latency(agg, (*group, benchmark), plots_dir / f"pareto_{stem}")
        if plots_dir is not None:
            plots.accuracy_vs_ratio(wide, group, plots_dir / f"accuracy_{_slug(f'{group[0]}_{group[1]}f')}",
                                    published)  # fmt: skip
            plots.relative_bars(wide, group, plots_dir / f"relative_{_slug(f'{group[0]}_{group[1]}f')}", published)
    ci = stats.cells(records, key=paper.row_key)  # 95% CIs and paired tests from samples.jsonl (eval/stats.py)
    ci_tables = [stats.companion_table(ci, methods)] if not ci.empty else []
    vs_tables = [stats.mark_paper_in_ci(t, ci) for t in vs_tables]
    sections = [("accuracy", acc_tables), ("accuracy_ci", ci_tables), ("efficiency", eff_tables),
                ("vs_paper", vs_tables), ("efficiency_vs_paper", eff_vs_tables),
                ("vs_method_papers", method_tables)]  # fmt: skip
    parts = [f"# {title}\n", f"{len(records)} run records, {len(groups)} model/frames group(s).\n"]
    if runs["random_weights"].any():
        parts.append(f"> **{RANDOM_NOTE}**\n")
    if (note := env.drift([r.get("env") or {} for r in records])) is not None:
        print(f"vtc-report: warning: {note}", file=sys.stderr)
        parts.append(f"> Warning: {note}.\n")
    parts += [f"> {note}\n" for note in variant_notes]
    for stem, tables in sections:
        if tables:
            write_tables(tables, out_dir, stem)
            parts += [to_markdown(t) for t in tables]
    text = "\n".join(parts)
    record.write_text(out_dir / "report.md", text)
    record.write_text(out_dir / "runs.csv", runs.to_csv(index=False))
    return text


def _with_variants(rows: list[Row] | None, runs: pd.DataFrame) -> list[Row] | None:
    """A preset's rows with each split cell's variants in place of the bare method (see :func:`split_variants`)."""
    if rows is None:
        return None
    out = []
    for row in rows:
        sel = runs[(runs["method_base"] == row.method) & (runs["retention_ratio"] == row.retention_ratio)]
        names = sorted(set(sel["method"]) - {row.method})
        out += [Row(name, row.retention_ratio, row.status) for name in names] or [row]
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vtc-report", description="Run records -> the paper's tables (md/csv/tex), comparison, plots."
    )
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="folder searched for record.json")
    parser.add_argument("--experiment", help="a conf/experiment preset: its rows, order and model only")
    parser.add_argument("--sweep", help="a conf/sweep preset: its rows and model only")
    parser.add_argument("--model", action="append", help="keep only these conf model ids (repeatable)")
    parser.add_argument("--benchmark", action="append", help="keep only these conf benchmark ids (repeatable)")
    parser.add_argument("--out", type=Path, help="tables folder (default results/tables/<preset or all>)")
    parser.add_argument("--plots", type=Path, help="plots folder (default results/plots/<preset or all>)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-paper", action="store_true", help="skip the comparison with the published numbers")
    parser.add_argument("--quiet", action="store_true", help="do not print the report")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="Hydra override when composing the preset, as given to its runs (e.g. cache_dir=...)")
    args = parser.parse_args(argv)
    preset = None
    if args.experiment or args.sweep:
        kind = "sweep" if args.sweep else "experiment"
        preset = presets.load_preset(kind, args.sweep or args.experiment, tuple(args.override))
    name = preset.name if preset else "all"
    paths = find_records(args.runs)
    keep = Selection(args.runs, set(args.model or ([preset.model] if preset else [])),
                     set(args.benchmark or (preset.benchmarks if preset else [])), preset)  # fmt: skip
    records, skipped = load_records(paths, keep=keep.path)
    records = [r for r in records if keep.record(r)]
    for path, why in skipped:
        print(f"vtc-report: skipped {path}: {why}", file=sys.stderr)
    if not records:
        where = f" matching {name}" if preset else ""
        print(f"vtc-report: no run records{where} under {args.runs} ({len(paths)} found in all). Run the "
              "experiment first (`make table-<name>`, `make sweep` or `python -m eval.run`).", file=sys.stderr)  # fmt: skip
        return 1
    rows = None
    if preset is not None:
        # a row with a record ran; one without says why it cannot run, if it cannot
        have = {(paper.row_key(r), round(float(r["retention_ratio"]), 4)) for r in records}
        rows = [Row(m, r, "ok" if (m, r) in have else presets.row_status(paper.base_method(m), preset.family,
                                                                      preset.pretrained, (r,), paper.variant_overrides(m)))
                for m, r in preset.rows]
    out = args.out or Path("results/tables") / name
    text = build(
        records, out, None if args.no_plots else (args.plots or Path("results/plots") / name), rows,
        None if args.no_paper else presets.published_for(paper.load_published(), preset), title=f"Results — {name}",
        method_published=None if args.no_paper else presets.method_published_for(paper.load_method_published(), preset),
    )  # fmt: skip
    if not args.quiet:
        print(text)
    print(f"vtc-report: tables in {out}/", file=sys.stderr)
    if skipped:
        print(f"vtc-report: {len(skipped)} bad record(s) skipped (named above); the tables leave them out",
              file=sys.stderr)
        return SKIPPED_EXIT
    return 0


@dataclass
class Selection:
    """The records a report keeps: conf model ids, conf benchmark ids (empty = any) and, with a preset, its frames
    and rows (method or named variant, ratio), so that other presets' runs in the same folder stay out of its
    tables, intervals and figures. :meth:`path` applies the id filters to a record's path before it is read (layout
    ``<benchmark>/<model>/...`` under ``root``; a record outside that layout is read), :meth:`record` all of them."""

    root: Path
    models: set
    benchmarks: set
    preset: object = None

    def path(self, path: Path) -> bool:
        parts = Path(path).relative_to(self.root).parts
        return len(parts) < 6 or self._ids(parts[1], parts[0])

    def record(self, rec: dict) -> bool:
        if not self._ids(rec["model"], rec["benchmark"]):
            return False
        p = self.preset
        row = (paper.row_key(rec), round(float(rec["retention_ratio"]), 4))
        return p is None or ((p.frames is None or rec["frames"] == p.frames) and row in set(p.rows))

    def _ids(self, model: str, benchmark: str) -> bool:
        return (not self.models or model in self.models) and (not self.benchmarks or benchmark in self.benchmarks)


def in_group(frame: pd.DataFrame, model_key: str, frames: int, benchmark: str | None = None) -> pd.DataFrame:
    """The rows of one table group: a model and frame count (and benchmark, for the efficiency tables)."""
    mask = (frame["model_key"] == model_key) & (frame["frames"] == frames)
    return frame[mask & (frame["benchmark"] == benchmark)] if benchmark is not None else frame[mask]


if __name__ == "__main__":
    sys.exit(main())
