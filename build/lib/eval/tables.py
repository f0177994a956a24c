"""Rendered tables of the reporter: the ``Table`` type, cell formatting, and Markdown / CSV / LaTeX output.

Shared by :mod:`eval.report` (the paper's tables) and :mod:`eval.stats` (the confidence-interval companion table),
so neither imports the other. Missing values print as :data:`DASH`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eval import record

DASH = "–"
RANDOM_MARK = "‡"
APPROX_MARK = "†"


@dataclass
class Table:
    """A rendered table: ``data`` is numeric (CSV), ``display`` is strings (Markdown, LaTeX)."""

    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def fmt(value: float, digits: int = 1) -> str:
    return DASH if value is None or pd.isna(value) else f"{value:.{digits}f}"


def fmt_num(value: float) -> str:
    """Latencies and the like: 1 decimal from 100 up, 2 from 1, 3 significant digits below."""
    if value is None or pd.isna(value):
        return DASH
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def fmt_change(value: float) -> str:
    """Relative change in % with a real minus sign: -71.2 -> '−71.2%'."""
    return DASH if value is None or pd.isna(value) else f"{value:+.1f}%".replace("-", "−")


def fmt_duration(seconds: float) -> str:
    """The paper prints total time as m:ss; short runs keep a decimal."""
    if seconds is None or pd.isna(seconds):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"


def fmt_ratio(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def fmt_delta(value: float) -> str:
    return "" if value is None or pd.isna(value) else f" ({value:+.1f})".replace("-", "−")


def pct_change(value: float, base: float) -> float:
    """100 * (value - base) / base; NaN where either is missing or base is 0."""
    if value is None or base is None or pd.isna(value) or pd.isna(base) or base == 0:
        return math.nan
    return 100.0 * (float(value) - float(base)) / float(base)


def to_markdown(table: Table) -> str:
    body = table.display.to_markdown(index=False, disable_numparse=True)
    notes = "".join(f"\n- {n}" for n in table.notes)
    return f"### {table.title}\n\n{body}\n{notes}\n"


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("$", r"\$"), ("–", "--"), ("−", "$-$"), ("Δ", r"$\Delta$"), ("×", r"$\times$"),
                 (APPROX_MARK, r"$^\dagger$"), (RANDOM_MARK, r"$^\ddagger$")):  # fmt: skip
        text = text.replace(a, b)
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", text)  # Markdown code spans


def to_latex(table: Table) -> str:
    """A booktabs tabular inside a table float; notes go under it in footnotesize."""
    cols = list(table.display.columns)
    spec = "ll" + "r" * (len(cols) - 2)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(table.title)}}}",
             r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex_escape(str(c)) for c in cols) + r" \\", r"\midrule"]  # fmt: skip
    previous_ratio = None
    for _, row in table.display.iterrows():
        # a rule between retention-ratio blocks, as in the paper
        if previous_ratio is not None and row["Ratio"] != previous_ratio:
            lines.append(r"\midrule")
        previous_ratio = row["Ratio"]
        lines.append(" & ".join(_tex_escape(str(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    lines += [rf"\par\footnotesize {_tex_escape(n)}" for n in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_tables(tables: list[Table], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.md``, ``<stem>.csv`` (numeric, tidy: one frame for all groups) and ``<stem>.tex``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record.clean_stale_temps(out_dir)  # temp files of a report killed mid-write
    paths = [out_dir / f"{stem}.{ext}" for ext in ("md", "csv", "tex")]
    record.write_text(paths[0], "\n".join(to_markdown(t) for t in tables))
    record.write_text(paths[1], pd.concat([t.data for t in tables], ignore_index=True).to_csv(index=False))
    record.write_text(paths[2], "\n".join(to_latex(t) for t in tables))
    return paths
