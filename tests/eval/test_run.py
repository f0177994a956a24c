"""The Hydra app end to end on a tiny random-weight model and the tiny tasks, through lmms-eval's real evaluator.

One sweep (subprocess, like a user) runs three jobs, one of which is misconfigured: it checks the record schema, the
realised retention, crash isolation in a sweep, the non-zero exit code and the wandb offline mirror. Further runs
check resume, ``force`` and the bad-input errors.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval import record
from eval.tasks import tiny_data

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny_qwen3_vl"
pytestmark = pytest.mark.slow


def env(**extra) -> dict:
    e = dict(os.environ)
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline",
             OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    e.update(extra)
    return e


def run_app(*overrides: str, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eval.run", *overrides], cwd=ROOT, env=env(**extra_env),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tiny checkpoint (built into a temp cache) and the tiny videos (shared cache, idempotent)."""
    from vidcom2.testing import tiny

    cache = tmp_path_factory.mktemp("cache")
    tiny.save("qwen3_vl", cache / "tiny_models" / "qwen3_vl")
    tiny_data.build(cache / "tiny_bench" / "videos")  # where cache_dir=<cache> makes the app look
    return cache


@pytest.fixture(scope="module")
def sweep(assets, tmp_path_factory):
    """``-m method=uniform,vidcom2,pdrop budget=uniform``: pdrop has no budget allocator, so that job fails (fastv and
    sparsevlm take per-frame budgets since FCA inside the LLM)."""
    out = tmp_path_factory.mktemp("runs")
    wandb_dir = tmp_path_factory.mktemp("wandb")
    proc = run_app(
        "-m", f"model={MODEL}", "benchmark=tiny_mvbench", "method=uniform,vidcom2,pdrop", "budget=uniform",
        "retention_ratio=0.25", "limit=2", "logger=wandb", f"results_dir={out}", f"cache_dir={assets}",
        "progress=false", WANDB_DIR=str(wandb_dir),
    )
    return proc, out, wandb_dir


def _record(out: Path, method: str, ratio: float = 0.25) -> Path:
    """The one record of ``method`` at ``ratio``, seed 0 (a path that does not exist when there is none)."""
    found = record.find_records(out, "tiny_mvbench", MODEL, method, ratio, 0)
    assert len(found) <= 1, found
    return found[0] if found else out / "tiny_mvbench" / MODEL / method / "missing" / "record.json"


def test_failed_job_exits_non_zero_and_keeps_the_others(sweep):
    proc, out, _ = sweep
    assert proc.returncode != 0
    assert "has no per-frame budget allocator" in proc.stderr + proc.stdout
    assert not _record(out, "pdrop").exists()
    assert _record(out, "uniform").is_file() and _record(out, "vidcom2").is_file()


def test_record_schema_and_realised_ratio(sweep):
    _, out, _ = sweep
    for method in ("uniform", "vidcom2"):
        rec = record.read(_record(out, method))
        record.validate(rec)
        assert rec["method"] == method and rec["model"] == MODEL and rec["random_weights"] is True
        assert rec["budget"] == "uniform" and rec["hparams"]["budget"] == "uniform"
        assert rec["n_samples"] == 4 and rec["tasks"] == ["mvbench_moving_count", "mvbench_moving_direction"]  # built-in
        assert set(rec["accuracy"]["breakdown"]) == {"moving_count", "moving_direction"}
        e = rec["efficiency"]
        assert e["warmup_samples"] == 1 and e["measured_samples"] == 3
        assert all(v is not None and v >= 0 for v in e["latency_s"].values())
        assert e["flops"]["prefill"] > 0 and e["flops"]["decode_per_token"] > 0
        rows = [json.loads(line) for line in (_record(out, method).parent / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 4
        for r in rows:
            # uniform per-frame budgets: every temporal patch keeps round(0.25 * N) of its N tokens
            frames = r["frames_fed"] // 2  # Qwen3-VL temporal patch = 2 frames
            per_frame = r["visual_tokens_in"] // frames
            assert r["visual_tokens_out"] == frames * min(per_frame, max(1, round(0.25 * per_frame)))
        assert abs(e["retention_realised"] - 0.25) < 0.03
        assert rec["env"]["git_sha"] and rec["env"]["versions"]["lmms_eval"] == "0.7.3"
        assert rec["lmms_eval"]["results"]["mvbench_moving_count"]


def test_wandb_offline_runs_hold_metrics_and_share_a_group(sweep):
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    _, _, wandb_dir = sweep
    files = glob.glob(str(wandb_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 2
    groups, keys = set(), []
    for f in files:
        ds = datastore.DataStore()
        ds.open_for_scan(f)
        seen = set()
        while (data := ds.scan_data()) is not None:
            rec = pb.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                seen |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
            elif kind == "run":
                groups.add(rec.run.run_group)
        keys.append(seen)
    assert len(groups) == 1 and next(iter(groups))
    for seen in keys:
        assert {"accuracy/headline", "efficiency/visual_tokens_out", "efficiency/latency_s/prefill", "samples/nrows"} <= seen


def test_finished_run_is_skipped_and_force_redoes_it(sweep, assets):
    _, out, _ = sweep
    path = _record(out, "uniform")
    before = path.stat().st_mtime_ns
    args = (f"model={MODEL}", "benchmark=tiny_mvbench", "method=uniform", "budget=uniform", "retention_ratio=0.25",
            "limit=2", f"results_dir={out}", f"cache_dir={assets}", "progress=false")
    proc = run_app(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[skip]" in proc.stdout and path.stat().st_mtime_ns == before
    proc = run_app(*args, "limit=1")  # another identity: a new run next to the first, not a [skip]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[skip]" not in proc.stdout and path.stat().st_mtime_ns == before
    found = record.find_records(out, "tiny_mvbench", MODEL, "uniform", 0.25, 0)
    assert len(found) == 2 and sorted(record.read(p)["n_samples"] for p in found) == [2, 4]
    proc = run_app(*args, "force=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert path.stat().st_mtime_ns != before and record.read(path)["n_samples"] == 4


@pytest.mark.parametrize(
    "override, message",
    [
        ("retention_ratio=1.5", "(0, 1]"),
        ("method=vidcom3", "vidcom2"),  # Hydra lists the available options
        ("benchmark=tiny_nothing", "tiny_mvbench"),
        ("model=tiny_qwen4", "tiny_qwen3_vl"),
    ],
)
def test_bad_input_exits_non_zero_with_the_choices(override, message, assets, tmp_path):
    args = {"model": MODEL, "cache_dir": str(assets), "results_dir": str(tmp_path)}
    key, value = override.split("=", 1)
    args[key] = value
    proc = run_app(*(f"{k}={v}" for k, v in args.items()))
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("record.json"))


def test_lmms_eval_cli_runs_the_registered_wrapper(assets, tmp_path):
    # --verbosity DEBUG: lmms-eval's CLI re-raises a crash only then (otherwise it exits 0, spec pitfall 1)
    model_args = ",".join([
        f"pretrained={assets / 'tiny_models' / 'qwen3_vl'}", "method=vidcom2", "retention_ratio=0.25", "budget=uniform",
        "device=cpu", "frames=8", "min_pixels=50176", "max_pixels=50176", "progress=False",
    ])
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lmms-eval"), "--model", "vidcom2_qwen3_vl", "--model_args", model_args,
         "--tasks", "mvbench_moving_count", "--limit", "1", "--batch_size", "1",
         "--output_path", str(tmp_path), "--verbosity", "DEBUG"],  # the built-in task, served by the tiny hub
        cwd=tmp_path, env=env(HF_HOME=os.environ["VTC_TINY_HUB"]), capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = [json.loads(p.read_text()) for p in tmp_path.rglob("*_results.json")]
    assert len(results) == 1
    assert "mvbench_accuracy,none" in results[0]["results"]["mvbench_moving_count"]


def test_console_script_finds_its_config_from_any_directory(tmp_path):
    exe = Path(sys.executable).parent / "vtc-eval"
    proc = subprocess.run([str(exe), "--cfg", "job", "model=tiny_llava_ov"], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "eval.models.llava_onevision.LlavaOneVisionCompressed" in proc.stdout
