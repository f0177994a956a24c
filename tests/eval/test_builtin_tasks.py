"""lmms-eval's BUILT-IN tasks (unmodified YAMLs and utils) end to end on the tiny hub, offline; first run; refusals.

The tiny hub (:mod:`eval.tinyhub`) is a generated ``HF_HOME``: datasets arrow caches under the real repository
identities, hub snapshots with video archives, unpacked video folders; the ``tiny_*`` benchmark configs select it by
``benchmark.hf_home`` (the shared hub of the session, ``$VTC_TINY_HUB``: tests/conftest.py). The matrix runs every
benchmark x {tiny LLaVA-OV, tiny Qwen2.5-VL} x {none, vidcom2}. Expected breakdown keys, doc counts and frame counts
come from the hub's own doc spec and the model configs (what was written), not from :mod:`eval.accuracy`.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest

from eval import record
from eval.tinyhub import build as hub
from eval.tinyhub.specs import DATASETS, MVBENCH_FOLDERS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
LIMIT = 2
KINDS = tuple(DATASETS)
MV_TASKS = ["mvbench_moving_direction", "mvbench_moving_count"]  # conf/benchmark/tiny_mvbench.yaml
MODELS = {"tiny_llava_ov": 2, "tiny_qwen2_5_vl": 4}  # model -> model.frames of the matrix
TOKENS = 4  # benchmark.max_new_tokens of the matrix (random weights never stop early)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Tiny LLaVA-OV and Qwen2.5-VL checkpoints in a temp cache (the tiny hub is the session's shared one)."""
    from vidcom2.testing import tiny

    root = tmp_path_factory.mktemp("cache")
    for arch in ("llava_onevision", "qwen2_5_vl"):
        tiny.save(arch, root / "tiny_models" / arch)
    return root


def run(cache: Path, *overrides: str, results: Path | None = None, limit: int = LIMIT) -> dict:
    from hydra import compose, initialize_config_dir

    from eval.runner import run as run_one

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=[f"cache_dir={cache}", f"results_dir={results or cache / 'runs'}", "progress=false",
                                         f"limit={limit}", *overrides])
    return record.read(run_one(cfg))


def _limit(kind: str) -> int:
    return 1 if kind == "mvbench" else LIMIT  # MVBench: 1 doc of each of its 2 subtasks


def seen_docs(kind: str) -> list[dict]:
    """The docs a matrix run evaluates (the first ``_limit`` of each task), from the hub spec."""
    if kind == "mvbench":
        configs = DATASETS["mvbench"]().configs
        return [d for t in MV_TASKS for d in configs[t.removeprefix("mvbench_")]["train"][: _limit(kind)]]
    return hub.docs(kind)[: _limit(kind)]


def expected_breakdown(kind: str) -> set[str]:
    """Breakdown keys of the docs the run sees, read from the hub spec."""
    docs = seen_docs(kind)
    keys = {
        "mvbench": lambda: {t.removeprefix("mvbench_") for t in MV_TASKS},
        "videomme": lambda: {d["duration"] for d in docs},
        "longvideobench": lambda: {str(d["duration_group"]) for d in docs},
        "mlvu": lambda: {d["task_type"] for d in docs},
        "egoschema": set,
        "perceptiontest": lambda: {d["area"] for d in docs},
    }
    return keys[kind]()


CASES = [(m, meth, k) for m in MODELS for meth in ("none", "vidcom2") for k in KINDS]  # grouped by model: one load each


@pytest.mark.parametrize(("model", "method", "kind"), CASES)
def test_builtin_task_runs_offline_on_the_tiny_hub(cache, model, method, kind):
    frames = MODELS[model]
    rec = run(cache, f"model={model}", f"benchmark=tiny_{kind}", f"method={method}", f"model.frames={frames}",
              f"benchmark.max_new_tokens={TOKENS}", limit=_limit(kind))
    record.validate(rec)
    leaves = list(rec["config"]["benchmark"]["tasks"])
    assert rec["tasks"] == sorted(leaves)  # the built-in leaf tasks, never the full group's name
    assert Path(rec["env"]["hf_home"]) == Path(os.environ["VTC_TINY_HUB"]).resolve()  # selected by config alone
    acc, metric = rec["accuracy"], rec["accuracy"]["metric"]
    for t in leaves:  # lmms-eval's own metric key, from the built-in task's aggregation
        assert f"{metric},none" in rec["lmms_eval"]["results"][t]
    assert set(acc["breakdown"]) == expected_breakdown(kind)
    assert 0.0 <= acc["headline"] <= 100.0
    if kind == "mvbench":
        assert acc["headline"] == pytest.approx(sum(acc["breakdown"].values()) / len(acc["breakdown"]))
    if kind in ("longvideobench", "egoschema", "perceptiontest"):  # 0-1 in lmms-eval, 0-100 in the record
        assert acc["headline"] == pytest.approx(100 * rec["lmms_eval"]["results"][leaves[0]][f"{metric},none"])
    assert rec["n_samples"] == len(seen_docs(kind))
    found = record.find_records(cache / "runs", f"tiny_{kind}", model, method, 0.25, 0)
    assert len(found) == 1
    rows = [json.loads(x) for f in found for x in (f.parent / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == rec["n_samples"] and all(r["frames_fed"] == frames for r in rows)  # every video decoded
    assert max(r["new_tokens"] for r in rows) <= TOKENS  # the benchmark's cap reached every question (gen_kwargs)
    assert rec["identity"]["benchmark"]["max_new_tokens"] == TOKENS and "hf_home" not in rec["identity"]["benchmark"]
    realised = rec["efficiency"]["retention_realised"]
    assert realised == pytest.approx(1.0) if method == "none" else abs(realised - 0.25) < 0.05


def test_full_mvbench_group_scores_every_subtask():
    """The built-in ``mvbench`` group (20 subtasks) on a constant-answer model: per-subtask scores by hand."""
    from lmms_eval.models.simple.dummy import Dummy

    from eval.accuracy import summarise
    from eval.evaluate import run_tasks
    from eval.hubdata import use_hf_home

    with use_hf_home(hub.ensure(ROOT / ".cache" / "tiny_hub")):
        res = run_tasks(Dummy(response="B"), ["mvbench"], prompt_model="dummy", limit=None, seed=0, offline=False)
    acc = summarise("mvbench", res, ["mvbench"])
    configs = DATASETS["mvbench"]().configs
    assert set(configs) == set(MVBENCH_FOLDERS)
    gold = {sub: ["ABCDE"[d["candidates"].index(d["answer"])] for d in c["train"]] for sub, c in configs.items()}
    expect = {s: 100.0 * sum(g == "B" for g in golds) / len(golds) for s, golds in gold.items()}
    assert acc["breakdown"] == pytest.approx(expect)
    assert acc["headline"] == pytest.approx(sum(expect.values()) / 20)


@functools.cache
def _snapshot_from(hub_cache: str):
    """``snapshot_download`` served from a local hub cache (the real function, pointed at the fixture's cache)."""
    from huggingface_hub import snapshot_download

    def fetch(repo_id, revision=None, repo_type=None, **_):
        return snapshot_download(repo_id=repo_id, revision=revision, repo_type=repo_type, cache_dir=hub_cache,
                                 local_files_only=True)

    return fetch


def test_first_run_online_unpacks_the_snapshot_and_runs(cache, tmp_path, monkeypatch):
    """Hub snapshot + annotation cache present, videos not unpacked, online: the plan is printed, lmms-eval unpacks."""
    import datasets  # noqa: F401 - imported before the env flips: datasets keeps its offline config (no network here)
    from lmms_eval.api import task as lmms_task

    from eval import hubdata, validate
    from eval.download import leaf_tasks, verify

    home = hub.build(tmp_path / "hub", unpack=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(hubdata, "repo_size", lambda dataset, revision: 12345)
    monkeypatch.setattr(lmms_task, "snapshot_download", _snapshot_from(str(home / "hub")))
    bench = {"name": "longvideobench", "kind": "longvideobench", "tasks": ["longvideobench_val_v"]}
    plan = validate.check_data(bench)
    assert len(plan) == 1 and "longvideobench/LongVideoBench (~12.1 KB)" in plan[0]
    assert str(home / "datasets/longvideobench") in plan[0] and "hf auth login" in plan[0]  # gated: says so
    rec = run(cache, "model=tiny_llava_ov", "benchmark=tiny_longvideobench", f"tiny_hub={home}", "method=none",
              "model.frames=2", results=tmp_path / "runs")
    assert rec["n_samples"] == LIMIT and rec["frames_fed"] == 2
    # every other benchmark unpacks from its snapshot too, and each doc's video then resolves and decodes
    for kind, tasks in (("mvbench", ["mvbench"]), ("videomme", ["videomme"]), ("mlvu", ["mlvu_dev"]),
                        ("egoschema", ["egoschema_subset"]), ("perceptiontest", ["perceptiontest_val_mc"])):
        assert not (home / DATASETS[kind]().cache_dir).exists()
        assert verify(leaf_tasks(tasks)) == []
        for rel in DATASETS[kind]().videos:
            assert (home / DATASETS[kind]().cache_dir / rel).is_file()


def _no_weights(*a, **k):
    raise AssertionError("weights were loaded before the data check refused")


def test_offline_refusal_names_what_is_missing_before_weights(cache, tmp_path, monkeypatch):
    from eval import runner, validate

    monkeypatch.setattr(runner, "load_model", _no_weights)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(validate.ConfigError) as e:
        run(cache, "model=tiny_llava_ov", "benchmark=egoschema", "method=none")
    msg = str(e.value)
    assert "lmms-eval/egoschema" in msg and "annotations (Subset)" in msg and "videos in" in msg
    assert "python -m eval.download benchmark=egoschema" in msg
    # annotations present, no videos and no snapshot: only the videos are named
    home = hub.build(tmp_path / "ann_only", kinds=["perceptiontest"], unpack=False, snapshot=False)
    (home / hub.MARKER).unlink()  # a real cache, as far as the harness can tell (the tiny hub would be refused)
    monkeypatch.setenv("HF_HOME", str(home))
    with pytest.raises(validate.ConfigError, match=r"lacks lmms-eval/PerceptionTest_Val: videos in .*perceptiontest_val"):
        run(cache, "model=tiny_llava_ov", "benchmark=perceptiontest", "method=none")


def test_offline_snapshot_without_unpacked_videos_is_accepted(tmp_path, monkeypatch):
    from eval import validate

    home = hub.build(tmp_path / "hub", kinds=["mlvu"], unpack=False)
    monkeypatch.setenv("HF_HOME", str(home))
    plan = validate.check_data({"name": "mlvu", "kind": "mlvu", "tasks": ["mlvu_dev"]})
    assert plan and "unpacks the videos of sy1998/MLVU_dev from the hub cache" in plan[0]
    (home / "mlvu").mkdir()
    with pytest.raises(validate.ConfigError, match="exists but is empty"):
        validate.check_data({"name": "mlvu", "kind": "mlvu", "tasks": ["mlvu_dev"]})


def test_hf_home_unset_resolves_to_one_absolute_folder_for_mlvu(tmp_path, monkeypatch):
    import importlib.util

    from eval import hubdata

    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    home = hubdata.resolve_hf_home()
    assert home == tmp_path / ".cache" / "huggingface" and Path(__import__("os").environ["HF_HOME"]) == home
    path = Path(hubdata._tasks_root()) / "mlvu" / "utils.py"
    spec = importlib.util.spec_from_file_location("mlvu_utils_probe", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # MLVU's own default would be the relative ./~/.cache/huggingface
    assert mod.cache_dir_dev == str(home / "mlvu")


def test_tiny_hub_annotations_match_the_spec(tmp_path):
    """What datasets reads back offline from the generated arrow cache is exactly the spec's docs."""
    from datasets import load_dataset

    home = hub.build(tmp_path / "hub", kinds=["perceptiontest"], unpack=False, snapshot=False)
    ds = load_dataset("lmms-eval/PerceptionTest_Val", "mc_question_val", cache_dir=str(home / "datasets"))
    assert [dict(r) for r in ds["validation"]] == json.loads(json.dumps(hub.docs("perceptiontest")))
