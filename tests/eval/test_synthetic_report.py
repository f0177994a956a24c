"""``python -m eval.synthetic``: records of the synthetic benchmark -> the per-task table (labelled SYNTHETIC)."""

from __future__ import annotations

import json

import pandas as pd

from eval import synthetic
from tests.eval.fixtures.records.make import efficiency
from tests.eval.fixtures.records.make import record as fixture_record

MODEL = "trained_tiny_llava_ov"


def _write(root, method, ratio, seed, scores):
    breakdown = dict(zip(synthetic.TASKS, scores))
    rec = fixture_record(synthetic.BENCHMARK, "mvbench", MODEL, None, "llava_onevision", False, 4, method, ratio,
                         seed, sum(scores) / 4, breakdown, efficiency(1, 1, 1, 1, 1, 256, ratio))
    # schema-1 fixture records sit in the schema-1 layout (no identity hash in the folder name)
    path = root / synthetic.BENCHMARK / MODEL / method / f"r{ratio:.2f}" / f"seed{seed}" / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))


def test_table_rows_values_seed_mean_and_label(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "none", 1.0, 0, [100.0, 93.75, 87.5, 100.0])
    _write(runs, "uniform", 0.25, 0, [50.0, 75.0, 25.0, 100.0])
    _write(runs, "vidcom2", 0.25, 0, [87.5, 81.25, 62.5, 100.0])
    _write(runs, "vidcom2", 0.25, 1, [93.75, 81.25, 62.5, 100.0])
    assert synthetic.main(["--runs", str(runs), "--model", MODEL, "--out", str(tmp_path / "t"),
                           "--plots", str(tmp_path / "p")]) == 0
    text = (tmp_path / "t" / "accuracy_by_task.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Method" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["Vanilla", "VidCom2", "Uniform"]
    assert rows[1].split("|")[4].strip() == "90.6"  # mean of the two seeds' event scores
    assert "SYNTHETIC" in text
    csv = pd.read_csv(tmp_path / "t" / "accuracy_by_task.csv")
    assert csv.loc[csv["method"] == "uniform", "order"].item() == 25.0
    assert (tmp_path / "p" / "accuracy_vs_ratio_synthetic.png").is_file()
    assert (tmp_path / "p" / "pareto_synthetic.png").is_file()


def test_no_records_is_a_clear_error(tmp_path, capsys):
    assert synthetic.main(["--runs", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")]) == 1
    assert "run `make" in capsys.readouterr().err
