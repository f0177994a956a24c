"""The bad-input catalogue of issue 13: one row per configuration that must be refused before any weights load.

Each case is (id, overrides, key, setup): ``overrides`` replace the base run below (tiny LLaVA-OV, tiny MVBench,
VidCom2, one doc); ``key`` is the config key the one-line error must name; ``setup`` names an environment the case
needs (see :func:`prepare`). Shared by ``test_bad_inputs.py`` and by the before/after tally of the issue.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]


class Case(NamedTuple):
    id: str
    overrides: tuple[str, ...]
    key: str
    setup: str | None = None


def _c(id_: str, overrides: str, key: str, setup: str | None = None) -> Case:
    return Case(id_, tuple(overrides.split()), key, setup)


CASES = [
    _c("ratio_above_one", "retention_ratio=1.5", "retention_ratio"),
    _c("ratio_zero", "retention_ratio=0", "retention_ratio"),
    _c("ratio_text", "retention_ratio=abc", "retention_ratio"),
    _c("ratio_nan", "retention_ratio=nan", "retention_ratio"),
    _c("none_ratio_text", "method=none retention_ratio=abc", "retention_ratio"),
    _c("none_ratio_negative", "method=none retention_ratio=-1", "retention_ratio"),
    _c("seed_float", "seed=1.7", "seed"),
    _c("seed_text", "seed=abc", "seed"),
    _c("seed_negative", "seed=-1", "seed"),
    _c("seed_bool", "seed=true", "seed"),
    _c("max_new_tokens_zero", "benchmark.max_new_tokens=0", "benchmark.max_new_tokens"),
    _c("max_new_tokens_text", "benchmark.max_new_tokens=many", "benchmark.max_new_tokens"),
    _c("limit_zero", "limit=0", "limit"),
    _c("limit_negative", "limit=-1", "limit"),
    _c("limit_text", "limit=abc", "limit"),
    _c("limit_float", "limit=1.5", "limit"),
    _c("limit_bool", "limit=true", "limit"),
    _c("warmup_negative", "warmup=-1", "warmup"),
    _c("warmup_text", "warmup=abc", "warmup"),
    _c("batch_size_zero", "batch_size=0", "batch_size"),
    _c("batch_size_float", "batch_size=2.5", "batch_size"),
    _c("frames_zero", "model.frames=0", "model.frames"),
    _c("frames_negative", "model.frames=-4", "model.frames"),
    _c("frames_text", "model.frames=abc", "model.frames"),
    _c("frames_float", "model.frames=2.5", "model.frames"),
    _c("frames_missing_env", "model.frames=${oc.env:VTC_NO_SUCH_VARIABLE}", "model.frames"),
    _c("device_cuda_without_gpu", "device=cuda", "device", "no_gpu"),
    _c("device_cuda_index_without_gpu", "device=cuda:3", "device", "no_gpu"),
    _c("device_unknown", "device=tpu", "device"),
    _c("dtype_unknown", "model.dtype=float64x", "model.dtype"),
    _c("attn_unknown", "+model.attn_implementation=fast", "model.attn_implementation"),
    _c("budget_unknown", "budget=fcx", "budget"),
    _c("budget_on_pdrop", "method=pdrop budget=fca", "budget"),
    _c("hparam_unknown", "+method.budgett=fca", "method"),
    _c("position_mode_unknown", "position_mode=bogus", "position_mode"),
    _c("family_mismatch", "model.family=qwen2_vl", "model.family"),
    _c("checkpoint_of_other_family", "model=tiny_qwen2_vl model.pretrained={llava}", "model.family"),
    _c("family_unknown", "model.family=nosuch", "model.family"),
    _c("checkpoint_missing", "model.pretrained=/nonexistent/vtc_ckpt", "model.pretrained"),
    _c("real_model_without_weights", "model=qwen2_vl_7b", "model.pretrained", "no_weights"),
    _c("model_name_escape", "model.name=../../x", "model.name"),
    _c("model_name_absolute", "model.name=/tmp/vtc_escape", "model.name"),
    _c("model_name_separator", "model.name=a/b", "model.name"),
    _c("benchmark_name_dotdot", "benchmark.name=..", "benchmark.name"),
    _c("method_name_escape", "method.name=../x", "method.name"),
    _c("model_target_builtin", "model._target_=builtins.print", "model._target_"),
    _c("model_target_os_system", "model._target_=os.system", "model._target_"),
    _c("model_target_other_family", "model._target_=eval.models.qwen2_vl.Qwen2VLCompressed", "model._target_"),
    _c("method_target_os_system", "method._target_=os.system", "method._target_"),
    _c("logger_target_open", "logger=wandb logger._target_=builtins.open", "logger._target_"),
    _c("logger_unknown_key", "logger=wandb +logger.nonsense=1", "logger"),
    _c("results_dir_unwritable", "results_dir=/proc/vtc_results", "results_dir"),
    _c("results_dir_is_a_file", "results_dir={file}", "results_dir", "file"),
    _c("results_dir_full", "", "results_dir", "full_disk"),
    _c("force_text", "force=maybe", "force"),
    _c("progress_text", "progress=maybe", "progress"),
    _c("task_json_malformed", "benchmark=synthetic_mvbench", "control.json", "bad_task_json"),
    _c("video_corrupt", "tiny_hub={hub}", "does not decode", "corrupt_video"),
    _c("task_yaml_malformed", "benchmark=synthetic_mvbench", "synthetic_mvbench_control.yaml", "bad_task_yaml"),
    _c("hf_home_not_a_path", "benchmark.hf_home=5", "benchmark.hf_home"),
    _c("tiny_benchmark_without_tiny_hub", "tiny_hub={file}", "benchmark.hf_home", "file"),
    _c("real_benchmark_on_tiny_hub", "benchmark=mlvu benchmark.hf_home={tiny_hub}", "benchmark.hf_home"),
]


def base(tmp: Path) -> dict[str, str]:
    """The valid run every case starts from (tiny assets and the tiny hub in the repository's ``.cache``)."""
    cache = ROOT / ".cache"
    return {"model": "tiny_llava_ov", "benchmark": "tiny_mvbench", "method": "vidcom2", "limit": "1",
            "progress": "false", "cache_dir": str(cache), "tiny_data": str(cache / "tiny_bench" / "videos"),
            "tiny_hub": str(cache / "tiny_hub"), "results_dir": str(tmp / "runs")}  # fmt: skip


def overrides(case: Case, tmp: Path) -> list[str]:
    """The case's full override list: the base with the case's keys replaced (Hydra keeps the last duplicate)."""
    args = base(tmp)
    for o in case.overrides:
        key, value = o.split("=", 1)
        args[key] = value.replace("{file}", str(tmp / "a_file")).replace("{hub}", str(tmp / "hub")).replace(
            "{llava}", str(ROOT / ".cache" / "tiny_models" / "llava_onevision")).replace(
            "{tiny_hub}", str(ROOT / ".cache" / "tiny_hub"))
    return [f"{k}={v}" for k, v in args.items()]


def prepare(case: Case, tmp: Path, monkeypatch) -> None:
    """Put the environment ``case.setup`` names in place (``monkeypatch``: pytest's, undone after the case)."""
    import eval.evaluate
    import eval.validate

    if case.setup == "no_gpu":
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    elif case.setup == "no_weights":
        monkeypatch.setenv("HF_HOME", str(tmp / "hf_home"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif case.setup == "corrupt_video":  # a copy of the tiny hub with one MVBench clip overwritten by garbage
        shutil.copytree(ROOT / ".cache" / "tiny_hub", tmp / "hub")
        victim = sorted((tmp / "hub" / "mvbench_video").rglob("*.mp4"))[0]  # the first the pre-load probe decodes
        victim.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4)
    elif case.setup == "file":
        (tmp / "a_file").write_text("not a folder\n")
    elif case.setup == "full_disk":
        real = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=4096))
    elif case.setup in ("bad_task_json", "bad_task_yaml"):
        tasks = tmp / "tasks"
        shutil.copytree(ROOT / "eval" / "tasks", tasks)
        bad = "control.json" if case.setup == "bad_task_json" else "synthetic_mvbench_control.yaml"
        (tasks / "synthetic_mvbench" / bad).write_text('[{"video": "clip00.mp4", "question": \n' if bad.endswith(
            "json") else "task: [unclosed\n  - : :\n")
        monkeypatch.setattr(eval.evaluate, "TASKS_DIR", tasks)
        monkeypatch.setattr(eval.validate, "TASKS_DIR", tasks)
