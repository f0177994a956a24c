"""Sampling noise of the accuracy cells: 95% bootstrap intervals and paired tests against vanilla.

Source of truth: each run's ``samples.jsonl`` (next to its ``record.json``), one row per question with ``task``,
``doc_id`` and ``correct`` (the question's score from lmms-eval's own ``process_results``, 0/1 for every
multiple-choice benchmark; written by the runner through :func:`sample_score`) and ``group`` (VideoMME duration,
LongVideoBench duration group, MLVU task type). Runs without ``correct`` get no interval (printed as "–").

- **Interval** (per record and accuracy column): percentile bootstrap over questions, ``B = 2000`` resamples,
  seeded (``seed``, default 0, so a report is reproducible). Multi-subtask benchmarks resample *within* each
  subtask and keep the headline's averaging: MVBench (20 tasks) and MLVU (7 task types) average the subtask
  accuracies (as :mod:`eval.accuracy` does), the others pool the questions.
- **Paired test** (each row against vanilla, ``none`` at 1.0, of the same model, frames, benchmark and seed, on
  the questions both answered, matched by ``(task, doc_id)``): exact two-sided McNemar test on the discordant
  pairs, ``p = min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``; ``b`` = vanilla right and
  the method wrong, ``c`` = the reverse. The test is on the pooled questions; for MVBench's equal-size subtasks
  that is the headline's difference. ``p >= 0.05`` is marked ``n.s.`` (not significant at 5%).
- **Published value in the interval**: the vs-paper table marks each cell ``∈`` / ``∉``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

ALPHA = 0.05
N_BOOT = 2000
NS_MARK = "n.s."
#: benchmark kinds whose headline is the mean of subtask accuracies (subtask key: the row's task or group)
MACRO = {"mvbench": "task", "mlvu": "group"}
#: VideoMME's breakdown columns select the rows of one duration group
GROUP_COLUMNS = {"videomme_short": "short", "videomme_medium": "medium", "videomme_long": "long"}


def sample_score(sample: dict, metrics) -> tuple[float | None, str | None]:
    """``(score in [0, 1], group)`` of one lmms-eval sample log entry, from the first of ``metrics`` it carries.

    The per-question value lmms-eval's ``process_results`` produced: ``score`` (MVBench, VideoMME) or
    ``parsed_pred``/``pred_answer == answer`` (LongVideoBench, MLVU); a plain number is taken as is.
    """
    for metric in metrics:
        d = sample.get(metric)
        if isinstance(d, bool | int | float):
            return float(d), None
        if isinstance(d, dict):
            group = next((str(d[k]) for k in ("duration", "duration_group", "task_type") if k in d), None)
            if "score" in d:
                return float(d["score"]), group
            pred = d.get("parsed_pred", d.get("pred_answer"))
            if "answer" in d:
                return float(pred == d["answer"]), group
    return None, None


def load_samples(record_path: str | Path) -> list[dict]:
    """The ``samples.jsonl`` rows beside a record ([] when the file is missing)."""
    path = Path(record_path).parent / "samples.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cell_rows(rows: list[dict], column: str) -> list[dict]:
    """The scored rows that make up one accuracy column (VideoMME short/medium/long: that duration only)."""
    scored = [r for r in rows if r.get("correct") is not None]
    if column in GROUP_COLUMNS:
        return [r for r in scored if str(r.get("group", "")).lower() == GROUP_COLUMNS[column]]
    return scored


def estimate(rows: list[dict], kind: str) -> float:
    """The cell's accuracy in % from its rows, with the headline's averaging (macro over subtasks or pooled)."""
    strata = _strata(rows, kind)
    means = [float(np.mean(v)) for v in strata.values()]
    if kind in MACRO:
        return 100.0 * float(np.mean(means))
    return 100.0 * sum(float(np.sum(v)) for v in strata.values()) / sum(len(v) for v in strata.values())


def bootstrap_ci(rows: list[dict], kind: str, n_boot: int = N_BOOT, seed: int = 0, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile bootstrap interval (in %) of :func:`estimate`, resampling questions within each subtask."""
    rng = np.random.default_rng(seed)
    strata = _strata(rows, kind)
    total = sum(len(v) for v in strata.values())
    stat = np.zeros(n_boot)
    for values in strata.values():
        draws = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
        stat += draws / len(strata) if kind in MACRO else draws * len(values) / total
    lo, hi = np.quantile(100.0 * stat, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _strata(rows: list[dict], kind: str) -> dict[str, np.ndarray]:
    key = MACRO.get(kind, "task")
    out: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        out[str(r.get(key))].append(float(r["correct"]))
    return {k: np.asarray(v) for k, v in sorted(out.items())}


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for ``b`` and ``c`` discordant pairs (1.0 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired(rows: list[dict], vanilla: list[dict]) -> dict:
    """McNemar test of ``rows`` against ``vanilla`` on the questions both scored, matched by ``(task, doc_id)``."""
    base = {(r.get("task"), r.get("doc_id")): float(r["correct"]) for r in vanilla}
    pairs = [(base[k], float(r["correct"])) for r in rows if (k := (r.get("task"), r.get("doc_id"))) in base]
    b = sum(1 for v, m in pairs if v >= 0.5 > m)
    c = sum(1 for v, m in pairs if m >= 0.5 > v)
    return {"n_paired": len(pairs), "b": b, "c": c, "p_value": mcnemar_exact(b, c)}


def cells(records: list[dict], key=None, seed: int = 0, n_boot: int = N_BOOT) -> pd.DataFrame:
    """One row per (record, accuracy column) with ``accuracy`` (record), ``ci_low``/``ci_high``, ``n``, the paired
    test against vanilla (``delta`` in points, ``b``, ``c``, ``p_value``, ``significant``) and the row identity.

    ``key(record) -> method key`` names the row (default ``record["method"]``); records without scored samples
    are left out.
    """
    from eval import paper

    key = key or (lambda rec: rec["method"])
    out, samples = [], {}
    for rec in records:
        samples[id(rec)] = load_samples(rec["_path"])
    vanilla = {_group(r): r for r in records if r["method"] == "none"}
    for rec in records:
        kind = rec["benchmark_kind"]
        head = paper.KIND_COLUMN.get(kind, kind)
        columns = [head, *(GROUP_COLUMNS if kind == "videomme" else ())]
        base = vanilla.get(_group(rec))
        for column in columns:
            rows = cell_rows(samples[id(rec)], column)
            if not rows:
                continue
            lo, hi = bootstrap_ci(rows, kind, n_boot=n_boot, seed=seed)
            row = {"model_key": rec["paper_model"] or rec["model"], "frames": int(rec["frames"]),
                   "benchmark": rec["benchmark"], "method": key(rec),
                   "retention_ratio": round(float(rec["retention_ratio"]), 4), "seed": int(rec["seed"]),
                   "metric": column, "accuracy": estimate(rows, kind), "ci_low": lo, "ci_high": hi, "n": len(rows)}  # fmt: skip
            if base is not None and base is not rec:
                test = paired(rows, cell_rows(samples[id(base)], column))
                if test["n_paired"]:
                    row.update(test, delta=estimate(rows, kind) - estimate(cell_rows(samples[id(base)], column), kind),
                               significant=test["p_value"] < ALPHA)  # fmt: skip
            out.append(row)
    return pd.DataFrame(out)


def _group(rec: dict) -> tuple:
    return (rec["paper_model"] or rec["model"], int(rec["frames"]), rec["benchmark"], int(rec["seed"]))


def companion_table(ci: pd.DataFrame, methods: pd.DataFrame):
    """The "accuracy_ci" table: one line per cell with its interval and the paired test against vanilla."""
    from eval import paper, tables

    display = []
    for _, r in ci.iterrows():
        p = r.get("p_value")
        tested = p is not None and not pd.isna(p)
        display.append({
            "Model": f"{r['model_key']} ({r['frames']}f)", "Method": paper.method_label(r["method"], methods),
            "Ratio": tables.fmt_ratio(r["retention_ratio"]), "Seed": str(r["seed"]),
            "Column": paper.COLUMN_LABELS.get(r["metric"], r["metric"]), "Acc.": tables.fmt(r["accuracy"]),
            "95% CI": f"[{tables.fmt(r['ci_low'])}, {tables.fmt(r['ci_high'])}]", "n": str(int(r["n"])),
            "Δ vs vanilla": tables.fmt_delta(r["delta"]).strip(" ()") if tested else tables.DASH,
            "McNemar p": f"{p:.3g}" if tested else tables.DASH,
            "": (NS_MARK if not r["significant"] else "") if tested else "",
        })  # fmt: skip
    notes = [
        f"95% CI: percentile bootstrap over questions ({N_BOOT} resamples, seeded; MVBench and MLVU resample within "
        "subtasks and average them, as their headlines do). Δ and p: exact McNemar test against vanilla of the same "
        f"model, frames, benchmark and seed on the same questions; {NS_MARK} = not significant at 5% (eval/stats.py).",
    ]
    return tables.Table("Confidence intervals and paired tests", ci, pd.DataFrame(display), notes)


def mark_paper_in_ci(vs, ci: pd.DataFrame):
    """Add ``paper_in_ci`` to a vs-paper table's data and ``∈``/``∉`` to its cells (seed-0 interval, else the first)."""
    if vs is None or ci.empty:
        return vs
    first = ci.sort_values("seed").drop_duplicates(["model_key", "frames", "method", "retention_ratio", "metric"])
    lookup = {(r.model_key, r.frames, r.method, r.retention_ratio, r.metric): (r.ci_low, r.ci_high) for r in first.itertuples()}
    from eval import paper

    flags, rows = [], list(dict.fromkeys(zip(vs.data["method"], vs.data["retention_ratio"])))
    for r in vs.data.itertuples():
        bounds = lookup.get((r.model_key, r.frames, r.method, r.retention_ratio, r.metric))
        ok = None if bounds is None or r.paper is None or pd.isna(r.paper) else bool(bounds[0] <= r.paper <= bounds[1])
        flags.append(ok)
        label = paper.COLUMN_LABELS.get(r.metric)
        i = rows.index((r.method, r.retention_ratio))
        if ok is not None and label in vs.display.columns and i < len(vs.display):
            vs.display.loc[i, label] = f"{vs.display.loc[i, label]} {'∈' if ok else '∉'}"
    vs.data = vs.data.assign(paper_in_ci=flags)
    vs.notes.append("∈ / ∉: the published value lies inside / outside our 95% bootstrap interval (eval/stats.py).")
    return vs
