"""One run, from a resolved config to a written record: validate, skip if finished, evaluate, measure, write.

Order matters: every check that can fail without weights runs before the model loads (:func:`prepare`: types and
ranges of every key, names and ``_target_`` allowlists, the compression (:mod:`eval.compression`: the method
instance built by Hydra ``instantiate`` and validated by the library, the ratio checked once), device, results folder,
logger, model/method pair, checkpoint and its architecture, task files, videos). The run's identity (its resolved,
result-affecting configuration, :func:`eval.record.identity`) names its record folder, so a rerun skips only an
identical run. The record is written last and atomically, after the per-sample log, so a record on disk always
means a finished run. Any failure raises (Hydra then exits non-zero;
in a multirun the other jobs still run and keep their records).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from eval import (
    accuracy,
    compression,
    config_shape,
    distributed,
    hubdata,
    measure,
    record,
    sampling,
    validate,
)

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


def load_model(init: dict, *, method, ratio: float, seed: int, hparams: dict, warmup: int, device: str, progress: bool,
               position_mode: str | None = None, batch_size: int = 1):
    """Build (or reuse) the wrapper and set this run's method (the instance :mod:`eval.compression` built) on it."""
    from hydra.utils import get_class

    key = json.dumps([init, device], sort_keys=True, default=str)
    lm = _LOADED.get(key)
    if lm is None:
        _LOADED.clear()  # at most one model in memory
        from eval.models import WRAPPERS

        cls = get_class(config_shape.check_target("model._target_", init["_target_"], tuple(WRAPPERS.values())))
        kwargs = {k: v for k, v in init.items() if k != "_target_"}
        lm = cls(method=method, retention_ratio=ratio, seed=seed, hparams=hparams, warmup=warmup, device=device,
                 progress=progress, position_mode=position_mode, batch_size=batch_size, **kwargs)
        _LOADED[key] = lm
    else:
        lm.configure(method=method, retention_ratio=ratio, seed=seed, hparams=hparams, warmup=warmup, progress=progress,
                     position_mode=position_mode, batch_size=batch_size)
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
    c = resolved(cfg)
    hubdata.resolve_hf_home()  # one absolute HF_HOME for every built-in task's utils.py (read at their import)
    w = distributed.world()
    config_shape.check_root(c)
    home = _config_check(hubdata.run_hf_home, c["benchmark"])  # benchmark.hf_home: this run's HF_HOME (or null)
    # the synthetic tasks' doc_to_visual (called inside lmms-eval) finds the videos through this variable
    with distributed.fail_fast(w), env_var("VTC_TINY_DATA", str(Path(c["tiny_data"]).resolve())), \
            hubdata.use_hf_home(home):
        return _run(c, w)


def _config_check(check, *args):
    """``check(*args)``, its ``ValueError`` turned into the one-line :class:`eval.validate.ConfigError`."""
    try:
        return check(*args)
    except validate.ConfigError:
        raise
    except ValueError as e:
        raise validate.ConfigError(str(e)) from None


def resolved(cfg) -> dict:
    """The config as plain containers; an interpolation that cannot resolve is a :class:`ConfigError` naming its key."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return _plain(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise validate.ConfigError(f"{key}: {first}; fix the value of {key} (or the environment it reads)") from None


@dataclass
class Plan:
    """What one run is, decided before anything heavy: identity, record path, the checked settings.

    ``compression``: the method instance, its hyper-parameters and the checked ratio (:mod:`eval.compression`);
    ``method`` / ``ratio`` / ``hparams`` are its name, ratio and configured hyper-parameters."""

    meta: dict
    init: dict
    compression: compression.Compression
    device_kind: str
    identity: dict
    identity_hash: str
    path: Path

    @property
    def method(self) -> str:
        return self.compression.name

    @property
    def ratio(self) -> float:
        return self.compression.retention_ratio

    @property
    def hparams(self) -> dict:
        return self.compression.hparams


def plan(c: dict) -> Plan:
    """Check every harness key and derive the run's identity and record path (no model, no data touched)."""
    config_shape.check_root(c)
    validate.check_model_group(c["model"])
    meta, init = split_model_cfg(c["model"])
    comp = compression.build(c)
    device_kind = validate.check_device(c["device"])
    ident = record.identity(c, comp.hparams, comp.retention_ratio, device_kind)
    h = record.identity_hash(ident)
    try:
        path = record.record_path(c["results_dir"], c["benchmark"]["name"], meta["name"], comp.name,
                                  comp.retention_ratio, c["seed"], h)
    except ValueError as e:
        raise validate.ConfigError(str(e)) from None
    return Plan(meta, init, comp, device_kind, ident, h, path)


def prepare(c: dict, w: distributed.World):
    """Every check that can fail without weights, in order; returns (plan, logger or None, skip?)."""
    p = plan(c)
    bench, pretrained = c["benchmark"], str(p.init["pretrained"])
    validate.check_results_dir(c["results_dir"])
    mirror = validate.build_logger(c.get("logger"))  # before the evaluation: a rerun would skip and never mirror
    if w.main:
        record.clean_stale_temps(p.path.parent)  # temp files of writers killed in an earlier run
    if p.path.exists() and not c.get("force") and record.is_finished(p.path, p.identity_hash):
        return p, mirror, True
    validate.check_compatible(p.meta["family"], p.compression.method, c.get("position_mode"), p.ratio, pretrained)
    validate.check_pretrained(pretrained, bool(p.meta["random_weights"]))
    validate.check_checkpoint_family(p.meta["family"], pretrained)
    validate.check_task_files(bench)
    validate.check_generation(bench)
    if (problem := sampling.limit_mode_problem(bench, c["limit"])) is not None:
        raise validate.ConfigError(problem)
    _config_check(hubdata.check_hub_kind, bench)  # tiny benchmark <-> tiny hub
    validate.check_data(bench)
    validate.check_hub_weights(pretrained, bool(p.meta["random_weights"]))
    return p, mirror, False


def _run(c: dict, w: distributed.World) -> Path:
    p, mirror, skip = prepare(c, w)
    bench, path, ratio, hparams = c["benchmark"], p.path, p.ratio, p.hparams
    if skip:
        if w.main:
            print(f"[skip] {path} exists (finished, same identity); force=true redoes it")
        return path
    os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")  # before any qwen-vl-utils import (spec section 1)

    from eval.evaluate import run_tasks
    from eval.models.base import resolve_device

    device = distributed.process_device(resolve_device(c["device"]), w)
    distributed.prepare_backend(device, w)
    t0 = time.perf_counter()
    lm = load_model(p.init, method=p.compression.method, ratio=ratio, seed=c["seed"], hparams=hparams, warmup=c["warmup"],
                    device=device, progress=c.get("progress", True), position_mode=c.get("position_mode"),
                    batch_size=int(c.get("batch_size", 1)))
    measure.reset_peak_memory()  # CUDA peak = weights + this run's inference (not an earlier run's or the loading's)
    t_eval = time.perf_counter()
    results = run_tasks(lm, list(bench["tasks"]), prompt_model=p.meta["prompt_model"], limit=c["limit"],
                        seed=c["seed"], offline=bool(bench.get("offline")), main=w.main,
                        max_new_tokens=bench.get("max_new_tokens"),
                        stratify=bench["kind"] if sampling.limit_mode(bench) == "stratified" else None)
    wall = time.perf_counter() - t_eval
    per_rank = distributed.gather_to_main((lm.sample_rows, measure.peak_memory()), w)
    if not w.main:  # rank 0 writes the record of the whole run; the others wait for it (next run starts together)
        distributed.barrier(w)
        return path
    rows = with_answers(distributed.merge_rank_rows([r for r, _ in per_rank]), results)
    if not rows:
        raise RuntimeError("the model recorded no samples: generation never ran")
    peaks = [pk for _, pk in per_rank]
    rec = build_record(c, p.meta, bench, p.compression, results, rows, lm, wall, device, peak=max(peaks))
    rec.update(identity=p.identity, identity_hash=p.identity_hash)
    rec["efficiency"]["load_s"] = t_eval - t0
    rec["data_parallel"] = {
        "world_size": w.size,
        "samples_per_rank": [sum(1 for r in rows if r["rank"] == k) for k in range(w.size)],
        "peak_memory_bytes_per_rank": [pk[0] for pk in peaks],
    }
    write_samples(path.parent / "samples.jsonl", rows, results)
    record.write(rec, path)
    print(f"[done] {path}  {summary_line(rec)}")
    if mirror is not None:
        mirror.log(rec, rows, group=c["logger"].get("group") or sweep_group())
    distributed.barrier(w)
    return path


def build_record(c, meta, bench, comp, results, rows, lm, wall, device, peak=None) -> dict:
    from eval import env

    method, ratio, hparams = comp.name, comp.retention_ratio, comp.hparams
    info = comp.method.info  # per instance: fastvid signal=encoder is labelled, map_head is not
    hf = lm.hf_model
    shape = measure.LLMShape.from_config(hf.config)
    fed = [r["frames_fed"] for r in rows if r.get("frames_fed") is not None]
    attn = getattr(getattr(hf.config, "get_text_config", lambda: hf.config)(), "_attn_implementation", None)
    extra = {"video_reader": os.environ.get("FORCE_QWENVL_VIDEO_READER"), "adapter": lm.session_info,
             "hf_home": str(hubdata.hf_home())}
    return {
        "schema_version": record.SCHEMA_VERSION,
        "status": "finished",
        "created_utc": record.utc_now(),
        "identity": None,  # set by the caller (the run's plan)
        "identity_hash": None,
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
        "batching": dict(getattr(lm, "batching", {"batch_size": 1, "effective": 1, "fallback": None})),
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
    """Per-sample artefact next to the record (JSON lines, written atomically through a unique temp file)."""

    def dump(f):
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")

    record.atomic_write(path, dump)


def summary_line(rec: dict) -> str:
    e, a = rec["efficiency"], rec["accuracy"]
    tin, tout = e["visual_tokens_in"], e["visual_tokens_out"]
    e2e = e["latency_s"]["e2e_per_sample"]
    return (
        f"acc {a['headline']:.1f} | visual tokens {tout:.0f}/{tin:.0f} ({e['retention_realised']:.3f}) | "
        f"e2e {'n/a' if e2e is None else f'{e2e:.3f}s'}/sample"
    )
