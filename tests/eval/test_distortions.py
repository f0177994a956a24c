"""lmms-eval 0.7.3 behaviours that distort records, and how the harness handles them (docs/harness.md):
MLVU's headline over all 7 task types under a limit, VideoMME's first-N limit (only short videos), MVBench's dead
``data0613`` fallback."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from eval import accuracy, paper, report, sampling
from eval.tasks import tiny_data
from eval.validate import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_videos")
    tiny_data.build(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTC_TINY_DATA", str(folder))
        yield folder


def test_mlvu_limit_headline_divides_by_seven_and_the_present_types_mean_is_kept():
    from lmms_eval.models.simple.dummy import Dummy

    from eval.evaluate import run_tasks
    from eval.hubdata import use_hf_home
    from eval.tinyhub import build as hub

    docs = hub.docs("mlvu")[:3]  # one doc per type, first three (the built-in mlvu_dev on the tiny hub)
    with use_hf_home(hub.ensure(ROOT / ".cache" / "tiny_hub")):
        res = run_tasks(Dummy(response=docs[0]["answer"]), ["mlvu_dev"], prompt_model="dummy", limit=3, seed=0, offline=False)
    acc = accuracy.summarise("mlvu", res, ["mlvu_dev"])
    hits = [100.0 * (d["answer"] == docs[0]["answer"]) for d in docs]  # the dummy always gives the first gold letter
    assert acc["types_present"] == 3 and 0 < sum(hits)
    assert acc["headline"] == pytest.approx(sum(hits) / 7)  # lmms-eval's: the 4 absent types count 0
    assert acc["headline_present_types"] == pytest.approx(sum(hits) / 3)


def _mlvu_agg(present: float, types: int) -> pd.DataFrame:
    rows = [{"model_key": "m", "frames": 4, "benchmark": "mlvu", "benchmark_kind": "mlvu", "method": m,
             "retention_ratio": r, "mlvu": present * types / 7, "random_weights": False, "approximation": None,
             "n_seeds": 1, report.MLVU_PRESENT: present, "mlvu_types_present": types}
            for m, r in (("none", 1.0), ("vidcom2", 0.25))]  # fmt: skip
    agg = pd.DataFrame(rows)
    for col in (*paper.ACCURACY_COLUMNS, *paper.EXTRA_COLUMNS):
        agg[col] = agg[col] if col in agg else float("nan")
    return agg


def test_reporter_labels_the_present_types_column_outside_the_averages():
    table = report.accuracy_table(report.accuracy_wide(_mlvu_agg(60.0, 3)), ("m", 4),
                                  [report.Row("none", 1.0), report.Row("vidcom2", 0.25)], paper.load_methods())  # fmt: skip
    assert "MLVU (types present)" in table.display.columns
    row = table.data.set_index("method").loc["vidcom2"]
    assert row["mlvu"] == pytest.approx(60.0 * 3 / 7) and row[report.MLVU_PRESENT] == 60.0
    assert row["avg_score"] == pytest.approx(60.0 * 3 / 7)  # Avg. keeps lmms-eval's headline (the paper's column)
    assert any("divides by all 7 task types" in n and "the 3 types" in n for n in table.notes)


def test_stratified_indices_round_robin_over_strata():
    videomme = ["short"] * 4 + ["medium"] * 3 + ["long"] * 2  # the test split's order: all short videos first
    assert sampling.stratified_indices(videomme, 3) == [0, 4, 7]
    assert sampling.stratified_indices(videomme, 5) == [0, 1, 4, 5, 7]
    assert sampling.stratified_indices(videomme, 8) == [0, 1, 2, 4, 5, 6, 7, 8]
    assert sampling.stratified_indices(videomme, 50) == list(range(9))
    assert sampling.stratified_indices(["a", "a", "a"], 2) == [0, 1]  # one stratum: the first N


def _fake_task(docs: list[dict]):
    from datasets import Dataset, DatasetDict

    return SimpleNamespace(config=SimpleNamespace(test_split="test", validation_split=None),
                           has_test_docs=lambda: True, dataset=DatasetDict({"test": Dataset.from_list(docs)}),
                           dataset_no_image=DatasetDict({"test": Dataset.from_list(docs)}))  # fmt: skip


def test_stratified_scope_restricts_the_tasks_lmms_eval_builds(monkeypatch):
    from lmms_eval import evaluator

    docs = [{"q": i, "duration": d} for i, d in enumerate(["short"] * 3 + ["medium"] * 2 + ["long"] * 2)]
    task = _fake_task(docs)
    monkeypatch.setattr(evaluator, "get_task_dict", lambda *a, **k: {"videomme": task})
    with sampling.stratified("videomme", 3):
        built = evaluator.get_task_dict(["videomme"], None)
    assert built["videomme"] is task and [d["q"] for d in task.dataset["test"]] == [0, 3, 5]
    assert [d["duration"] for d in task.dataset_no_image["test"]] == ["short", "medium", "long"]
    assert evaluator.get_task_dict(["videomme"], None)["videomme"] is task  # restored: nothing restricted now
    assert len(task.dataset["test"]) == 3


def test_limit_mode_is_checked_and_part_of_the_identity(videos, tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from eval import distributed
    from eval.runner import plan, prepare

    assert "limit_mode='every'" in sampling.limit_mode_problem({"limit_mode": "every"}, 5)
    assert "without a limit" in sampling.limit_mode_problem({"limit_mode": "stratified"}, None)
    assert sampling.limit_mode_problem({}, None) is None
    from vidcom2.testing import tiny

    if not (ROOT / ".cache/tiny_models/qwen2_5_vl/tiny_model.json").is_file():  # as scripts/make_tiny_models.py
        tiny.save("qwen2_5_vl", ROOT / ".cache/tiny_models/qwen2_5_vl")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):  # refused by the runner before any load
        bad = compose("eval", overrides=["limit=2", "+benchmark.limit_mode=every", "method=none",
                                         f"cache_dir={ROOT / '.cache'}", f"tiny_data={videos}", f"results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="limit_mode='every'"):
        prepare(OmegaConf.to_container(bad, resolve=True), distributed.world())
    plans = []
    for extra in ([], ["+benchmark.limit_mode=stratified"]):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("eval", overrides=["benchmark=videomme", "limit=20", "device=cpu", *extra])
        plans.append(plan(OmegaConf.to_container(cfg, resolve=True)))
    assert plans[0].identity_hash != plans[1].identity_hash
    assert plans[1].identity["benchmark"]["limit_mode"] == "stratified"
    assert "limit_mode" not in plans[0].identity["benchmark"]  # the default keeps earlier runs' identities


def test_mvbench_data0613_fallback_is_dead_and_the_check_names_the_move(tmp_path, monkeypatch):
    from lmms_eval.tasks.mvbench import utils

    from eval import hubdata

    root = tmp_path / "mvbench_video"
    old = root / "data0613" / "clevrer" / "video_validation"
    old.mkdir(parents=True)
    (old / "v1.mp4").write_bytes(b"")
    monkeypatch.setattr(utils, "base_cache_dir", str(tmp_path))
    # lmms-eval's own resolver: the video exists under data0613/, yet the primary (missing) path comes back
    got = utils.mvbench_doc_to_visual({"video": "v1.mp4"}, {"sub_task": "moving_count"})
    assert got == [str(root / "clevrer" / "video_validation" / "v1.mp4")] and not os.path.exists(got[0])
    fixes = hubdata.mvbench_data0613(root)
    assert len(fixes) == 1 and f"mv {old} {root / 'clevrer' / 'video_validation'}" in fixes[0]


def test_no_project_task_shadows_a_builtin_one():
    # lmms-eval lets a built-in task win over a local one of the same name: the project's own tasks must never
    # define (or replace) a name of the installed lmms-eval task tree
    import re

    import lmms_eval

    name = re.compile(r"^(?:task|group):\s*([A-Za-z0-9_.-]+)\s*$", re.M)
    builtin_root = Path(lmms_eval.__file__).parent / "tasks"
    builtin = {n for p in builtin_root.rglob("*.yaml") for n in name.findall(p.read_text(errors="ignore"))}
    ours = {n for p in (ROOT / "eval" / "tasks").rglob("*.yaml") for n in name.findall(p.read_text())}
    assert {"mvbench", "videomme", "mlvu_dev"} <= builtin and len(ours) >= 5  # the synthetic group and its 4 tasks
    assert not ours & builtin, sorted(ours & builtin)
