"""Accuracy of one run in the form users report it, from lmms-eval's results and per-sample logs.

Returns the record's ``accuracy`` block ``{metric, headline, breakdown, unparsable}``; ``headline`` is always on a
0-100 scale.

- MVBench: lmms-eval 0.7.3 has no group score, so the headline is the mean of the subtask accuracies (equal to the
  sample-weighted mean when subtasks have equal size, as the real 200-question subtasks do); breakdown per subtask.
  ``unparsable`` counts answers with no option letter (MVBench's scorer drops empty answers from the denominator).
- VideoMME: headline = lmms-eval's overall score; breakdown short / medium / long recomputed from the samples (0.7.3
  only logs them). ``unparsable`` = answers ``extract_mcq_answer`` could not map to a letter.
- LongVideoBench: ``lvb_acc`` (a fraction) times 100; breakdown per duration group (15/60/600/3600 s) from the
  samples. lmms-eval replaces an unparsable answer with a random letter; ``unparsable`` counts answers without any
  option letter, i.e. the ones that went to that random draw.
- MLVU (dev): headline = lmms-eval's mean over the 7 task types; breakdown per task type. lmms-eval's aggregation
  (``mlvu_aggregate_results_dev``) divides the sum of the per-type accuracies by all 7 types even when a ``limit``
  leaves some out (an absent type counts 0%: ``limit=5`` on the type-sorted dev split is one type, headline <= 14.3),
  so the block also carries ``types_present`` and ``headline_present_types``, the mean over the types present,
  which the reporter shows, labelled, where fewer than 7 were evaluated.
- EgoSchema (public subset, ``egoschema_subset``): lmms-eval's ``score`` (a fraction) times 100; lmms-eval defines no
  breakdown. ``unparsable`` = answers its parser mapped to no option (index -1, always wrong). The full set is
  submission-only (no public answers) and is never summarised here.
- PerceptionTest (validation, ``perceptiontest_val_mc``): lmms-eval's ``accuracy`` (a fraction) times 100; breakdown
  per ``area`` (memory / abstraction / physics / semantics), the doc field lmms-eval's own ``mcppl`` variant records,
  read from each sample's doc. ``unparsable`` = answers with no A-D letter (``pred_id`` -1).
"""

from __future__ import annotations

import re
from collections import defaultdict

MLVU_TYPES = 7  # lmms-eval 0.7.3 mlvu/utils.py TASK_TYPES: the denominator of its headline
_LETTER = re.compile(r"(?:^|[^A-Za-z])([A-E])(?:$|[^A-Za-z])")

METRICS = {
    "mvbench": "mvbench_accuracy",
    "videomme": "videomme_perception_score",
    "longvideobench": "lvb_acc",
    "mlvu": "mlvu_percetion_score",  # sic: lmms-eval's key
    "egoschema": "score",
    "perceptiontest": "accuracy",
}


def response(sample: dict) -> str:
    """The filtered answer text of one lmms-eval sample log entry."""
    r = sample.get("filtered_resps") or sample.get("resps") or [""]
    while isinstance(r, list):
        r = r[0] if r else ""
    return str(r)


def has_letter(text: str) -> bool:
    return bool(_LETTER.search(text or ""))


def _pct(correct: float, total: int) -> float | None:
    return 100.0 * correct / total if total else None


def summarise(kind: str, results: dict, tasks: list[str]) -> dict:
    """The ``accuracy`` block for benchmark ``kind`` from ``simple_evaluate``'s return value.

    ``tasks`` are the lmms-eval task (or group) names the run asked for; the leaf tasks are read from the samples.
    """
    if kind not in METRICS:
        raise ValueError(f"unknown benchmark kind {kind!r}; choices: {', '.join(METRICS)}")
    metric = METRICS[kind]
    samples = results.get("samples") or {}
    res = results.get("results") or {}
    leaves = sorted(samples)
    if not leaves:
        raise RuntimeError(f"lmms-eval returned no samples for {tasks}: nothing was evaluated")
    all_samples = [s for t in leaves for s in samples[t]]
    breakdown: dict[str, float | None] = {}

    if kind == "mvbench":
        for t in leaves:
            breakdown[t.split("mvbench_", 1)[-1]] = float(res[t][f"{metric},none"])
        headline = sum(breakdown.values()) / len(breakdown)
        unparsable = sum(not has_letter(response(s)) for s in all_samples)
    elif kind == "videomme":
        by: dict[str, list[float]] = defaultdict(list)
        for s in all_samples:
            d = s[metric]
            by[d["duration"]].append(float(d["score"]))
        breakdown = {k: _pct(sum(by[k]), len(by[k])) for k in ("short", "medium", "long") if by[k]}
        headline = _pct(sum(float(s[metric]["score"]) for s in all_samples), len(all_samples))
        unparsable = sum(s[metric]["pred_answer"] == "" for s in all_samples)
    elif kind == "longvideobench":
        headline = 100.0 * float(res[leaves[0]][f"{metric},none"]) if len(leaves) == 1 else None
        groups: dict[str, list[int]] = defaultdict(list)
        for s in all_samples:
            d = s[metric]
            groups[str(d["duration_group"])].append(int(d["parsed_pred"] == d["answer"]))
        breakdown = {g: _pct(sum(v), len(v)) for g, v in sorted(groups.items(), key=lambda kv: float(kv[0]))}
        if headline is None:
            headline = _pct(sum(sum(v) for v in groups.values()), len(all_samples))
        unparsable = sum(not has_letter(response(s)) for s in all_samples)
    elif kind in ("egoschema", "perceptiontest"):
        return _fraction_kind(kind, metric, res, leaves, all_samples)
    else:  # mlvu
        types: dict[str, list[int]] = defaultdict(list)
        for s in all_samples:
            d = s[metric]
            types[d["task_type"]].append(int(d["pred_answer"] == d["answer"]))
        breakdown = {t: _pct(sum(v), len(v)) for t, v in sorted(types.items())}
        headline = float(res[leaves[0]][f"{metric},none"]) if len(leaves) == 1 else sum(breakdown.values()) / len(breakdown)
        unparsable = sum(s[metric]["pred_answer"] in ("", None) for s in all_samples)
        return {"metric": metric, "headline": headline, "breakdown": breakdown, "unparsable": int(unparsable),
                "types_present": len(breakdown), "headline_present_types": sum(breakdown.values()) / len(breakdown)}

    return {"metric": metric, "headline": headline, "breakdown": breakdown, "unparsable": int(unparsable)}


def _fraction_kind(kind: str, metric: str, res: dict, leaves: list[str], all_samples: list[dict]) -> dict:
    """EgoSchema / PerceptionTest: lmms-eval's fraction metric on 0-100, recomputed from samples across leaves."""
    key = "pred" if kind == "egoschema" else "pred_id"
    if kind == "egoschema":
        hits = [int(str(s[metric]["pred"]) == str(s[metric]["ground_truth"])) for s in all_samples]
    else:
        hits = [int(s[metric]["correct"]) for s in all_samples]
    headline = 100.0 * float(res[leaves[0]][f"{metric},none"]) if len(leaves) == 1 else _pct(sum(hits), len(hits))
    breakdown: dict[str, float | None] = {}
    if kind == "perceptiontest":
        areas: dict[str, list[int]] = defaultdict(list)
        for s, h in zip(all_samples, hits):
            areas[str((s.get("doc") or {}).get("area"))].append(h)
        breakdown = {a: _pct(sum(v), len(v)) for a, v in sorted(areas.items())}
    unparsable = sum(int(s[metric][key]) == -1 for s in all_samples)
    return {"metric": metric, "headline": headline, "breakdown": breakdown, "unparsable": int(unparsable)}
