"""The run record (``record.json``), schema version 2 — the contract in ``docs/record_schema.md``.

One JSON file per finished run at
``<results_dir>/<benchmark>/<model>/<method>/r<ratio>/seed<seed>-<identity_hash>/record.json`` (vanilla is method
``none`` at ``r1.00``; ``<ratio>`` has two decimals unless the exact ratio needs more, e.g. ``r0.254``). The
``identity_hash`` (10 hex digits) is the SHA-256 of the run's *identity*: its resolved, result-affecting
configuration (:func:`identity`). A record exists only for a finished run, so a record with the same identity is
the resume test; every write is atomic (:func:`atomic_write`). Top-level keys (all required; unknown numbers are
``null``, never missing):

- identity: ``schema_version`` (2; readers also accept 1), ``status`` ("finished"), ``created_utc``, ``identity``
  and ``identity_hash`` (schema 2 only), ``benchmark`` (conf id), ``benchmark_kind`` (mvbench | videomme |
  longvideobench | mlvu | egoschema | perceptiontest), ``tasks`` (lmms-eval task names run), ``model`` (conf id), ``model_family`` (adapter
  family), ``paper_model`` (name in the paper's tables or null), ``random_weights`` (true: accuracy is
  meaningless), ``frames`` (configured frame count), ``method``, ``method_approximation``, ``retention_ratio``
  (1.0 for none), ``budget``, ``hparams``, ``seed``, ``limit``, ``n_samples``; the harness adds ``frames_fed``
  (mean frames actually fed), ``second_per_grid_ts`` (Qwen2.5-VL's temporal M-RoPE spacing, else null), and
  ``efficiency.load_s``;
- ``accuracy``: ``{metric, headline (0-100), breakdown, unparsable}`` (:mod:`eval.accuracy`);
- ``efficiency``: token means, split latency, wall time, peak memory, FLOPs, throughput, warm-up counts
  (:func:`eval.measure.summarise`);
- ``env``: git SHA and dirty flag, python, package versions, device, dtype, attention implementation, host
  (:func:`eval.env.describe`);
- ``config``: the resolved Hydra config; ``lmms_eval``: lmms-eval's aggregate ``results`` and ``n-samples``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED = (
    "schema_version", "status", "created_utc", "benchmark", "benchmark_kind", "tasks", "model", "model_family",
    "paper_model", "random_weights", "frames", "method", "method_approximation", "retention_ratio", "budget",
    "hparams", "seed", "limit", "n_samples", "accuracy", "efficiency", "env", "config", "lmms_eval",
)
REQUIRED_V2 = ("identity", "identity_hash")
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

# Root config keys that do not change a run's results (where it is written, how it is shown or mirrored, where the
# same files are found, how Hydra launches it, a table preset's layout); everything else is part of the identity.
# ``budget`` and ``retention_ratio`` enter resolved (method hyper-parameters; 1.0 for none), ``device`` as its kind.
NON_IDENTITY_KEYS = ("progress", "results_dir", "logger", "force", "cache_dir", "tiny_data", "tiny_hub", "hydra", "table",
                     "sweep", "budget", "retention_ratio", "device", "method", "model", "benchmark")  # fmt: skip
# Root keys added after records existed, with the value every earlier run implicitly had: at that value they stay out
# of the identity, so earlier records keep their hash (batch 1 is how every run went before `batch_size` existed)
IMPLICIT_BEFORE = {"batch_size": 1}
# Model keys that only label a run (the table name, the paper's name, the random-weights warning)
MODEL_LABELS = ("paper_model", "random_weights")
# Benchmark keys that only say where the same data is found (the HF_HOME of the run): the data's identity is the
# benchmark's name, tasks and datasets (a tiny benchmark is named tiny_*, and refuses a real cache)
BENCHMARK_LOCATIONS = ("hf_home",)
HASH_LEN = 10
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def identity(config: dict, hparams: dict, retention_ratio: float, device_kind: str | None = None) -> dict:
    """The run's identity: its resolved, result-affecting configuration as plain JSON types.

    ``config``: the resolved Hydra config (``record["config"]``); ``hparams``: the method's resolved
    hyper-parameters (root ``budget`` applied); ``retention_ratio``: the exact ratio run (1.0 for none);
    ``device_kind``: ``cpu`` / ``cuda`` / ``mps`` (the index of a data-parallel process is not part of it).
    """
    root = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    for key, implicit in IMPLICIT_BEFORE.items():
        if key in root and root[key] == implicit:
            del root[key]
    model = {k: v for k, v in (config.get("model") or {}).items() if k not in MODEL_LABELS}
    bench = {k: v for k, v in (config.get("benchmark") or {}).items() if k not in BENCHMARK_LOCATIONS}
    method = {"name": (config.get("method") or {}).get("name"), **hparams}
    return _jsonable({"benchmark": bench, "model": model, "method": method,
                      "retention_ratio": float(retention_ratio), "device": device_kind, **root})  # fmt: skip


def identity_hash(ident: dict) -> str:
    """Short stable hash of an identity: SHA-256 of its canonical JSON (sorted keys, no spaces), 10 hex digits."""
    canonical = json.dumps(_jsonable(ident), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LEN]


def without_seed(ident: dict) -> dict:
    """The identity with the seed removed: runs that differ only in the seed share it (reporter rows)."""
    return {k: v for k, v in ident.items() if k != "seed"}


def check_name(key: str, value) -> str:
    """A name used as one path component: letters, digits, ``_ . + -``, not starting with a dot, no separator."""
    text = str(value)
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(text) or ".." in text:
        raise ValueError(
            f"{key}={text!r} cannot name a results folder: use letters, digits and _ . + - only (no '/', no '..', "
            f"not absolute, at most 128 characters), e.g. {key}=my_run"
        )
    return text


def ratio_label(retention_ratio: float) -> str:
    """``r0.25``; an exact ratio that two decimals would round keeps its digits (``r0.254``)."""
    r = float(retention_ratio)
    two = f"{r:.2f}"
    return f"r{two}" if float(two) == r else f"r{r:.12g}"


def run_dir(results_dir: str | Path, benchmark: str, model: str, method: str, retention_ratio: float, seed: int,
            ident_hash: str) -> Path:
    """The run's folder; vanilla (``none``) is always ``r1.00``. Refuses names that would leave ``results_dir``."""
    r = 1.0 if method == "none" else float(retention_ratio)
    for key, name in (("benchmark.name", benchmark), ("model.name", model), ("method.name", method)):
        check_name(key, name)
    if not re.fullmatch(rf"[0-9a-f]{{{HASH_LEN}}}", str(ident_hash)):
        raise ValueError(f"identity hash {ident_hash!r} is not {HASH_LEN} hex digits")
    root = Path(results_dir)
    path = root / benchmark / model / method / ratio_label(r) / f"seed{int(seed)}-{ident_hash}"
    if not path.resolve().is_relative_to(root.resolve()):  # a symlinked component pointing elsewhere
        raise ValueError(f"run folder {path} resolves outside results_dir={root}")
    return path


def record_path(*args, **kwargs) -> Path:
    return run_dir(*args, **kwargs) / "record.json"


def find_records(results_dir: str | Path, benchmark: str, model: str, method: str, retention_ratio: float,
                 seed: int) -> list[Path]:
    """Records of every identity at one (benchmark, model, method, ratio, seed), sorted (tests, tools)."""
    r = 1.0 if method == "none" else float(retention_ratio)
    folder = Path(results_dir) / benchmark / model / method / ratio_label(r)
    return sorted(folder.glob(f"seed{int(seed)}-*/record.json"))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate(record: dict) -> None:
    """Raise ``ValueError`` naming the first way ``record`` breaks schema version 1 or 2."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record misses keys {missing}")
    if record["schema_version"] not in READABLE_VERSIONS or record["status"] != "finished":
        raise ValueError(f"record must have schema_version in {READABLE_VERSIONS} and status 'finished'")
    if record["schema_version"] >= 2:
        missing = [k for k in REQUIRED_V2 if k not in record]
        if missing:
            raise ValueError(f"schema-2 record misses keys {missing}")
        if identity_hash(record["identity"]) != record["identity_hash"]:
            raise ValueError("identity_hash is not the hash of identity (edited or corrupt record)")
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


def record_identity(record: dict) -> dict:
    """A record's identity: stored (schema 2) or rebuilt from its config, hyper-parameters and ratio (schema 1)."""
    if "identity" in record:
        return record["identity"]
    device = str((record.get("config") or {}).get("device") or "auto")
    if device == "auto":  # the device it resolved to: env.device is "cpu (...)" or the GPU's name
        ran_on = str((record.get("env") or {}).get("device") or "")
        device = "cpu" if ran_on.startswith("cpu") else "mps" if ran_on.startswith("mps") else "cuda" if ran_on else ""
    return identity(record.get("config") or {}, record.get("hparams") or {}, record["retention_ratio"],
                    device.split(":")[0] or None)  # fmt: skip


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


# ------------------------------------------------------------------------------------------- atomic writes

TMP_SUFFIX = ".tmp"
STALE_AFTER_S = 24 * 3600  # a temp file of another host (shared file system) counts as debris after a day


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def atomic_write(path: str | Path, write: Callable, mode: str = "w") -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a unique temp file in the same folder, then fsync and
    ``os.replace``. Concurrent writers of one path each use their own temp file (the last rename wins, every
    reader sees one whole file). The temp name ``.<name>.<host>.<pid>.<random>.tmp`` lets
    :func:`clean_stale_temps` tell a killed writer's debris from a live writer's file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``Path.write_text`` made atomic (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(tmp: Path, now: float | None = None) -> bool:
    """True for a temp file whose writer is gone: this host and its pid is dead, an old file of another host, or a
    name from before schema 2 (``.record.<random>.tmp``, ``samples.tmp``)."""
    parts = tmp.name[1:-len(TMP_SUFFIX)].rsplit(".", 3) if tmp.name.startswith(".") else []
    if len(parts) == 4 and parts[2].isdigit():
        if parts[1] == _host():
            return not _pid_alive(int(parts[2]))
        try:
            return (now or time.time()) - tmp.stat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            return False
    return tmp.name == "samples.tmp" or re.fullmatch(r"\.record\.[A-Za-z0-9_]+\.tmp", tmp.name) is not None


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temp files killed writers left in ``folder`` (not recursive); returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for tmp in folder.glob("*" + TMP_SUFFIX):
        if tmp.is_file() and is_stale(tmp):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write(record: dict, path: str | Path) -> Path:
    """Validate and write ``record`` (current schema) to ``path`` atomically; returns the path."""
    record = _jsonable(record)
    validate(record)
    if record["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"new records are written with schema_version {SCHEMA_VERSION}")

    def dump(f):
        json.dump(record, f, indent=1, sort_keys=False)
        f.write("\n")

    return atomic_write(path, dump)


def read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def is_finished(path: str | Path, ident_hash: str | None = None) -> bool:
    """True when ``path`` holds a valid finished record (of identity ``ident_hash`` when given); a corrupt or
    foreign file is not a finished run."""
    try:
        rec = read(path)
        validate(rec)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return ident_hash is None or rec.get("identity_hash") == ident_hash
