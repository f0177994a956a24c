"""Every tiny preset (``conf/experiment/tiny*.yaml``) end to end, in one process: its runs, its tables, the
comparison with the published rows it stands in for, the intervals, and a figure preset's grouped bars.

All presets write into one results folder, so a run that two presets share (same identity: e.g. vanilla, or plain
VidCom2 at 25% on the same tiny model and benchmark) is run once and found by the other (``eval.runner`` skips a
finished identity). ``limit=1``: one question per task, the smallest run that still fills each table's columns.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from eval import paper, presets, report

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = [n for n in presets.preset_names("experiment") if n.startswith("tiny")]


def _published(preset) -> pd.DataFrame:
    return presets.published_for(paper.load_published(), preset)


def _is_figure(preset) -> bool:
    return _published(preset)["metric"].str.endswith("_rel_pct").any()


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """(root, {preset name: (preset, record paths, skipped rows)}) after running every tiny preset once."""
    from eval.tasks import tiny_data
    from vidcom2.testing import tiny

    root = tmp_path_factory.mktemp("tiny_presets")
    tiny_data.build(root / "videos")
    # the checkpoints `make` and the other end-to-end tests build (kept when present, as make_tiny_models.py does)
    common = (f"cache_dir={ROOT / '.cache'}", f"tiny_data={root / 'videos'}", f"results_dir={root / 'runs'}",
              "progress=false", "limit=1")  # fmt: skip
    composed = {n: presets.load_preset("experiment", n, common) for n in TINY}
    for path in sorted({Path(p.pretrained) for p in composed.values()}):
        if not (path / "tiny_model.json").is_file():
            tiny.save(path.name, path)
    done = {}
    for name in sorted(TINY, key=lambda n: (composed[n].model, n)):  # one model load per tiny model
        paths, errors = presets.run_in_process(composed[name])
        assert not errors, errors
        done[name] = (composed[name], paths, presets.runnable(composed[name])[1])
    return root, done, common


def test_every_preset_has_a_tiny_counterpart_that_stands_in_for_it():
    real = {n for n in presets.preset_names("experiment") if not n.startswith("tiny")}
    covered = {r for n in TINY for r in presets.load_preset("experiment", n).stands_in_for}
    # the Table 2 / Qwen3-VL presets differ from llava_ov_7b only in model and rows: conf/experiment/tiny.yaml
    shared = {"llava_video_7b", "qwen3_vl_8b_32f", "qwen3_vl_8b_64f", "qwen3_vl_32b", "qwen3_vl_30b_a3b"}
    assert covered <= real and real - covered == shared


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_runs_end_to_end(ran, name):
    root, done, common = ran
    preset, paths, skipped = done[name]
    runnable = presets.runnable(preset)[0]
    n_runs = sum(len(rs) for rs in runnable.values()) * len(preset.benchmarks) * len(preset.seeds)
    assert len(paths) == len(set(paths)) == n_runs and all(p.is_file() for p in paths)
    out, plots = root / "tables" / name, root / "plots" / name
    figure = _is_figure(preset)
    argv = ["--runs", str(root / "runs"), "--experiment", name, "--out", str(out), "--quiet",
            *(f"--override={o}" for o in common), *(["--plots", str(plots)] if figure else ["--no-plots"])]  # fmt: skip
    assert report.main(argv) == 0
    acc = pd.read_csv(out / "accuracy.csv")
    # the table is the preset's rows, in its order: the runnable ones filled, the others labelled, none foreign
    assert list(zip(acc["method"], acc["retention_ratio"])) == list(preset.rows)
    ran_rows = {(m, r) for m, rs in runnable.items() for r in rs} | {("none", 1.0)}
    filled = acc[acc["n_columns"] > 0]
    assert set(zip(filled["method"], filled["retention_ratio"])) == ran_rows
    assert all(s.startswith("not supported") for s in acc.loc[acc["n_columns"] == 0, "status"])
    assert len(skipped) == len({m for m, _ in preset.rows}) - len(runnable)
    text = (out / "report.md").read_text()
    assert "RANDOM WEIGHTS" in text and all(paper.method_label(m) in text for m, _ in preset.rows)
    _check_vs_paper(preset, out, acc)
    ci = pd.read_csv(out / "accuracy_ci.csv")
    assert set(ci["method"]) == {m for m, _ in ran_rows} and (ci["ci_low"] <= ci["ci_high"]).all()
    assert ci.loc[ci["method"] != "none", "p_value"].between(0, 1).all()
    if figure:
        assert (plots / f"relative_{preset.model}_{preset.frames}f.png").is_file()


def _check_vs_paper(preset, out: Path, acc: pd.DataFrame) -> None:
    """Every published row of the stood-in tables appears in the comparison with the paper's value; where both
    sides have a cell, Δ = ours − paper (ours recomputed here from the accuracy table, % of vanilla included)."""
    pub = _published(preset)
    vs = pd.read_csv(out / "vs_paper.csv")
    acc_pub = pub[pub["table"].str.startswith("acc_")]
    got = vs.set_index(["method", "retention_ratio", "metric"])
    for r in acc_pub.itertuples():
        assert got.loc[(r.method, r.retention_ratio, r.metric), "paper"] == pytest.approx(r.value)
    ours = acc.set_index(["method", "retention_ratio"])
    vanilla = ours.loc[("none", 1.0)]
    compared = 0
    for (method, ratio, metric), row in got.iterrows():
        column = metric.removesuffix("_rel_pct")
        if pd.isna(row["paper"]) or (method, ratio) not in ours.index or column not in ours:
            continue
        mine = ours.loc[(method, ratio), column]
        if metric.endswith("_rel_pct"):
            mine = math.nan if not vanilla[column] else 100.0 * mine / vanilla[column]
        if pd.isna(mine):
            assert pd.isna(row["delta"])
            continue
        assert row["delta"] == pytest.approx(mine - row["paper"])
        compared += 1
    if not _is_figure(preset) and preset.name != "tiny_acc_llava_egoschema_perceptiontest":
        assert compared > 0  # (Table 3's columns, EgoSchema and PerceptionTest, have no tiny project task; a
        # figure's cells are % of a random-weight vanilla that may score 0, then Δ is undefined: checked above)
    if pub["table"].str.startswith("efficiency_").any():
        eff = pd.read_csv(out / "efficiency_vs_paper.csv")
        assert {"vidcom2", "random"} <= set(eff["method"]) and eff["paper_change_pct"].notna().any()
