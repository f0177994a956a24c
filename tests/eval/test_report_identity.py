"""The reporter and run identity: a bad record is named and skipped (exit 3), filters apply before reading, and
runs whose identities differ in anything but the seed are never averaged into one row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval import record, report

FIXTURES = Path(__file__).parent / "fixtures" / "records"
VIDCOM2 = "tiny_mvbench/tiny_qwen2_5_vl/vidcom2/r0.50"  # a schema-1 fixture record at <VIDCOM2>/seed0


@pytest.fixture
def runs(tmp_path) -> Path:
    out = tmp_path / "runs"
    shutil.copytree(FIXTURES / "tiny_mvbench", out / "tiny_mvbench")
    return out


def _variant(runs: Path, folder: str, seed: int, headline: float, **config) -> dict:
    rec = json.loads((runs / VIDCOM2 / "seed0" / "record.json").read_text())
    rec["config"] = {**rec["config"], **config}
    rec.update(seed=seed, accuracy={**rec["accuracy"], "headline": headline})
    path = runs / VIDCOM2 / folder / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    return rec


def test_a_bad_record_is_named_and_skipped(runs, tmp_path, capsys):
    truncated = runs / VIDCOM2 / "seed1" / "record.json"
    truncated.parent.mkdir()
    truncated.write_text((runs / VIDCOM2 / "seed0" / "record.json").read_text()[:200])
    old = runs / "tiny_mvbench" / "tiny_qwen2_5_vl" / "random" / "r0.50" / "seed0" / "record.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"schema_version": 0, "status": "finished"}))
    code = report.main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--no-plots", "--no-paper"])
    err = capsys.readouterr().err
    assert code == report.SKIPPED_EXIT
    assert f"skipped {truncated}: " in err and "not valid JSON" in err
    assert f"skipped {old}: " in err and "2 bad record(s) skipped" in err
    assert (tmp_path / "t" / "accuracy.md").is_file()  # the good records still make their tables


def test_filters_apply_before_reading(runs, tmp_path, capsys):
    elsewhere = runs / "tiny_videomme" / "tiny_qwen2_5_vl" / "none" / "r1.00" / "seed0" / "record.json"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("{truncated")
    code = report.main(["--runs", str(runs), "--benchmark", "tiny_mvbench", "--out", str(tmp_path / "t"),
                        "--no-plots", "--no-paper"])  # fmt: skip
    assert code == 0 and "skipped" not in capsys.readouterr().err


def test_seeds_of_one_identity_are_averaged(runs):
    _variant(runs, "seed1", 1, 10.0)
    records, _ = report.load_records(report.find_records(runs))
    frame, notes = report.split_variants(report.runs_frame(records))
    agg = report.aggregate_seeds(frame)
    row = agg[(agg["method"] == "vidcom2") & (agg["retention_ratio"] == 0.5)]
    base = json.loads((runs / VIDCOM2 / "seed0" / "record.json").read_text())["accuracy"]["headline"]
    assert not notes and len(row) == 1 and int(row["n_seeds"].iloc[0]) == 2
    assert row["accuracy"].iloc[0] == pytest.approx((base + 10.0) / 2)


def test_runs_differing_in_more_than_the_seed_are_separate_rows(runs, tmp_path):
    _variant(runs, "seed1", 1, 10.0, limit=2)
    records, _ = report.load_records(report.find_records(runs))
    frame, notes = report.split_variants(report.runs_frame(records))
    agg = report.aggregate_seeds(frame)
    methods = sorted(agg.loc[agg["retention_ratio"] == 0.5, "method"])
    assert methods == ["vidcom2 [limit=2]", "vidcom2 [limit=null]"]
    assert len(notes) == 1 and "differ in limit besides the seed" in notes[0]
    text = report.build(records, tmp_path / "t", title="t")
    assert "never averaged" in text and "vidcom2 [limit=2]" in text


def test_schema_2_and_schema_1_records_of_one_run_share_an_identity(runs):
    v1 = json.loads((runs / VIDCOM2 / "seed0" / "record.json").read_text())
    ident = record.record_identity(v1)
    v2 = {**v1, "schema_version": 2, "identity": ident, "identity_hash": record.identity_hash(ident)}
    record.validate(v2)
    rows = report.runs_frame([{**v1, "_path": "a"}, {**v2, "_path": "b"}])
    assert rows["identity_key"].nunique() == 1
