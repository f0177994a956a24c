"""The run record (``record.json``), schema version 1 — the contract in ``docs/record_schema.md``.

One JSON file per finished run at ``<results_dir>/<benchmark>/<model>/<method>/r<ratio:.2f>/seed<seed>/record.json``
(vanilla is method ``none`` at ``r1.00``). A record exists only for a finished run, so its presence is the resume
test; it is written atomically (temp file in the same folder, fsync, ``os.replace``), so a crash never leaves a
half-written record. Top-level keys (all required; unknown numbers are ``null``, never missing):

- identity: ``schema_version`` (1), ``status`` ("finished"), ``created_utc``, ``benchmark`` (conf id),
  ``benchmark_kind`` (mvbench | videomme | longvideobench | mlvu | egoschema | perceptiontest), ``tasks`` (lmms-eval task names run), ``model``
  (conf id), ``model_family`` (adapter family), ``paper_model`` (name in the paper's tables or null),
  ``random_weights`` (true: accuracy is meaningless), ``frames`` (configured frame count), ``method``,
  ``method_approximation``, ``retention_ratio`` (1.0 for none), ``budget``, ``hparams``, ``seed``, ``limit``,
  ``n_samples``; beyond schema v1's required keys the harness adds ``frames_fed`` (mean frames actually fed) and
  ``second_per_grid_ts`` (Qwen2.5-VL's temporal M-RoPE spacing, else null), and ``efficiency.load_s``;
- ``accuracy``: ``{metric, headline (0-100), breakdown, unparsable}`` (:mod:`eval.accuracy`);
- ``efficiency``: token means, split latency, wall time, peak memory, FLOPs, throughput, warm-up counts
  (:func:`eval.measure.summarise`);
- ``env``: git SHA and dirty flag, python, package versions, device, dtype, attention implementation, host
  (:func:`eval.env.describe`);
- ``config``: the resolved Hydra config; ``lmms_eval``: lmms-eval's aggregate ``results`` and ``n-samples``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
REQUIRED = (
    "schema_version", "status", "created_utc", "benchmark", "benchmark_kind", "tasks", "model", "model_family",
    "paper_model", "random_weights", "frames", "method", "method_approximation", "retention_ratio", "budget",
    "hparams", "seed", "limit", "n_samples", "accuracy", "efficiency", "env", "config", "lmms_eval",
)
ACCURACY_KEYS = ("metric", "headline", "breakdown", "unparsable")
EFFICIENCY_KEYS = (
    "visual_tokens_in", "visual_tokens_out", "retention_realised", "visual_tokens_layer_avg", "latency_s",
    "total_wall_s", "peak_memory_bytes", "peak_memory_kind", "flops", "throughput_samples_per_s", "warmup_samples",
    "measured_samples",
)
LATENCY_KEYS = (
    "preprocess", "vision_encoder", "compression", "prefill", "decode_per_token", "decode", "llm_generation",
    "model_generation", "e2e_per_sample",
)
ENV_KEYS = ("git_sha", "git_dirty", "python", "versions", "device", "dtype", "attn_implementation", "hostname")
KINDS = ("mvbench", "videomme", "longvideobench", "mlvu", "egoschema", "perceptiontest")


def run_dir(results_dir: str | Path, benchmark: str, model: str, method: str, retention_ratio: float, seed: int) -> Path:
    """The run's folder; vanilla (``none``) is always ``r1.00``."""
    r = 1.0 if method == "none" else float(retention_ratio)
    return Path(results_dir) / benchmark / model / method / f"r{r:.2f}" / f"seed{int(seed)}"


def record_path(*args, **kwargs) -> Path:
    return run_dir(*args, **kwargs) / "record.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate(record: dict) -> None:
    """Raise ``ValueError`` naming the first way ``record`` breaks schema version 1."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record misses keys {missing}")
    if record["schema_version"] != SCHEMA_VERSION or record["status"] != "finished":
        raise ValueError(f"record must have schema_version {SCHEMA_VERSION} and status 'finished'")
    if record["benchmark_kind"] not in KINDS:
        raise ValueError(f"benchmark_kind {record['benchmark_kind']!r} not in {KINDS}")
    for block, keys in (("accuracy", ACCURACY_KEYS), ("efficiency", EFFICIENCY_KEYS), ("env", ENV_KEYS)):
        miss = [k for k in keys if k not in record[block]]
        if miss:
            raise ValueError(f"record.{block} misses keys {miss}")
    miss = [k for k in LATENCY_KEYS if k not in record["efficiency"]["latency_s"]]
    if miss:
        raise ValueError(f"record.efficiency.latency_s misses keys {miss}")
    h = record["accuracy"]["headline"]
    if h is not None and not (0.0 <= h <= 100.0):
        raise ValueError(f"accuracy.headline must be on a 0-100 scale, got {h}")
    if not (0.0 < float(record["retention_ratio"]) <= 1.0):
        raise ValueError(f"retention_ratio must be in (0, 1], got {record['retention_ratio']}")


def _jsonable(x):
    """Plain JSON types; NaN/inf become null (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if hasattr(x, "item"):  # numpy / torch scalars
        return _jsonable(x.item())
    return str(x)


def write(record: dict, path: str | Path) -> Path:
    """Validate and write ``record`` to ``path`` atomically; returns the path."""
    record = _jsonable(record)
    validate(record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".record.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def is_finished(path: str | Path) -> bool:
    """True when ``path`` holds a valid finished record (a corrupt or foreign file is not a finished run)."""
    try:
        validate(read(path))
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
