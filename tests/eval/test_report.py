"""The reporter on fixture records (tests/eval/fixtures/records, made by its make.py from the paper's numbers)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from eval import paper, report

FIXTURES = Path(__file__).parent / "fixtures" / "records"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    records = [report.load_record(p) for p in report.find_records(FIXTURES)]
    text = report.build(records, out / "tables", out / "plots", published=paper.load_published())
    return out, text


def _csv(out, stem):
    return pd.read_csv(out / "tables" / f"{stem}.csv")


def test_accuracy_table_values_order_and_relative_accuracy(built):
    out, _ = built
    acc = _csv(out, "accuracy")
    llava = acc[acc["model_key"] == "LLaVA-OV-7B"]
    # paper order: vanilla, then ratios descending, methods in results/paper/methods.csv order, VidCom2 last
    assert list(zip(llava["method"], llava["retention_ratio"])) == [
        ("none", 1.0), ("random", 0.25), ("fastv", 0.25), ("vidcom2", 0.25), ("vidcom2", 0.15)]
    vid = llava[(llava["method"] == "vidcom2") & (llava["retention_ratio"] == 0.25)].iloc[0]
    assert vid["mvbench"] == pytest.approx(57.2)  # mean of seeds 0 and 1: (57.0 + 57.4) / 2
    assert vid["n_seeds"] == 2
    # hand: 100/7 * (57.2/56.9 + 54.9/56.4 + 62.5/63.0 + 1 + 69.8/70.3 + 56.4/56.6 + 49.4/48.8) = 99.6055
    assert vid["avg_relative_pct"] == pytest.approx(99.6055, abs=1e-3)
    # hand: (57.2 + 54.9 + 62.5 + 58.6 + 69.8 + 56.4 + 49.4) / 7 = 408.8 / 7
    assert vid["avg_score"] == pytest.approx(408.8 / 7)
    rnd = llava[llava["method"] == "random"].iloc[0]
    # hand: 100/7 * (54.2/56.9 + 52.7/56.4 + 59.7/63.0 + 55.6/58.6 + 65.4/70.3 + 53.0/56.6 + 48.3/48.8) = 94.8546
    assert rnd["avg_relative_pct"] == pytest.approx(94.8546, abs=1e-3)
    assert llava.iloc[0]["avg_relative_pct"] == pytest.approx(100.0)


def test_markdown_marks_random_weights_approximations_and_missing_cells(built):
    out, text = built
    md = (out / "tables" / "accuracy.md").read_text()
    assert "RANDOM WEIGHTS" in text.splitlines()[4]  # a visible line at the top of the report
    tiny = md[md.index("tiny_qwen2_5_vl"):]
    assert "| Vanilla‡ " in tiny and "RANDOM WEIGHTS" in tiny
    assert "| 40.0 " in tiny and "| –  " in tiny  # missing benchmark columns print as a dash
    assert "1 of 7" in tiny
    llava = md[: md.index("tiny_qwen2_5_vl")]
    assert "| FastV†" in llava and "fixture approximation text" in llava
    assert "RANDOM WEIGHTS" not in llava and "| VidCom2  " in llava


def test_efficiency_table_in_paper_units_with_change_vs_vanilla(built):
    out, _ = built
    eff = _csv(out, "efficiency")
    llava = eff[eff["model_key"] == "LLaVA-OV-7B"].set_index(["method", "retention_ratio"])
    assert set(eff["benchmark"]) == {"mvbench", "tiny_mvbench"}  # benchmarks without measurements get no table
    vid = llava.loc[("vidcom2", 0.25)]
    assert vid["llm_generation_s"] == pytest.approx(180.7)  # 4000 x per-sample mean
    assert vid["llm_generation_s_change_pct"] == pytest.approx(100 * (180.7 - 618.0) / 618.0)
    assert vid["total_s"] == 18 * 60 + 46 and vid["peak_memory_gb"] == pytest.approx(16.0, abs=1e-6)
    assert vid["throughput_change_pct"] == pytest.approx(100 * (0.88 - 0.64) / 0.64)
    md = (out / "tables" / "efficiency.md").read_text()
    assert "26:03" in md and "−70.8%" in md and "process peak RSS" in md


def test_vs_paper_tables(built):
    out, _ = built
    vs = _csv(out, "vs_paper")
    rel = vs[(vs["method"] == "random") & (vs["metric"] == "avg_relative_pct")].iloc[0]
    assert rel["paper"] == 94.8 and rel["delta"] == pytest.approx(94.8546 - 94.8, abs=1e-3)
    mv = vs[(vs["method"] == "vidcom2") & (vs["retention_ratio"] == 0.25) & (vs["metric"] == "mvbench")].iloc[0]
    assert mv["ours"] == pytest.approx(57.2) and mv["delta"] == pytest.approx(0.0, abs=1e-9)
    # rows the paper has and we do not are listed with a dash for ours
    assert {"sparsevlm", "pdrop", "dycoke_vc2"} <= set(vs["method"])
    md = (out / "tables" / "vs_paper.md").read_text()
    assert "– / 56.4" in md and "94.9 / 94.8 (+0.1)" in md
    effvs = _csv(out, "efficiency_vs_paper")
    llm = effvs[(effvs["method"] == "fastv") & (effvs["metric"] == "llm_generation_s")].iloc[0]
    assert llm["ours_change_pct"] == pytest.approx(llm["paper_change_pct"])  # fixtures are the paper's numbers
    assert llm["paper_change_pct"] == pytest.approx(100 * (260.9 - 618.0) / 618.0)


def test_latex_and_plots(built):
    out, _ = built
    tex = (out / "tables" / "accuracy.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"\toprule" in tex and "--" in tex and r"\texttt{fastv}" in tex
    body = tex.replace(r"\%", "")
    assert "%" not in body.replace("\\resizebox{\\linewidth}{!}{%", "")  # every percent sign escaped
    for name in ("accuracy_LLaVA-OV-7B_32f", "latency_LLaVA-OV-7B_32f_mvbench", "pareto_LLaVA-OV-7B_32f_mvbench"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "plots" / f"{name}.pdf").stat().st_size > 1000


def test_preset_rows_show_not_implemented_methods(tmp_path):
    records = [report.load_record(p) for p in report.find_records(FIXTURES / "mvbench")]
    rows = [report.Row("none", 1.0), report.Row("sparsevlm", 0.25, "not implemented"), report.Row("vidcom2", 0.25),
            report.Row("vidcom2", 0.5)]
    report.build(records, tmp_path, None, rows)
    md = (tmp_path / "accuracy.md").read_text()
    line = next(x for x in md.splitlines() if "SparseVLM" in x)
    assert "(not implemented)" in line and line.count("–") == 9
    unrun = next(x for x in md.splitlines() if "VidCom2" in x and "50%" in x)
    assert unrun.count("–") == 9 and "not implemented" not in unrun  # a preset row not run yet: dashes


def test_pareto_front():
    from eval.plots import pareto_front

    pts = pd.DataFrame({"x": [1.0, 2.0, 3.0, 1.5, 4.0], "y": [50.0, 55.0, 54.0, 49.0, 60.0]})
    assert list(pareto_front(pts, "x", "y")["y"]) == [50.0, 55.0, 60.0]


def test_bad_records_and_clashes_are_clear_errors(tmp_path):
    bad = tmp_path / "record.json"
    bad.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(ValueError, match=r"record\.json: not a run record of schema"):
        report.load_record(bad)
    src = FIXTURES / "mvbench" / "llava_ov_7b" / "none" / "r1.00" / "seed0" / "record.json"
    rec = report.load_record(src)
    other = {**rec, "benchmark": "mvbench_subset"}
    with pytest.raises(ValueError, match="both of kind 'mvbench'"):
        report.aggregate_seeds(report.runs_frame([rec, other]))


def test_cli(tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURES / "tiny_mvbench", runs / "tiny_mvbench")
    assert report.main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--no-plots"]) == 0
    assert "tiny_qwen2_5_vl" in capsys.readouterr().out
    assert (tmp_path / "t" / "accuracy.tex").exists() and not (tmp_path / "t" / "vs_paper.md").exists()
    assert report.main(["--runs", str(tmp_path / "empty"), "--no-plots"]) == 1
    assert "no run records" in capsys.readouterr().err


def test_formatting():
    assert report.fmt_duration(1563) == "26:03" and report.fmt_duration(4.25) == "4.2 s"
    assert report.fmt_change(-70.76) == "−70.8%" and report.fmt(float("nan")) == "–"
    assert report.fmt_ratio(0.25) == "25%" and report.fmt_ratio(1.0) == "100%"
