"""One run, from a resolved config to a written record: validate, skip if finished, evaluate, measure, write.

Order matters: every check that can fail without weights (ratio, method and hyper-parameters, model/method pair,
checkpoint folder, videos) runs before the model loads; the record is written last and atomically, after the
per-sample log, so a record on disk always means a finished run. Any failure raises (Hydra then exits non-zero;
in a multirun the other jobs still run and keep their records).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from eval import accuracy, distributed, measure, record, validate

log = logging.getLogger(__name__)

MODEL_META = ("name", "family", "paper_model", "random_weights", "prompt_model")

# The last model built in this process, reused across the runs of an in-process sweep (its weights are unchanged by
# a run: compression is scoped to each evaluation). Key: the model config and device.
_LOADED: dict = {}


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def split_model_cfg(model_cfg: dict) -> tuple[dict, dict]:
    """(meta, constructor kwargs incl. ``_target_``) of a conf/model entry."""
    meta = {k: model_cfg.get(k) for k in MODEL_META}
    init = {k: v for k, v in model_cfg.items() if k not in MODEL_META}
    return meta, init


def load_model(init: dict, *, method: str, ratio: float, seed: int, hparams: dict, warmup: int, device: str, progress: bool,
               position_mode: str | None = None):
    """Build (or reuse) the wrapper and set this run's method on it."""
    from hydra.utils import get_class

    key = json.dumps([init, device], sort_keys=True, default=str)
    lm = _LOADED.get(key)
    if lm is None:
        _LOADED.clear()  # at most one model in memory
        cls = get_class(init["_target_"])
        kwargs = {k: v for k, v in init.items() if k != "_target_"}
        lm = cls(method=method, retention_ratio=ratio, seed=seed, hparams=hparams, warmup=warmup, device=device,
                 progress=progress, position_mode=position_mode, **kwargs)
        _LOADED[key] = lm
    else:
        lm.configure(method=method, retention_ratio=ratio, seed=seed, hparams=hparams, warmup=warmup, progress=progress,
                     position_mode=position_mode)
    lm.reset_measurements()
    return lm


def sweep_group() -> str | None:
    """The multirun folder name (shared by all jobs of one sweep), or None for a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    except (ValueError, ImportError):
        return None


def env_var(name: str, value: str):
    """Set an environment variable for the duration of a run, restoring the previous state after."""
    from vidcom2.hooks import scoped_item

    return scoped_item(os.environ, name, value)


def run(cfg) -> Path:
    """Execute one configured run; returns the record path (existing one when skipped).

    Under ``accelerate launch`` / ``torchrun`` every process runs this on its shard of the documents and rank 0
    writes the record (:mod:`eval.distributed`); a failure in any process ends the whole launch.
    """
    c = _plain(cfg)
    w = distributed.world()
    # the tiny tasks' doc_to_visual (called inside lmms-eval) finds the videos through this variable
    with distributed.fail_fast(w), env_var("VTC_TINY_DATA", str(Path(c["tiny_data"]).resolve())):
        return _run(c, w)


def _run(c: dict, w: distributed.World) -> Path:
    meta, init = split_model_cfg(c["model"])
    bench, method_cfg = c["benchmark"], c["method"]
    method = method_cfg["name"]
    ratio = validate.check_ratio(method, c["retention_ratio"])
    hparams = validate.method_hparams(method_cfg, c.get("budget"))
    path = record.record_path(c["results_dir"], bench["name"], meta["name"], method, ratio, c["seed"])
    if path.exists() and not c.get("force") and record.is_finished(path):
        if w.main:
            print(f"[skip] {path} exists (finished); force=true redoes it")
        return path
    validate.check_compatible(meta["family"], method, c.get("position_mode"), hparams, ratio, str(init["pretrained"]))
    validate.check_pretrained(str(init["pretrained"]), bool(meta["random_weights"]))
    validate.check_data(bench)
    os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")  # before any qwen-vl-utils import (spec section 1)

    from eval.evaluate import run_tasks
    from eval.models.base import resolve_device

    device = distributed.process_device(resolve_device(c["device"]), w)
    distributed.prepare_backend(device, w)
    t0 = time.perf_counter()
    lm = load_model(init, method=method, ratio=ratio, seed=c["seed"], hparams=hparams, warmup=c["warmup"], device=device,
                    progress=c.get("progress", True), position_mode=c.get("position_mode"))
    measure.reset_peak_memory()  # CUDA peak = weights + this run's inference (not an earlier run's or the loading's)
    t_eval = time.perf_counter()
    results = run_tasks(lm, list(bench["tasks"]), prompt_model=meta["prompt_model"], limit=c["limit"], seed=c["seed"],
                        offline=bool(bench.get("offline")), main=w.main)
    wall = time.perf_counter() - t_eval
    per_rank = distributed.gather_to_main((lm.sample_rows, measure.peak_memory()), w)
    if not w.main:  # rank 0 writes the record of the whole run; the others wait for it (next run starts together)
        distributed.barrier(w)
        return path
    rows = with_answers(distributed.merge_rank_rows([r for r, _ in per_rank]), results)
    if not rows:
        raise RuntimeError("the model recorded no samples: generation never ran")
    peaks = [p for _, p in per_rank]
    rec = build_record(c, meta, bench, method, ratio, hparams, results, rows, lm, wall, device, peak=max(peaks))
    rec["efficiency"]["load_s"] = t_eval - t0
    rec["data_parallel"] = {
        "world_size": w.size,
        "samples_per_rank": [sum(1 for r in rows if r["rank"] == k) for k in range(w.size)],
        "peak_memory_bytes_per_rank": [p[0] for p in peaks],
    }
    write_samples(path.parent / "samples.jsonl", rows, results)
    record.write(rec, path)
    print(f"[done] {path}  {summary_line(rec)}")
    if c.get("logger"):
        from hydra.utils import instantiate

        mirror = instantiate(c["logger"])
        mirror.log(rec, rows, group=c["logger"].get("group") or sweep_group())
    distributed.barrier(w)
    return path


def build_record(c, meta, bench, method, ratio, hparams, results, rows, lm, wall, device, peak=None) -> dict:
    from eval import env
    from vidcom2.registry import method_class

    info = method_class(method).info
    hf = lm.hf_model
    shape = measure.LLMShape.from_config(hf.config)
    fed = [r["frames_fed"] for r in rows if r.get("frames_fed") is not None]
    attn = getattr(getattr(hf.config, "get_text_config", lambda: hf.config)(), "_attn_implementation", None)
    extra = {"video_reader": os.environ.get("FORCE_QWENVL_VIDEO_READER"), "adapter": lm.session_info}
    return {
        "schema_version": record.SCHEMA_VERSION,
        "status": "finished",
        "created_utc": record.utc_now(),
        "benchmark": bench["name"],
        "benchmark_kind": bench["kind"],
        "tasks": sorted(results.get("samples") or bench["tasks"]),
        "model": meta["name"],
        "model_family": meta["family"],
        "paper_model": meta["paper_model"],
        "random_weights": bool(meta["random_weights"]),
        "frames": int(c["model"]["frames"]),
        "frames_fed": (sum(fed) / len(fed)) if fed else None,
        "second_per_grid_ts": _mean_of(rows, "second_per_grid_ts"),
        "method": method,
        "method_approximation": info.approximation,
        "retention_ratio": ratio,
        "budget": hparams.get("budget"),
        "hparams": hparams,
        "seed": int(c["seed"]),
        "limit": c["limit"],
        "n_samples": len(rows),
        "accuracy": accuracy.summarise(bench["kind"], results, list(bench["tasks"])),
        "efficiency": measure.summarise(rows, int(c["warmup"]), wall, shape, peak=peak),
        "env": env.describe(device, str(hf.dtype).removeprefix("torch."), attn, extra),
        "config": c,
        "lmms_eval": {"results": results.get("results"), "n_samples": results.get("n-samples"),
                      "version": results.get("lmms_eval_version")},
    }


def with_answers(rows: list[dict], results: dict) -> list[dict]:
    """The measurement rows with lmms-eval's (filtered) answer, gold target, per-question score (``correct``) and
    subgroup of the same (task, doc_id); ``correct`` feeds the confidence intervals (:mod:`eval.stats`)."""
    from eval.stats import sample_score

    answers = {}
    for task, samples in (results.get("samples") or {}).items():
        for s in samples:
            answers[(task, s["doc_id"])] = (accuracy.response(s), s.get("target"), *sample_score(s, accuracy.METRICS.values()))
    out = []
    for r in rows:
        ans, target, correct, group = answers.get((r.get("task"), r.get("doc_id")), (None, None, None, None))
        out.append({**r, "answer": ans, "target": target, "correct": correct, "group": group})
    return out


def _mean_of(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def write_samples(path: Path, rows: list[dict], results: dict) -> None:
    """Per-sample artefact next to the record (JSON lines, written atomically)."""
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    os.replace(tmp, path)


def summary_line(rec: dict) -> str:
    e, a = rec["efficiency"], rec["accuracy"]
    tin, tout = e["visual_tokens_in"], e["visual_tokens_out"]
    e2e = e["latency_s"]["e2e_per_sample"]
    return (
        f"acc {a['headline']:.1f} | visual tokens {tout:.0f}/{tin:.0f} ({e['retention_realised']:.3f}) | "
        f"e2e {'n/a' if e2e is None else f'{e2e:.3f}s'}/sample"
    )
