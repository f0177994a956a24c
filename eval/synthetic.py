"""The synthetic benchmark's report: method x retention x task-type accuracy table and two plots, from records.

    python -m eval.synthetic [--runs results/runs] [--model trained_tiny_llava_ov] [--out results/tables/synthetic]

Reads the ``record.json`` files of ``benchmark=synthetic_mvbench`` (docs/synthetic.md) and writes
``accuracy_by_task.md`` / ``.csv`` under ``--out`` and ``accuracy_vs_ratio_synthetic`` / ``pareto_synthetic``
(PNG + PDF) under ``--plots`` (``_<model>`` appended to each name for a model other than the default). Every output says SYNTHETIC: these accuracies probe what a method keeps on
generated clips and are never a real benchmark score. Vanilla (``none``) is the reference row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from eval import paper, plots, record

BENCHMARK = "synthetic_mvbench"
TASKS = ("event", "location", "order", "control")
NOTE = ("SYNTHETIC: accuracy of a tiny model trained on generated clips (`synthetic: true`, `random_weights: false`); "
        "a probe of what each method keeps, never a real benchmark score (docs/synthetic.md).")


def frame(runs: Path, model: str) -> pd.DataFrame:
    """One row per record of ``model`` on the synthetic benchmark: method, ratio, overall and per-task accuracy."""
    rows = []
    for path in sorted(Path(runs).glob(f"{BENCHMARK}/{model}/*/*/*/record.json")):
        rec = record.read(path)
        acc, eff = rec["accuracy"], rec["efficiency"]
        rows.append({"method": rec["method"], "retention_ratio": float(rec["retention_ratio"]), "seed": rec["seed"],
                     "overall": acc["headline"], **{t: (acc["breakdown"] or {}).get(t) for t in TASKS},
                     "retention_realised": eff["retention_realised"],
                     "prefill_gflops": None if eff["flops"]["prefill"] is None else eff["flops"]["prefill"] / 1e9,
                     "approximation": rec["method_approximation"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.groupby(["method", "retention_ratio"], as_index=False).agg(
        {**{c: "mean" for c in ("overall", *TASKS, "retention_realised", "prefill_gflops")}, "approximation": "first"})
    order = {m: i for i, m in enumerate(["none", "vidcom2"])}
    return df.sort_values(["retention_ratio", "method"], ascending=[False, True], key=lambda s: s.map(
        lambda v: order.get(v, len(order)) if isinstance(v, str) else v) if s.name == "method" else s
    ).reset_index(drop=True)


def markdown(df: pd.DataFrame) -> str:
    """The table: one row per method x ratio (vanilla first), overall and per-task accuracy (%), realised kept."""
    head = ["Method", "Ratio", "Overall", *(t.capitalize() for t in TASKS), "Kept"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        label = paper.method_label(r["method"]) + ("†" if isinstance(r["approximation"], str) else "")
        cells = [label, f"{100 * r['retention_ratio']:g}%", *(f"{r[c]:.1f}" for c in ("overall", *TASKS)),
                 f"{r['retention_realised']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n> **{NOTE}** † = a labelled approximation of its paper's method.\n"


def plot_ratio(df: pd.DataFrame, stem: Path, model: str = "trained_tiny_llava_ov") -> list[Path]:
    """Accuracy vs retention ratio, one panel per column (overall + each task), vanilla dashed."""
    cols = ("overall", *TASKS)
    fig = Figure(figsize=(3.0 * len(cols), 3.2), layout="constrained")
    axes = fig.subplots(1, len(cols), sharey=True)
    vanilla = df[df["method"] == "none"]
    for ax, col in zip(axes, cols):
        for method in dict.fromkeys(df["method"]):
            if method == "none":
                continue
            pts = df[df["method"] == method].sort_values("retention_ratio")
            ax.plot(pts["retention_ratio"], pts[col], marker=plots.MARKERS.get(method, "o"), ms=4, lw=1.2,
                    color=plots.method_color(method), label=paper.method_label(method))
        if len(vanilla):
            ax.axhline(float(vanilla[col].iloc[0]), color="black", ls="--", lw=1, label="Vanilla")
        ax.axhline(25.0, color="0.6", ls=":", lw=1, label="Chance (25%)")
        ax.set_xscale("log")
        ax.minorticks_off()  # the log axis' minor labels (2 x 10^-1 ...) would overprint the ratio ticks
        ax.set_xticks([0.1, 0.15, 0.25, 0.5])
        ax.set_xticklabels(["10%", "15%", "25%", "50%"])
        ax.set_title(col, fontsize=10)
        ax.set_xlabel("retention ratio")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(0, 102)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside right upper", frameon=False)
    fig.suptitle(f"SYNTHETIC benchmark ({model}, 4 frames): a probe, not a real score", fontsize=10)
    return plots._save(fig, stem)


def plot_pareto(df: pd.DataFrame, stem: Path, model: str = "trained_tiny_llava_ov") -> list[Path]:
    """Overall accuracy vs prefill GFLOPs with the Pareto front."""
    sub = df.dropna(subset=["prefill_gflops", "overall"])
    fig = Figure(figsize=(5.6, 3.8), layout="constrained")
    ax = fig.subplots()
    for method in dict.fromkeys(sub["method"]):
        pts = sub[sub["method"] == method]
        ax.scatter(pts["prefill_gflops"], pts["overall"], s=40, color=plots.method_color(method),
                   marker=plots.MARKERS.get(method, "o"), label=paper.method_label(method), zorder=3)
    front = plots.pareto_front(sub, "prefill_gflops", "overall")
    if len(front):
        ax.plot(front["prefill_gflops"], front["overall"], ls="--", color="0.4", lw=1, label="Pareto front")
    ax.set_xlabel("prefill GFLOPs per sample")
    ax.set_ylabel("overall accuracy (%)")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside right upper", frameon=False)
    ax.set_title(f"SYNTHETIC benchmark ({model}): accuracy vs prefill compute", fontsize=10)
    return plots._save(fig, stem)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.synthetic", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("results/runs"))
    ap.add_argument("--model", default="trained_tiny_llava_ov")
    ap.add_argument("--out", type=Path, default=Path("results/tables/synthetic"))
    ap.add_argument("--plots", type=Path, default=Path("results/plots/synthetic"))
    args = ap.parse_args(argv)
    df = frame(args.runs, args.model)
    if df.empty:
        print(f"no {BENCHMARK} records of model {args.model} under {args.runs}: run `make demo` first", file=sys.stderr)
        return 1
    text = f"## Synthetic benchmark — {args.model}\n\n" + markdown(df)
    suffix = "" if args.model == "trained_tiny_llava_ov" else f"_{args.model}"  # one set of outputs per model
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"accuracy_by_task{suffix}.md").write_text(text)
    df.to_csv(args.out / f"accuracy_by_task{suffix}.csv", index=False)
    made = (plot_ratio(df, args.plots / f"accuracy_vs_ratio_synthetic{suffix}", args.model)
            + plot_pareto(df, args.plots / f"pareto_synthetic{suffix}", args.model))
    print(text)
    print(f"tables in {args.out}/, plots: {', '.join(str(p) for p in made if p.suffix == '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
