"""Regression: a method the library implements is a row with its numbers, never "(not implemented)" or missing.

`python -m eval.report --model tiny_llava_ov` once printed no SparseVLM row although `make demo` had written
sparsevlm records. The check runs the reporter's own command line on records shaped like the demo's (an in-LLM
method with list-valued hyper-parameters, a layer average above its final count), without and with a preset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from eval import paper, presets, report

FIXTURES = Path(__file__).parent / "fixtures" / "records" / "tiny_mvbench" / "tiny_qwen2_5_vl"
MODEL = "tiny_qwen2_5_vl"


@pytest.fixture
def runs(tmp_path):
    """The tiny fixture records (vanilla, VidCom2 at 50%) plus a SparseVLM record at 25%, all at 8 frames (the tiny
    preset's), under ``tmp_path/runs``."""
    root = tmp_path / "runs" / "tiny_mvbench" / MODEL
    shutil.copytree(FIXTURES, root)
    src = root / "vidcom2" / "r0.50" / "seed0"
    rec = json.loads((src / "record.json").read_text())
    eff = rec["efficiency"]
    rec.update(method="sparsevlm", retention_ratio=0.25, budget=None, method_approximation=None, seed=0,
               hparams={"layers": [0, 1, 2], "schedule": "final"})  # fmt: skip
    rec["accuracy"]["headline"] = 12.5
    eff.update(visual_tokens_out=16.0, retention_realised=0.25, visual_tokens_layer_avg=40.0)
    dst = root / "sparsevlm" / "r0.25" / "seed0"
    dst.mkdir(parents=True)
    (dst / "record.json").write_text(json.dumps(rec))
    for path in root.rglob("record.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "frames": 8}))
    return tmp_path / "runs"


def _accuracy(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "accuracy.csv")


def test_sparsevlm_records_give_a_sparsevlm_row(runs, tmp_path, capsys):
    out = tmp_path / "tables"
    assert report.main(["--runs", str(runs), "--model", MODEL, "--out", str(out), "--no-plots", "--no-paper"]) == 0
    text = capsys.readouterr().out
    acc = _accuracy(out)
    row = acc[acc["method"] == "sparsevlm"]
    assert len(row) == 1 and row.iloc[0]["status"] == "ok" and row.iloc[0]["mvbench"] == pytest.approx(12.5)
    assert "| SparseVLM‡ " in text and "not implemented" not in text
    eff = pd.read_csv(out / "efficiency.csv")
    assert eff.loc[eff["method"] == "sparsevlm", "visual_tokens_out"].tolist() == [16.0]
    line = next(x for x in (out / "efficiency.md").read_text().splitlines() if x.startswith("| SparseVLM"))
    assert line.split("|")[3].strip() == "40"  # Tokens: an in-LLM method shows its layer average


def test_preset_row_with_a_record_shows_it_and_without_one_is_not_called_unimplemented(runs, tmp_path, capsys):
    # the tiny preset lists sparsevlm at 25% and random (no record here) at 50% and 25%
    out = tmp_path / "tables"
    assert report.main(["--runs", str(runs), "--experiment", "tiny", "--out", str(out), "--no-plots",
                        "--no-paper"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    acc = _accuracy(out)
    assert acc.loc[acc["method"] == "sparsevlm", "mvbench"].tolist() == [pytest.approx(12.5)]
    assert set(acc["status"]) == {"ok"}
    assert "not implemented" not in text


def test_every_registered_method_is_implemented_and_labelled_for_every_family():
    import vidcom2
    from vidcom2.adapters import list_adapters

    methods = paper.load_methods()
    registered = set(vidcom2.list_methods())
    assert "sparsevlm" in registered and presets.implemented_methods() == registered
    # every registered method has its label and table position in results/paper/methods.csv
    assert registered <= set(methods["method"]), sorted(registered - set(methods["method"]))
    assert paper.method_label("sparsevlm", methods) == "SparseVLM"
    for family in list_adapters():
        assert presets.row_status("sparsevlm", family) == "ok", family


def test_tiny_preset_skips_a_row_its_checkpoint_cannot_run_instead_of_failing(tmp_path):
    # SparseVLM's official layers 2/6/15 do not fit the tiny 4-layer LLM: eval.run would refuse the run before loading
    # (and `make table-tiny` would fail); the preset keeps it as a labelled row instead
    from vidcom2.testing import tiny

    tiny.save("qwen2_5_vl", tmp_path / "tiny_models" / "qwen2_5_vl", text_layers=4)
    preset = presets.load_preset("experiment", "tiny", (f"cache_dir={tmp_path}",))
    commands, skipped = presets.sweep_commands(preset)
    assert sorted(c[5] for c in commands) == ["method=fastv", "method=none", "method=random", "method=vidcom2"]
    assert skipped == ["sparsevlm at 0.25: not supported by the 4-layer LLM with conf/method/sparsevlm.yaml "
                       "(kept as a row in the tables)"]
    assert presets.row_status("sparsevlm", preset.family, preset.pretrained, (0.25,)).startswith("not supported")
    # a 28-layer LLM (Qwen2-7B's depth, the layers' design point) runs it
    tiny.save("qwen2_5_vl", tmp_path / "deep", text_layers=28)
    assert presets.row_status("sparsevlm", preset.family, str(tmp_path / "deep"), (0.25,)) == "ok"


def test_table3_benchmarks_are_columns_outside_the_averages(tmp_path):
    # EgoSchema / PerceptionTest records fill their own columns; Avg. and Rel. stay over the paper's seven
    import pandas as pd

    from eval import paper, report

    rows = []
    for kind, none_acc, vc2_acc in (("egoschema", 60.0, 57.0), ("perceptiontest", 50.0, 45.0), ("mvbench", 40.0, 38.0)):
        for method, ratio, acc in (("none", 1.0, none_acc), ("vidcom2", 0.25, vc2_acc)):
            rows.append({"model_key": "m", "frames": 4, "benchmark": kind, "benchmark_kind": kind, "method": method,
                         "retention_ratio": ratio, paper.KIND_COLUMN[kind]: acc, "random_weights": False,
                         "approximation": None, "n_seeds": 1})
    agg = pd.DataFrame(rows)
    for col in (*paper.ACCURACY_COLUMNS, *paper.EXTRA_COLUMNS):
        agg[col] = agg[col] if col in agg else float("nan")
    wide = report.accuracy_wide(agg)
    table = report.accuracy_table(wide, ("m", 4), [report.Row("none", 1.0), report.Row("vidcom2", 0.25)],
                                  paper.load_methods())
    assert list(table.display.columns[-4:]) == ["EgoSchema", "PerceptionTest", "Avg.", "Rel. (%)"]
    vc2 = table.data.set_index("method").loc["vidcom2"]
    assert (vc2["egoschema"], vc2["perceptiontest"]) == (57.0, 45.0)
    assert vc2["avg_score"] == 38.0 and vc2["avg_relative_pct"] == pytest.approx(100 * 38 / 40)  # MVBench only
