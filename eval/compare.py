"""The comparison with the published numbers: one accuracy table's cells as ``ours / paper (Δ)`` and one efficiency
table's changes vs vanilla against the paper's (absolute times depend on the GPU, changes less). Rows are matched on
(method or named variant, ratio), models on the paper's name (``paper_model``) and frame count (unstated frames
match any). Called by :func:`eval.report.build`; rules of the averages in :mod:`eval.paper`.
"""

from __future__ import annotations

import math

import pandas as pd

from eval import paper
from eval.tables import (
    APPROX_MARK,
    DASH,
    RANDOM_MARK,
    Table,
    fmt,
    fmt_change,
    fmt_delta,
    fmt_ratio,
    pct_change,
)

ROW = ["method", "retention_ratio"]


def _paper_subset(published: pd.DataFrame, model_key: str, frames: int, prefix: str) -> pd.DataFrame:
    """Published rows of one model whose frames match (or are unstated, as for Qwen3-VL-32B / 30B-A3B)."""
    pub = published[published["table"].str.startswith(prefix) & (published["model"] == model_key)]
    return pub[pub["frames"].isna() | (pub["frames"] == frames)]


def vs_paper_table(acc: Table, published: pd.DataFrame, methods: pd.DataFrame, default_rows) -> Table | None:
    """Cell by cell: ours / paper (Δ = ours − paper), for one accuracy table; None if the paper lacks the model.

    ``default_rows(frame, methods)`` orders the union of our rows and the paper's (:func:`eval.report.default_rows`).
    """
    model_key, frames = acc.data["model_key"].iloc[0], acc.data["frames"].iloc[0]
    pub = _paper_subset(published, model_key, frames, "acc_")
    if pub.empty:
        return None
    pub = pub.pivot_table(index=ROW, columns="metric", values="value", aggfunc="first")
    # Figures 4 and 5 publish only % of vanilla per column (``<column>_rel_pct``): ours is computed the same way
    rel = [f"{c}_rel_pct" for c in paper.ACCURACY_COLUMNS if f"{c}_rel_pct" in pub.columns]
    metrics = [*paper.ACCURACY_COLUMNS, *paper.EXTRA_COLUMNS, "avg_score", "avg_relative_pct", *rel]
    rows = _with_relative(acc.data.set_index(ROW), rel)
    union = pd.DataFrame(list(rows.index) + [k for k in pub.index if k not in rows.index], columns=ROW)
    keys = [(r.method, r.retention_ratio) for r in default_rows(union, methods)]
    data, display = [], []
    for method, ratio in keys:
        ours = rows.loc[(method, ratio)] if (method, ratio) in rows.index else pd.Series(dtype=object)
        theirs = pub.loc[(method, ratio)] if (method, ratio) in pub.index else pd.Series(dtype=float)
        shown = {"Method": paper.method_label(method, methods) + ("" if ours.get("status", "ok") == "ok"
                                                                  else f" ({ours['status']})"),
                 "Ratio": fmt_ratio(ratio)}  # fmt: skip
        for metric in metrics:
            a, b = ours.get(metric), theirs.get(metric)
            delta = math.nan if a is None or b is None or pd.isna(a) or pd.isna(b) else float(a) - float(b)
            data.append({"model_key": model_key, "frames": frames, "method": method, "retention_ratio": ratio,
                         "metric": metric, "ours": a, "paper": b, "delta": delta})  # fmt: skip
            if metric == "avg_score" and theirs.get(metric) is None:
                continue  # the paper prints Avg. only in the Qwen3-VL-30B-A3B table
            cell = DASH if (a is None or pd.isna(a)) and (b is None or pd.isna(b)) else f"{fmt(a)} / {fmt(b)}"
            shown[_metric_label(metric)] = cell + fmt_delta(delta)
        display.append(shown)
    notes = [n for n in acc.notes if n.startswith((RANDOM_MARK, APPROX_MARK))]
    notes.append("Cells: ours / paper (Δ = ours − paper). Paper: results/paper/paper_results.csv.")
    if pub.index.size and _paper_subset(published, model_key, frames, "acc_")["frames"].isna().all():
        notes.append("The paper does not state the frame count for this model; compared regardless.")
    title = f"vs paper — {model_key}, {frames} frames"
    return Table(title, pd.DataFrame(data), pd.DataFrame(display).fillna(DASH), notes)


def _with_relative(rows: pd.DataFrame, rel: list[str]) -> pd.DataFrame:
    """``rows`` (indexed by method, ratio) with ``<column>_rel_pct`` = 100 * score / vanilla score of that column."""
    vanilla = rows.loc[("none", 1.0)] if ("none", 1.0) in rows.index else None
    for metric in rel:
        col = metric.removesuffix("_rel_pct")
        base = None if vanilla is None or col not in rows else vanilla[col]
        ok = base is not None and not pd.isna(base) and float(base) != 0.0
        rows[metric] = 100.0 * rows[col].astype(float) / float(base) if ok else math.nan
    return rows


def _metric_label(metric: str) -> str:
    if metric.endswith("_rel_pct"):
        return f"{paper.COLUMN_LABELS[metric.removesuffix('_rel_pct')]} (% of vanilla)"
    return paper.COLUMN_LABELS[metric]


def efficiency_vs_paper_table(eff: Table, published: pd.DataFrame, methods: pd.DataFrame) -> Table | None:
    """Changes vs vanilla, ours against the paper's (absolute times depend on the hardware, changes less)."""
    model_key, frames = eff.data["model_key"].iloc[0], eff.data["frames"].iloc[0]
    pub = _paper_subset(published, model_key, frames, "efficiency_")
    if pub.empty:
        return None
    pub = pub.pivot_table(index=ROW, columns="metric", values="value", aggfunc="first")
    base = pub.loc[("none", 1.0)] if ("none", 1.0) in pub.index else None
    ours = eff.data.set_index(ROW)
    data, display = [], []
    for (method, ratio), row in ours.iterrows():
        theirs = pub.loc[(method, ratio)] if (method, ratio) in pub.index else pd.Series(dtype=float)
        shown = {"Method": paper.method_label(method, methods), "Ratio": fmt_ratio(ratio)}
        for paper_metric, (col, header) in paper.EFFICIENCY_METRICS.items():
            if paper_metric == "mvbench_accuracy" or col not in ours.columns or paper_metric not in pub.columns:
                continue
            mine = row.get(f"{col}_change_pct")
            published_change = math.nan if base is None else pct_change(theirs.get(paper_metric), base.get(paper_metric))
            data.append({"model_key": model_key, "frames": frames, "method": method, "retention_ratio": ratio,
                         "metric": col, "ours_change_pct": mine, "paper_change_pct": published_change})  # fmt: skip
            shown[f"Δ {header.split(' (')[0]}"] = (
                DASH if method == "none" else f"{fmt_change(mine)} / {fmt_change(published_change)}"
            )
        a, b = row.get("accuracy"), theirs.get("mvbench_accuracy")
        shown["Accuracy"] = f"{fmt(a)} / {fmt(b)}" + ("" if pd.isna(a) or pd.isna(b) else fmt_delta(a - b))
        display.append(shown)
    notes = [n for n in eff.notes if n.startswith((RANDOM_MARK, APPROX_MARK))]
    notes.append("Cells: ours / paper, as change vs each side's own vanilla row (paper: LLaVA-OV-7B, MVBench).")
    title = f"Efficiency vs paper — {model_key}, {frames} frames"
    return Table(title, pd.DataFrame(data), pd.DataFrame(display), notes)
