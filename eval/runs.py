"""Run records -> one tidy DataFrame: finding and loading ``record.json`` files (schemas 1 and 2), one row per
record in the paper's units, the variants that must not be averaged, and the mean over seeds. The tables and plots
built from the frame are :mod:`eval.report`'s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from eval import accuracy, paper, record
from eval.tables import fmt_ratio

MLVU_TYPES = accuracy.MLVU_TYPES
MLVU_PRESENT = "mlvu_present_types"  # MLVU's mean over the task types a limited run evaluated
GROUP = ["model_key", "frames"]
ROW = ["method", "retention_ratio"]
LATENCY_PARTS = ("vision_encoder", "compression", "prefill", "decode")


def find_records(root: Path) -> list[Path]:
    """Every ``record.json`` below ``root``, sorted (layout benchmark/model/method/r<ratio>/seed<seed>-<hash>)."""
    return sorted(Path(root).rglob("record.json"))


def load_record(path: Path) -> dict:
    """One record, checked against schema 1 (:func:`eval.record.validate`); its path is kept under ``_path``."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it and rerun that run") from err
    try:
        record.validate(data)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a run record of schema {record.READABLE_VERSIONS}: {err} "
                         "(see docs/record_schema.md)") from err
    return {**data, "_path": str(path)}


def load_records(paths: list[Path], keep=None) -> tuple[list[dict], list[tuple[Path, str]]]:
    """The records of ``paths`` that load (``keep(path)``: a filter applied before reading); a bad record is
    skipped and returned with the reason, never aborting the others."""
    records, skipped = [], []
    for path in paths:
        if keep is not None and not keep(path):
            continue
        try:
            records.append(load_record(path))
        except (OSError, ValueError) as err:
            skipped.append((path, str(err)))
    return records, skipped


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) and v else {key: v})
    return out


CELL = ["model_key", "frames", "benchmark", "method", "retention_ratio"]


def split_variants(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Runs of one table cell (model, frames, benchmark, method, ratio) whose identities differ in anything but
    the seed become separate rows: ``method`` gets the differing settings, e.g. ``vidcom2 [limit=2]`` (the bare
    name stays in ``method_base``). Returns the frame and one note per split cell saying what differs."""
    runs = runs.copy()
    runs["method_base"] = runs["method"]
    notes = []
    for key, cell in runs.groupby(CELL, sort=False):
        if cell["identity_key"].nunique() < 2:
            continue
        flats = {k: _flat(json.loads(v)) for k, v in zip(cell["identity_key"], cell["identity_json"])}
        keys = sorted({k for f in flats.values() for k in f})
        differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1]
        for ident, f in flats.items():
            label = ", ".join(f"{k}={json.dumps(f.get(k))}" for k in differ)
            runs.loc[cell.index[cell["identity_key"] == ident], "method"] = f"{key[3]} [{label}]"
        notes.append(f"{key[3]} at {fmt_ratio(key[4])} on {key[2]} ({key[0]}, {key[1]} frames): runs differ in "
                     f"{', '.join(differ)} besides the seed; shown as separate rows, never averaged.")
    return runs, notes


def _get(mapping: dict | None, *keys: str) -> float:
    for key in keys:
        mapping = mapping.get(key) if isinstance(mapping, dict) else None
    return math.nan if mapping is None else float(mapping)


def run_row(rec: dict) -> dict:
    """A record flattened to one row: identity, accuracy column(s), efficiency in the paper's units.

    Latency totals are per-sample means x n_samples (the paper prints totals over the benchmark); per-sample
    parts (``lat_*``, seconds) feed the latency-breakdown plot. Peak memory is in GiB (2**30 bytes).
    """
    kind = rec["benchmark_kind"]
    if kind not in paper.KIND_COLUMN:
        raise ValueError(f"{rec['_path']}: benchmark_kind {kind!r} is not one of {sorted(paper.KIND_COLUMN)}")
    acc, eff = rec["accuracy"] or {}, rec["efficiency"] or {}
    n = float(rec["n_samples"] or 0)
    ident = record.without_seed(record.record_identity(rec))
    row = {
        "path": rec["_path"],
        "identity_key": record.identity_hash(ident),
        "identity_json": json.dumps(ident, sort_keys=True),
        "benchmark": rec["benchmark"],
        "benchmark_kind": kind,
        "model": rec["model"],
        "model_key": rec["paper_model"] or rec["model"],
        "frames": int(rec["frames"]),
        "method": paper.row_key(rec),  # a named variant (eval.paper.VARIANTS) is its own row
        "retention_ratio": round(float(rec["retention_ratio"]), 4),
        "seed": int(rec["seed"]),
        "random_weights": bool(rec["random_weights"]),
        "approximation": rec["method_approximation"],
        "n_samples": n,
        "limit": rec.get("limit"),
        "accuracy": _get(acc, "headline"),
        paper.KIND_COLUMN[kind]: _get(acc, "headline"),
        "visual_tokens_in": _get(eff, "visual_tokens_in"),
        "visual_tokens_out": _get(eff, "visual_tokens_out"),
        "visual_tokens_layer_avg": _get(eff, "visual_tokens_layer_avg"),
        "retention_realised": _get(eff, "retention_realised"),
        "llm_generation_s": _get(eff, "latency_s", "llm_generation") * n,
        "model_generation_s": _get(eff, "latency_s", "model_generation") * n,
        "total_s": _get(eff, "total_wall_s"),
        "world_size": int((rec.get("data_parallel") or {}).get("world_size") or 1),
        "peak_memory_gb": _get(eff, "peak_memory_bytes") / 2**30,
        "peak_memory_kind": eff.get("peak_memory_kind"),
        "throughput": _get(eff, "throughput_samples_per_s"),
        "prefill_tflops": _get(eff, "flops", "prefill") / 1e12,
    }
    for part in (*LATENCY_PARTS, "llm_generation", "preprocess"):
        row[f"lat_{part}"] = _get(eff, "latency_s", part)
    if kind == "mlvu" and (acc.get("types_present") or MLVU_TYPES) < MLVU_TYPES:  # lmms-eval divides by all 7
        row[MLVU_PRESENT] = _get(acc, "headline_present_types")
        row["mlvu_types_present"] = int(acc["types_present"])
    if kind == "videomme":
        breakdown = {str(k).lower(): v for k, v in (acc.get("breakdown") or {}).items()}
        for part in ("short", "medium", "long"):
            row[f"videomme_{part}"] = math.nan if breakdown.get(part) is None else float(breakdown[part])
    return row


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """The tidy frame: one row per record (see :func:`run_row`)."""
    if not records:
        raise ValueError("no run records to report")
    frame = pd.DataFrame([run_row(r) for r in records])
    for col in (*paper.ACCURACY_COLUMNS, *paper.EXTRA_COLUMNS, MLVU_PRESENT, "mlvu_types_present"):
        if col not in frame:
            frame[col] = math.nan
    return frame


def aggregate_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every number, per (model_key, frames, benchmark_kind, method, ratio).

    Two different benchmarks of the same kind for one key would silently mix: that is an error naming both.
    """
    keys = [*GROUP, "benchmark_kind", *ROW]
    clash = runs.groupby(keys)["benchmark"].nunique()
    if (clash > 1).any():
        key = clash[clash > 1].index[0]
        names = sorted(runs.set_index(keys).loc[key, "benchmark"].unique())
        raise ValueError(
            f"benchmarks {names} are both of kind {key[2]!r} for {key}: report them separately "
            "with --benchmark or --runs"
        )
    numeric = runs.select_dtypes("number").columns.difference([*keys, "seed"])
    agg = runs.groupby(keys, dropna=False)[list(numeric)].mean()
    agg["n_seeds"] = runs.groupby(keys)["seed"].nunique()
    agg["random_weights"] = runs.groupby(keys)["random_weights"].any()
    agg["approximation"] = runs.groupby(keys)["approximation"].first()
    agg["benchmark"] = runs.groupby(keys)["benchmark"].first()
    agg["peak_memory_kind"] = runs.groupby(keys)["peak_memory_kind"].first()
    return agg.reset_index()


def accuracy_wide(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per (model_key, frames, method, ratio) with the accuracy columns (NaN where not run)."""
    cols = [c for c in (*paper.ACCURACY_COLUMNS, *paper.EXTRA_COLUMNS, MLVU_PRESENT, "mlvu_types_present") if c in agg]
    wide = agg.groupby([*GROUP, *ROW])[cols].max(min_count=1)  # each column comes from one benchmark kind
    flags = agg.groupby([*GROUP, *ROW]).agg(
        random_weights=("random_weights", "any"), approximation=("approximation", "first"), n_seeds=("n_seeds", "max")
    )
    return wide.join(flags).reset_index()
