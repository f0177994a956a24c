"""Shared fixtures of the behaviour tests: the synthetic test clips and ONE harness run of both trained checkpoints
(``python -m eval.run -m``, method ``none``), so the lmms-eval start-up is paid once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.tasks import synthetic_data as sd

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("trained_tiny_llava_ov", "trained_tiny_qwen2_5_vl")


@pytest.fixture(scope="session")
def synthetic_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_videos")
    sd.build(root)
    return root


@pytest.fixture(scope="session")
def harness_none(synthetic_videos, tmp_path_factory) -> dict[str, tuple[dict, dict[str, list]]]:
    """Per model: (record, answers per task in doc order) of ``method=none`` through lmms-eval's evaluator."""
    out = tmp_path_factory.mktemp("harness_runs")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "eval.run", "-m", f"model={','.join(MODELS)}", "benchmark=synthetic_mvbench",
         "method=none", f"results_dir={out}", f"tiny_data={synthetic_videos}", "progress=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from eval import record

    result = {}
    for model in MODELS:
        found = record.find_records(out, "synthetic_mvbench", model, "none", 1.0, 0)
        assert len(found) == 1, (model, found)
        run = found[0].parent
        rec = json.loads((run / "record.json").read_text())
        answers = {t: [None] * sd.TEST_PER_TASK for t in sd.TASKS}
        for line in (run / "samples.jsonl").read_text().splitlines():
            r = json.loads(line)
            answers[r["task"].removeprefix("synthetic_mvbench_")][int(r["doc_id"])] = r["answer"]
        result[model] = (rec, answers)
    return result
