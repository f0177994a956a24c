"""Paper-quality figures from the reporter's frames (PNG at 200 dpi + PDF, matplotlib's object API, no pyplot).

- :func:`accuracy_vs_ratio`: accuracy vs retention ratio, one panel per benchmark, vanilla as a dashed line,
  the paper's published points as open markers of the same colour.
- :func:`latency_breakdown`: stacked horizontal bars per method x ratio: vision encoder, compression,
  prefill, decode (ms per sample).
- :func:`accuracy_vs_latency`: accuracy vs LLM generation latency per sample, with the Pareto front.

Colours are fixed per method (:data:`METHOD_COLORS`) so a method looks the same in every figure.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from eval import paper

# Okabe-Ito and tab10 colours, chosen to stay distinguishable in greyscale print; vanilla is black.
METHOD_COLORS = {
    "none": "#000000",
    "vidcom2": "#D55E00",
    "random": "#999999",
    "uniform": "#56B4E9",
    "fastv": "#0072B2",
    "pdrop": "#009E73",
    "sparsevlm": "#CC79A7",
    "dycoke_vc2": "#E69F00",
    "dycoke_ttm": "#8C564B",
    "divprune": "#7F7F7F",
    "visionzip": "#9467BD",
    "fastvid": "#17BECF",
    "holitom": "#BCBD22",
}
_FALLBACK = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#E377C2")
MARKERS = {"vidcom2": "*", "random": "x", "uniform": "+"}
_BENCH_COLUMNS = ("mvbench", "longvideobench", "mlvu", "videomme_overall")


def method_color(method: str) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _FALLBACK[sum(map(ord, method)) % len(_FALLBACK)]  # stable across runs, unlike hash()


_PAPER = "Paper (open markers)"


def _with_paper_proxy(handles: list, labels: list) -> tuple[list, list]:
    """One grey legend entry for all published points instead of one per method."""
    from matplotlib.lines import Line2D

    keep = [(h, lab) for h, lab in zip(handles, labels) if lab != _PAPER]
    if len(keep) < len(labels):
        keep.append((Line2D([], [], ls="", marker="o", mfc="none", mec="0.3"), _PAPER))
    return [h for h, _ in keep], [lab for _, lab in keep]


def _save(fig: Figure, path_stem: Path) -> list[Path]:
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = [path_stem.with_suffix(".png"), path_stem.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=200, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    return out


def _title(model_key: str, frames: int, random_weights: bool) -> str:
    warn = "  [RANDOM WEIGHTS: accuracy meaningless]" if random_weights else ""
    return f"{model_key}, {frames} frames{warn}"


def accuracy_vs_ratio(
    wide: pd.DataFrame, group: tuple, path_stem: Path, published: pd.DataFrame | None = None
) -> list[Path]:
    """Accuracy (%) vs retention ratio (%) per method, one panel per benchmark with data."""
    model_key, frames = group
    sub = wide[(wide["model_key"] == model_key) & (wide["frames"] == frames)]
    columns = [c for c in _BENCH_COLUMNS if sub[c].notna().any()]
    if not columns:
        return []
    pub = None
    if published is not None:
        pub = published[(published["model"] == model_key) & published["table"].str.startswith("acc_")]
        pub = pub[pub["frames"].isna() | (pub["frames"] == frames)]
    fig = Figure(figsize=(3.6 * len(columns), 3.2), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    methods = [m for m in dict.fromkeys(sub["method"]) if m != "none"]
    for ax, col in zip(axes, columns):
        vanilla = sub[(sub["method"] == "none") & sub[col].notna()]
        if len(vanilla):
            ax.axhline(vanilla[col].iloc[0], color=method_color("none"), ls="--", lw=1.2, label="Vanilla")
        for method in methods:
            points = sub[(sub["method"] == method) & sub[col].notna()].sort_values("retention_ratio")
            if points.empty:
                continue
            ax.plot(100 * points["retention_ratio"], points[col], marker=MARKERS.get(method, "o"), ms=6,
                    color=method_color(method), label=paper.method_label(method))  # fmt: skip
            if pub is not None:
                mine = pub[(pub["method"] == method) & (pub["metric"] == col)]
                if len(mine):
                    ax.scatter(100 * mine["retention_ratio"], mine["value"], facecolors="none", s=40,
                               edgecolors=method_color(method), label=_PAPER)  # fmt: skip
        _accuracy_limits(ax)
        ax.set_title(paper.COLUMN_LABELS[col])
        ax.set_xlabel("Retention ratio (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    handles, labels = _with_paper_proxy(handles, labels)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle(_title(model_key, frames, bool(sub["random_weights"].any())), fontsize=10)
    return _save(fig, path_stem)


def _accuracy_limits(ax) -> None:
    """Keep the y range within 0-100 % and never degenerate (all-equal scores, e.g. random weights)."""
    lo, hi = ax.get_ylim()
    data = [y for line in ax.get_lines() for y in line.get_ydata()]
    data += [y for coll in ax.collections for _, y in coll.get_offsets()]
    if data:
        lo, hi = min(data), max(data)
    pad = max(1.0, 0.12 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))


def latency_breakdown(agg: pd.DataFrame, group: tuple, path_stem: Path) -> list[Path]:
    """Stacked bars of per-sample latency (ms) by stage, one bar per method x ratio (vanilla on top)."""
    model_key, frames, benchmark = group
    sub = agg[(agg["model_key"] == model_key) & (agg["frames"] == frames) & (agg["benchmark"] == benchmark)]
    sub = sub.sort_values(["retention_ratio", "method"], ascending=[False, True])
    if sub.empty or sub[[f"lat_{p}" for p in ("prefill", "decode")]].isna().all().all():
        return []
    parts = (("vision_encoder", "Vision encoder", "#4C72B0"), ("compression", "Compression", "#DD8452"),
             ("prefill", "LLM prefill", "#55A868"), ("decode", "LLM decode", "#C44E52"))  # fmt: skip
    labels = [f"{paper.method_label(m)} {100 * r:g}%" for m, r in zip(sub["method"], sub["retention_ratio"])]
    fig = Figure(figsize=(6.4, 0.45 * len(sub) + 1.3), layout="constrained")
    ax = fig.subplots()
    left = pd.Series(0.0, index=sub.index)
    for part, label, color in parts:
        ms = 1e3 * sub[f"lat_{part}"].fillna(0.0)
        ax.barh(labels, ms, left=left, color=color, label=label, edgecolor="white", lw=0.5)
        left += ms
    for tick, method in zip(ax.get_yticklabels(), sub["method"]):
        tick.set_color(method_color(method))
    ax.invert_yaxis()
    ax.set_xlabel("Latency per sample (ms)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncols=4, frameon=False)
    ax.set_title(f"{benchmark}: {_title(model_key, frames, bool(sub['random_weights'].any()))}", fontsize=10)
    return _save(fig, path_stem)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated by any other (lower ``x`` and higher ``y`` are better), sorted by ``x``."""
    front, best = [], float("-inf")
    for _, row in points.sort_values([x, y], ascending=[True, False]).iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def accuracy_vs_latency(agg: pd.DataFrame, group: tuple, path_stem: Path) -> list[Path]:
    """Accuracy (%) vs LLM generation latency per sample (ms) for one benchmark; the Pareto front dashed."""
    model_key, frames, benchmark = group
    sub = agg[(agg["model_key"] == model_key) & (agg["frames"] == frames) & (agg["benchmark"] == benchmark)]
    sub = sub.assign(latency_ms=1e3 * sub["lat_llm_generation"]).dropna(subset=["latency_ms", "accuracy"])
    if sub.empty:
        return []
    fig = Figure(figsize=(5.2, 3.6), layout="constrained")
    ax = fig.subplots()
    for method in sorted(dict.fromkeys(sub["method"]), key=lambda m: m != "none"):
        points = sub[sub["method"] == method]
        ax.scatter(points["latency_ms"], points["accuracy"], color=method_color(method), s=45, zorder=3,
                   marker=MARKERS.get(method, "o"), label=paper.method_label(method))  # fmt: skip
        for _, p in points.iterrows():
            ax.annotate(f"{100 * p['retention_ratio']:g}%", (p["latency_ms"], p["accuracy"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")  # fmt: skip
    front = pareto_front(sub, "latency_ms", "accuracy")
    ax.plot(front["latency_ms"], front["accuracy"], ls="--", color="0.4", lw=1, zorder=2, label="Pareto front")
    _accuracy_limits(ax)
    ax.set_xlabel("LLM generation latency per sample (ms)")
    kind = sub["benchmark_kind"].iloc[0]
    ax.set_ylabel(f"{paper.COLUMN_LABELS[paper.KIND_COLUMN[kind]]} accuracy (%)")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)
    ax.set_title(_title(model_key, frames, bool(sub["random_weights"].any())), fontsize=10)
    return _save(fig, path_stem)


def relative_bars(wide: pd.DataFrame, group: tuple, path_stem: Path, published: pd.DataFrame | None = None) -> list[Path]:
    """Grouped bars of accuracy in % of vanilla (paper Figures 4 and 5): one group per accuracy column present, one
    bar per compressed row (method or variant at a ratio); the paper's published % (metric ``<column>_rel_pct``)
    as open black diamonds on the bars. Nothing is drawn without a vanilla row."""
    model_key, frames = group
    sub = wide[(wide["model_key"] == model_key) & (wide["frames"] == frames)]
    base = sub[(sub["method"] == "none") & (sub["retention_ratio"] == 1.0)]
    cols = [c for c in paper.ACCURACY_COLUMNS if c in sub and sub[c].notna().any()]
    rows = sub[sub["method"] != "none"]
    if base.empty or not cols or rows.empty:
        return []
    fig = Figure(figsize=(1.2 + 1.1 * len(cols) * max(1, len(rows)) / 2, 3.2))
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    pub = None
    if published is not None:
        pub = published[(published["model"] == model_key) & published["metric"].str.endswith("_rel_pct")]
    for i, r in enumerate(rows.itertuples()):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(cols))]
        ys = [100.0 * getattr(r, c) / float(base[c].iloc[0]) if float(base[c].iloc[0]) else float("nan") for c in cols]
        ax.bar(xs, ys, width, color=method_color(paper.base_method(r.method)), edgecolor="white",
               hatch="//" if r.method != paper.base_method(r.method) else None,
               label=f"{paper.method_label(r.method)} {100 * r.retention_ratio:g}%")  # fmt: skip
        if pub is not None and not pub.empty:
            mine = pub[(pub["method"] == r.method) & (pub["retention_ratio"] == r.retention_ratio)]
            marks = {m.removesuffix("_rel_pct"): v for m, v in zip(mine["metric"], mine["value"])}
            ax.plot(xs, [marks.get(c, float("nan")) for c in cols], ls="", marker="D", mfc="none", mec="k")
    ax.axhline(100.0, color="k", ls="--", lw=0.8)
    ax.set_xticks(range(len(cols)), [paper.COLUMN_LABELS[c] for c in cols])
    ax.set_ylabel("% of vanilla accuracy")
    ax.set_title(_title(model_key, frames, bool(sub["random_weights"].any())), fontsize=9)
    ax.legend(fontsize=7, frameon=False, ncols=2)
    return _save(fig, path_stem)
