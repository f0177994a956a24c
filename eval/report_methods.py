"""Ours next to the other methods' own published numbers (``results/paper/method_papers.csv`` and
``official_method_runs.csv``, loaded by :func:`eval.paper.load_method_published`).

One table per source table and accuracy table (model, frames): the source's rows in its order, each cell
``ours / published (Δ = ours − published)``. These numbers are the method authors' own (or their runs of other
methods, e.g. HoliTom's VisionZip rows), so they are never merged with the VidCom2 paper's rows
(:mod:`eval.compare`, the VidCom2 authors' reruns and ports): each table names its source. Models match on the
paper's model name (``paper_model``), frames on the count (a source that does not state it matches any). Called by
:func:`eval.report.build`.
"""

from __future__ import annotations

import math

import pandas as pd

from eval import paper
from eval.tables import APPROX_MARK, DASH, RANDOM_MARK, Table, fmt, fmt_delta, fmt_ratio

ROW = ["method", "retention_ratio"]
# metrics that only the source has: shown, never compared (ours is the public EgoSchema subset; the source's
# averages run over its own columns)
SOURCE_ONLY = ("egoschema_full", "source_avg_score", "source_avg_relative_pct")


def method_source_subset(published: pd.DataFrame, model_key: str, frames: int) -> pd.DataFrame:
    """Published rows of one model whose frames match (or are not stated by the source)."""
    pub = published[published["model"] == model_key]
    return pub[pub["frames"].isna() | (pub["frames"] == frames)]


def vs_method_tables(acc: Table, published: pd.DataFrame | None, methods: pd.DataFrame) -> list[Table]:
    """One comparison table per source table that has rows for ``acc``'s model and frames (may be none)."""
    if published is None or published.empty or acc.data.empty:
        return []
    model_key, frames = acc.data["model_key"].iloc[0], acc.data["frames"].iloc[0]
    pub = method_source_subset(published, model_key, frames)
    ours = acc.data.set_index(ROW)
    return [_source_table(model_key, frames, part, ours, methods, acc.notes)
            for _, part in pub.groupby("table", sort=False)]  # fmt: skip


def _source_table(model_key, frames, pub: pd.DataFrame, ours: pd.DataFrame, methods, acc_notes) -> Table:
    first = pub.iloc[0]
    metrics = [m for m in paper.METHOD_METRICS if m in set(pub["metric"])]
    data, display = [], []
    for (paper_method, method, ratio), cells in pub.groupby(["paper_method", "method", "retention_ratio"], sort=False):
        mine = ours.loc[(method, ratio)] if (method, ratio) in ours.index else pd.Series(dtype=object)
        theirs = dict(zip(cells["metric"], cells["value"]))
        shown = {"Row (source)": paper_method, "Ours": _ours_label(method, mine, methods), "Ratio": fmt_ratio(ratio)}
        for metric in metrics:
            a = None if metric in SOURCE_ONLY else mine.get(metric)
            b = theirs.get(metric)
            missing_a, missing_b = a is None or pd.isna(a), b is None or pd.isna(b)
            delta = math.nan if missing_a or missing_b else float(a) - float(b)
            data.append({"model_key": model_key, "frames": frames, "table": first["table"], "label": first["label"],
                         "kind": first["kind"], "paper_method": paper_method, "method": method,
                         "retention_ratio": ratio, "metric": metric, "ours": a, "published": b, "delta": delta})  # fmt: skip
            cell = DASH if missing_a and missing_b else f"{fmt(a)} / {fmt(b)}"
            shown[paper.COLUMN_LABELS[metric]] = cell + fmt_delta(delta)
        display.append(shown)
    notes = [n for n in acc_notes if n.startswith((RANDOM_MARK, APPROX_MARK))]
    notes += [
        "Cells: ours / published (Δ = ours − published). The source's own numbers, kept apart from the VidCom2 "
        "paper's rows (vs paper).",
        _source_note(first),
    ]
    if any(m in metrics for m in SOURCE_ONLY):
        notes.append("EgoSchema (full) is the 5,031-question submission set (ours is the public subset, column "
                     "EgoSchema); Avg./Rel. (source) average the source's own columns: shown, not compared.")
    if pub["frames"].isna().all():
        notes.append("The source does not state the frame count; compared regardless.")
    return Table(f"vs {first['label']} — {model_key}, {frames} frames", pd.DataFrame(data),
                 pd.DataFrame(display).fillna(DASH), notes)  # fmt: skip


def _ours_label(method: str, mine: pd.Series, methods: pd.DataFrame) -> str:
    label = paper.method_label(method, methods)
    if mine.empty:
        return f"{label} (not run)"
    status = mine.get("status", "ok")
    return label if status == "ok" or pd.isna(status) else f"{label} ({status})"


def _source_note(row: pd.Series) -> str:
    if row["kind"] == "official_log":
        return f"Source: {row['source']} (results/paper/official_method_runs.csv)."
    return (f"Source: {row['paper']}, arXiv {row['arxiv']}: {row['location']}; {row['source']} "
            "(results/paper/method_papers.csv).")
