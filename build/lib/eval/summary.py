"""A plain table of the run records under a folder: ``python -m eval.summary [results/runs]``.

Used by ``make demo`` when the reporter (:mod:`eval.report`) is not available; reads records only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from eval.record import read

RANDOM_NOTE = (
    "NOTE: random-weight (tiny) models: their ACCURACY MEANS NOTHING. Their visual token counts, realised retention, "
    "FLOPs and timings are real measurements of the pipeline."
)
COLUMNS = ("benchmark", "model", "method", "ratio", "acc", "tokens in", "tokens out", "kept", "prefill ms", "e2e ms", "GFLOPs pre")


def rows(records_dir: str | Path) -> list[dict]:
    out = []
    for path in sorted(Path(records_dir).rglob("record.json")):
        r = read(path)
        e = r["efficiency"]
        lat = e["latency_s"]

        def ms(v):
            return "n/a" if v is None else f"{1000 * v:.1f}"

        out.append(
            {
                "benchmark": r["benchmark"],
                "model": r["model"] + (" *" if r["random_weights"] else ""),
                "method": r["method"],
                "ratio": f"{r['retention_ratio']:.2f}",
                "acc": "n/a" if r["accuracy"]["headline"] is None else f"{r['accuracy']['headline']:.1f}",
                "tokens in": f"{e['visual_tokens_in']:.0f}",
                "tokens out": f"{e['visual_tokens_out']:.0f}",
                "kept": f"{e['retention_realised']:.3f}",
                "prefill ms": ms(lat["prefill"]),
                "e2e ms": ms(lat["e2e_per_sample"]),
                "GFLOPs pre": "n/a" if e["flops"]["prefill"] is None else f"{e['flops']['prefill'] / 1e9:.3f}",
                "_random": r["random_weights"],
            }
        )
    return out


def table(records_dir: str | Path) -> str:
    """The records as an aligned plain-text table (random-weight models marked with ``*`` and a note)."""
    data = rows(records_dir)
    if not data:
        return f"no records under {records_dir}"
    widths = {c: max(len(c), *(len(d[c]) for d in data)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS), "  ".join("-" * widths[c] for c in COLUMNS)]
    lines += ["  ".join(d[c].ljust(widths[c]) for c in COLUMNS) for d in data]
    if any(d["_random"] for d in data):
        lines += ["", "* " + RANDOM_NOTE]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m eval.summary [records_dir]`` prints the table; ``--note`` prints only the random-weights note."""
    args = sys.argv[1:] if argv is None else argv
    if "--note" in args:
        print(RANDOM_NOTE)
        return 0
    print(table(args[0] if args else "results/runs"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
