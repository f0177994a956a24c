"""The VidCom2 paper's published numbers, its method names and ablation variants, and its two averaging rules.

The table presets and sweep commands that run them live in :mod:`eval.presets`. The other methods' own published
numbers (their papers, official run logs) are loaded separately by :func:`load_method_published` and never mixed
with the VidCom2 paper's rows (those are the VidCom2 authors' reruns and ports).

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
    "egoschema_full": "EgoSchema (full)",
    "source_avg_score": "Avg. (source)",
    "source_avg_relative_pct": "Rel. (%) (source)",
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
    # the method papers' own runs (results/paper/method_papers.csv): HoliTom's scripts run T=0.65 at 10%
    # (cokeshao/HoliTom e9b2972 scripts/eval_ov-7b_holitom.sh); FlashVID's Qwen2.5-VL script selects with ADTS v1
    # and at least 4 segments (Fanziyang-v/FlashVID 1d37422 scripts/qwen2_5_vl.sh)
    "holitom:tau_0.65": {"tau": 0.65},
    "flashvid:qwen_script": {"selection": "attn_div", "min_segments": 4},
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


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


# ------------------------------------------------------------------------------- the other methods' own numbers

METHOD_PAPER_COLUMNS = ("table", "label", "method", "paper_method", "paper", "arxiv", "location", "model", "frames",
                        "metric", "retention", "value", "source")  # fmt: skip
# Metrics a method source may publish: the paper columns, EgoSchema's full (submission) set (ours is the public
# subset, conf/benchmark/egoschema.yaml) and the source's own averages (over its own columns; never recomputed here).
METHOD_METRICS = (*ACCURACY_COLUMNS, *EXTRA_COLUMNS, "egoschema_full", "source_avg_score", "source_avg_relative_pct")


def load_method_published(
    path: Path | None = None, runs_path: Path | None = None, methods: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The other methods' own published numbers, tidy: table, label, kind, method (registry name or variant),
    paper_method (the row's name as printed), paper, arxiv, location, model, frames (nullable Int64),
    retention_ratio, metric, value, source.

    ``method_papers.csv`` (kind "method_paper": each method paper's tables, including its runs of other methods)
    and ``official_method_runs.csv`` (kind "official_log": the official repositories' run logs). Kept apart from
    :func:`load_published` (the VidCom2 paper); the reporter compares them in their own tables
    (:mod:`eval.report_methods`). Bad rows are refused with the file, the row and the fix.
    """
    methods = load_methods() if methods is None else methods
    path = path or PAPER_DIR / "method_papers.csv"
    runs_path = runs_path or PAPER_DIR / "official_method_runs.csv"
    papers = _read_checked(path, METHOD_PAPER_COLUMNS).assign(kind="method_paper")
    runs = _read_checked(runs_path, ("table", "model", "frames", "method", "retention", "metric", "value", "source"))
    labels = [f"{method_label(m, methods)} official log" for m in runs["method"]]
    runs = runs.assign(kind="official_log", label=labels, paper_method=labels, paper="", arxiv="", location="")
    frame = pd.concat([papers, runs], ignore_index=True).rename(columns={"retention": "retention_ratio"})
    lines = [f"{path}:{i + 2}" for i in range(len(papers))] + [f"{runs_path}:{i + 2}" for i in range(len(runs))]
    for where, row in zip(lines, frame.itertuples()):  # line 1 is the header
        _check_method_row(row, where, methods)
    frame["frames"] = pd.to_numeric(frame["frames"].replace("", None)).astype("Int64")
    frame["value"] = frame["value"].astype(float)
    frame["retention_ratio"] = frame["retention_ratio"].astype(float).round(4)
    return frame


def _read_checked(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {', '.join(columns)}")
    return frame[list(columns)]


def _check_method_row(row, where: str, methods: pd.DataFrame) -> None:
    known = set(methods["method"])
    if base_method(row.method) not in known:
        raise ValueError(f"{where}: method {row.method!r} is not in methods.csv: use a registry name ({', '.join(sorted(known))})")
    variant_overrides(row.method)  # an unknown variant is refused with its fix
    if row.metric not in METHOD_METRICS:
        raise ValueError(f"{where}: metric {row.metric!r} is not one of {', '.join(METHOD_METRICS)}")
    ratio, value = _number(row.retention_ratio), _number(row.value)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"{where}: retention {row.retention_ratio!r} must be a number in (0, 1] (1 = vanilla)")
    top = 200.0 if row.metric.endswith("relative_pct") else 100.0  # % of vanilla may exceed 100
    if not 0.0 <= value <= top:
        raise ValueError(f"{where}: value {row.value!r} of {row.metric} must be a number in [0, {top:g}] (0-100 scale)")
    if str(row.frames) and not str(row.frames).isdigit():
        raise ValueError(f"{where}: frames {row.frames!r} must be a positive integer or empty (not stated)")


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan
