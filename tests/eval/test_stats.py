"""eval/stats.py: bootstrap intervals, exact McNemar and the report's companion table, on hand-computed fixtures."""

import json
import shutil
from pathlib import Path

import pytest

from eval import paper, report, stats

FIXTURES = Path(__file__).parent / "fixtures" / "records"


@pytest.mark.parametrize(
    "b,c,want",
    [
        (0, 0, 1.0),
        (1, 5, 2 * (1 + 6) / 64),  # n=6: 2 * (C(6,0) + C(6,1)) / 2^6 = 0.21875
        (0, 6, 2 / 64),
        (3, 3, 1.0),  # 2 * 42/64 > 1 -> 1
        (2, 10, 2 * (1 + 12 + 66) / 4096),  # 0.0385742...
        (10, 2, 2 * (1 + 12 + 66) / 4096),
    ],
)
def test_mcnemar_exact_by_hand(b, c, want):
    assert stats.mcnemar_exact(b, c) == pytest.approx(want, abs=1e-15)


def _rows(task, scores, start=0, group=None):
    return [{"task": task, "doc_id": start + i, "correct": s, "group": group} for i, s in enumerate(scores)]


def test_bootstrap_resamples_within_subtasks():
    # task a all right (3), task b all wrong (5): every within-task resample keeps 100% and 0%, so MVBench's macro
    # mean is exactly 50 in every resample; pooled in one task (VideoMME) the same scores give 37.5, a wide interval
    rows = _rows("a", [1, 1, 1]) + _rows("b", [0] * 5)
    assert stats.estimate(rows, "mvbench") == 50.0
    assert stats.bootstrap_ci(rows, "mvbench") == (50.0, 50.0)
    pooled = [{**r, "task": "videomme"} for r in rows]
    assert stats.estimate(pooled, "videomme") == 37.5
    lo, hi = stats.bootstrap_ci(pooled, "videomme")
    assert lo < 37.5 < hi and hi - lo > 30


def test_bootstrap_is_seeded_and_near_the_normal_interval():
    rows = _rows("t", [1, 0] * 200)  # p = 0.5, n = 400: normal 95% half-width 1.96 * 2.5 = 4.9 points
    lo, hi = stats.bootstrap_ci(rows, "videomme", seed=3)
    assert (lo, hi) == stats.bootstrap_ci(rows, "videomme", seed=3)
    assert lo == pytest.approx(50 - 4.9, abs=0.8) and hi == pytest.approx(50 + 4.9, abs=0.8)
    assert stats.bootstrap_ci(_rows("t", [1] * 7), "mlvu") == (100.0, 100.0)


def test_paired_counts_discordant_pairs_on_shared_questions():
    vanilla = _rows("t", [1, 1, 1, 0, 0, 1])
    method = _rows("t", [1, 0, 0, 1, 0, 1, 1])  # doc 6 has no vanilla answer: not paired
    got = stats.paired(method, vanilla)
    assert got == {"n_paired": 6, "b": 2, "c": 1, "p_value": 1.0}  # 2 * (1 + 3) / 8 = 1


def test_sample_score_reads_lmms_eval_per_question_values():
    metrics = ("mvbench_accuracy", "videomme_perception_score", "lvb_acc", "mlvu_percetion_score")
    assert stats.sample_score({"mvbench_accuracy": {"score": 1, "pred_answer": "A"}}, metrics) == (1.0, None)
    assert stats.sample_score({"videomme_perception_score": {"score": 0, "duration": "long"}}, metrics) == (0.0, "long")
    assert stats.sample_score({"lvb_acc": {"parsed_pred": "B", "answer": "B", "duration_group": 600}}, metrics) == (1.0, "600")
    assert stats.sample_score({"mlvu_percetion_score": {"pred_answer": "C", "answer": "D", "task_type": "count"}}, metrics) == (0.0, "count")
    assert stats.sample_score({"doc": {"answer": "A"}}, metrics) == (None, None)


def _write(run_dir: Path, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def videomme_report(tmp_path_factory):
    """The VideoMME fixture records with samples: vanilla 293/500 right (58.6%, the paper's value), VidCom2 at 25%
    differs from it on 4 questions (b=3, c=1: n.s.), random at 25% gets everything wrong (significant)."""
    root = tmp_path_factory.mktemp("ci") / "runs"
    shutil.copytree(FIXTURES / "videomme", root / "videomme")
    base = root / "videomme" / "llava_ov_7b"
    durations = ["short", "medium", "long"]
    vanilla = [{"task": "videomme", "doc_id": i, "correct": int(i < 293), "group": durations[i % 3]} for i in range(500)]
    flipped = {0: 0, 1: 0, 2: 0, 400: 1}
    _write(base / "none" / "r1.00" / "seed0", vanilla)
    _write(base / "vidcom2" / "r0.25" / "seed0", [{**r, "correct": flipped.get(r["doc_id"], r["correct"])} for r in vanilla])
    _write(base / "random" / "r0.25" / "seed0", [{**r, "correct": 0} for r in vanilla])
    records = [report.load_record(p) for p in report.find_records(root)]
    out = root.parent / "tables"
    text = report.build(records, out, None, published=paper.load_published())
    return text, out


def test_report_writes_the_companion_table(videomme_report):
    text, out = videomme_report
    ci = __import__("pandas").read_csv(out / "accuracy_ci.csv")
    overall = ci[ci["metric"] == "videomme_overall"].set_index(["method", "retention_ratio"])
    assert overall.loc[("none", 1.0), "accuracy"] == pytest.approx(58.6)
    assert overall.loc[("none", 1.0), "n"] == 500
    v = overall.loc[("vidcom2", 0.25)]
    assert (v["b"], v["c"], v["p_value"]) == (3, 1, pytest.approx(2 * 5 / 16))  # C(4,0)+C(4,1) = 5
    assert not v["significant"] and v["delta"] == pytest.approx(-0.4)
    assert overall.loc[("random", 0.25), "significant"]
    short = ci[(ci["metric"] == "videomme_short") & (ci["method"] == "none")]
    assert int(short["n"].iloc[0]) == 167  # doc_ids 0, 3, ..., 498
    assert "Confidence intervals and paired tests" in text and stats.NS_MARK in (out / "accuracy_ci.md").read_text()


def test_vs_paper_says_whether_the_published_value_is_in_the_interval(videomme_report):
    _, out = videomme_report
    vs = __import__("pandas").read_csv(out / "vs_paper.csv")
    vs = vs[vs["metric"] == "videomme_overall"].set_index(["method", "retention_ratio"])
    assert bool(vs.loc[("none", 1.0), "paper_in_ci"]) is True  # 58.6 is our estimate itself
    assert bool(vs.loc[("random", 0.25), "paper_in_ci"]) is False  # ours is 0%
    md = (out / "vs_paper.md").read_text()
    assert "∈" in md and "∉" in md


def test_records_without_samples_get_no_interval(tmp_path):
    records = [report.load_record(p) for p in report.find_records(FIXTURES / "mlvu")]
    assert stats.cells(records).empty
