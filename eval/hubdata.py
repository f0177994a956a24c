"""Where lmms-eval 0.7.3's built-in video tasks find their data, read from the installed task YAMLs (never edited).

A built-in task with ``dataset_kwargs.video: true`` needs two things under ``$HF_HOME`` (``lmms_eval/api/task.py``,
``ConfigurableTask.download``):

- **annotations**: the ``datasets`` arrow cache a first online ``load_dataset(dataset_path, dataset_name)`` leaves,
  ``<datasets cache>/<org>___<snake_case name>/<config>/<version>/<hash>/`` with ``dataset_info.json`` (datasets 5.x
  offline reads only this, ``datasets/load.py`` ``CachedDatasetModuleFactory``). The datasets cache is
  ``$LMMS_EVAL_DATASETS_CACHE`` > ``$HF_DATASETS_CACHE`` > ``$HF_HOME/datasets`` (lmms-eval's
  ``_resolve_hf_datasets_cache_dir``);
- **videos**: the folder ``$HF_HOME/<dataset_kwargs.cache_dir>``. When it is missing lmms-eval ``snapshot_download``-s
  the dataset repository (the hub cache) and unpacks its zip / tar archives there; when it exists nothing is fetched
  (an empty folder stays empty). The per-task ``utils.py`` then joins a sub-path and a doc field (see
  :mod:`eval.tinyhub.specs`).

``HF_HOME`` is read at import time by several task ``utils.py`` (MLVU defaults to the relative ``./~/.cache/...``,
PerceptionTest never expands ``~``): :func:`resolve_hf_home` fixes one absolute value before lmms-eval is imported.

``benchmark.hf_home`` (null = that process value) points one run at another cache, e.g. the tiny hub of the
``tiny_*`` benchmarks: :func:`use_hf_home` makes it the run's ``HF_HOME`` before the data check and the evaluation.
That reaches every reader: lmms-eval re-executes a task's ``utils.py`` at every task build (``lmms_eval/utils.py``
``import_function``) and resolves its datasets cache per evaluation (:func:`eval.evaluate.run_tasks` clears its
memo); huggingface_hub's ``constants.HF_HUB_CACHE`` (read by ``snapshot_download`` / ``hf_hub_download`` at each
call, but fixed at its import) follows for the run when it is already imported, unless ``HF_HUB_CACHE`` is set.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFAULT_HF_HOME = "~/.cache/huggingface"
#: lmms-eval task folder of each benchmark kind (``lmms_eval/tasks/<folder>``)
FOLDERS = {
    "mvbench": "mvbench", "videomme": "videomme", "longvideobench": "longvideobench", "mlvu": "mlvu",
    "egoschema": "egoschema", "perceptiontest": "perceptiontest",
}
#: datasets that need ``hf auth login`` and accepting the terms on the dataset page before any download
GATED = {"longvideobench/LongVideoBench"}


def resolve_hf_home() -> Path:
    """Set ``$HF_HOME`` to one expanded absolute folder (default ``~/.cache/huggingface``) and return it.

    Call before lmms-eval is imported: its task modules read the variable at import.
    """
    home = Path(os.path.expandvars(os.environ.get("HF_HOME") or DEFAULT_HF_HOME)).expanduser().resolve()
    os.environ["HF_HOME"] = str(home)
    return home


#: variables that would move the annotations out of ``benchmark.hf_home``: unset for a run that sets it
_ELSEWHERE = ("HF_DATASETS_CACHE", "LMMS_EVAL_DATASETS_CACHE")
_HUB_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


def run_hf_home(bench: dict) -> Path | None:
    """``benchmark.hf_home`` as an absolute folder (``~`` and ``$VARS`` expanded, relative to the working directory),
    or None when it is null or absent (the process's ``HF_HOME``). A bad value raises ``ValueError`` (the runner
    reports it as a configuration error)."""
    value = bench.get("hf_home")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"benchmark.hf_home={value!r} is not a folder path; set benchmark.hf_home=<folder> (the "
                          "Hugging Face cache this run reads, as HF_HOME) or benchmark.hf_home=null for $HF_HOME")
    return Path(os.path.expandvars(value)).expanduser().resolve()


@contextlib.contextmanager
def use_hf_home(home: Path | None):
    """``HF_HOME=home`` for the duration of one run (nothing changes when ``home`` is None), restored after.

    ``HF_DATASETS_CACHE`` / ``LMMS_EVAL_DATASETS_CACHE`` are unset meanwhile, so the annotations and the video folders
    come from ``home``. The hub cache (dataset snapshots, and a hub model's weights) follows huggingface_hub's own
    rule: an explicit ``HF_HUB_CACHE`` wins, else ``<home>/hub``, also in its import-time constants when it is
    already imported (so running a hub model on the tiny hub needs its weights there, or ``HF_HUB_CACHE`` set)."""
    if home is None:
        yield None
        return
    env = {k: os.environ.get(k) for k in ("HF_HOME", *_ELSEWHERE)}
    consts = sys.modules.get("huggingface_hub.constants")
    hub_explicit = any(os.environ.get(k) for k in _HUB_VARS)
    values = {"HF_HOME": str(home), **({} if hub_explicit else {"HF_HUB_CACHE": str(home / "hub")})}
    saved = {a: getattr(consts, a) for a in values if consts is not None and hasattr(consts, a)}
    os.environ["HF_HOME"] = str(home)
    for k in _ELSEWHERE:
        os.environ.pop(k, None)
    for attr in saved:
        setattr(consts, attr, values[attr])
    try:
        yield home
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for attr, v in saved.items():
            setattr(consts, attr, v)


def check_hub_kind(bench: dict) -> None:
    """A ``tiny: true`` benchmark reads only a complete, current tiny hub; any other built-in benchmark refuses one
    (its records would stand as the real benchmark's). Called with the run's ``HF_HOME`` in place; a refusal raises
    ``ValueError`` (the runner reports it as a configuration error)."""
    if bench.get("offline"):
        return  # the project's own tasks (synthetic): no hub involved
    from eval.tinyhub.build import MARKER, is_current, marker

    home, name, tiny = hf_home(), bench.get("name"), bool(bench.get("tiny"))
    if tiny and not is_current(home):
        why = "holds no tiny hub" if marker(home) is None else "holds an incomplete or outdated tiny hub"
        raise ValueError(f"benchmark.hf_home={home} {why} ({MARKER} missing or stale), and benchmark {name} reads "
                          f"generated data only; build it with `python -m eval.tinyhub --out {home}` (make tiny-hub)")
    if not tiny and marker(home) is not None:
        raise ValueError(f"benchmark {name}: HF_HOME={home} is the generated tiny hub ({MARKER}), not the real "
                          f"{bench.get('dataset')}; run benchmark=tiny_{bench.get('kind')} on it, or point HF_HOME "
                          f"(or benchmark.hf_home) at a real Hugging Face cache")


def hf_home() -> Path:
    return Path(os.path.expandvars(os.environ.get("HF_HOME") or DEFAULT_HF_HOME)).expanduser().resolve()


def datasets_cache() -> Path:
    """The folder lmms-eval hands to ``datasets.load_dataset`` as ``cache_dir``."""
    explicit = os.environ.get("LMMS_EVAL_DATASETS_CACHE", "").strip()
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser().resolve()
    return Path(os.path.expandvars(os.environ.get("HF_DATASETS_CACHE") or str(hf_home() / "datasets"))).expanduser().resolve()


def offline() -> bool:
    """True when huggingface_hub or datasets is told not to reach the hub (same truthy values as they accept)."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


class _Loader(__import__("yaml").SafeLoader):
    """YAML loader that keeps ``!function`` values as their dotted name."""


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _tasks_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("lmms-eval is not installed (make install)")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def _load(path: Path) -> dict:
    import yaml

    data = yaml.load(path.read_text(), Loader=_Loader) or {}
    if "include" in data:
        base = _load(path.parent / data.pop("include"))
        data = {**base, **data, "dataset_kwargs": {**base.get("dataset_kwargs", {}), **data.get("dataset_kwargs", {})}}
    return data


@cache
def _index(folder: str) -> dict[str, dict]:
    """``{task or group name: parsed YAML}`` of one lmms-eval task folder."""
    out = {}
    for path in sorted((_tasks_root() / folder).rglob("*.yaml")):
        data = _load(path)
        name = data.get("task") if isinstance(data.get("task"), str) else data.get("group")
        if name:
            out[name] = {**data, "_yaml": str(path)}
    return out


@dataclass(frozen=True)
class Need:
    """What one leaf task reads: ``dataset_path``/``dataset_name``/``revision`` and the video folder under HF_HOME."""

    task: str
    dataset: str
    config: str | None
    revision: str
    cache_dir: str  # relative to HF_HOME (lmms-eval's dataset_kwargs.cache_dir)
    create_link: bool

    def video_root(self) -> Path:
        return hf_home() / self.cache_dir

    def arrow_root(self) -> Path:
        org, _, name = self.dataset.rpartition("/")
        snake = _snake(name)
        return datasets_cache() / (f"{org}___{snake}" if org else snake)

    def annotations_cached(self) -> bool:
        pattern = f"{self.config or '*'}/*/*/dataset_info.json"
        return any(self.arrow_root().glob(pattern))

    def snapshot(self) -> Path | None:
        """The hub-cache snapshot of the dataset repository at its revision, if one is on disk."""
        hub = Path(os.environ.get("HF_HUB_CACHE") or hf_home() / "hub")
        repo = hub / ("datasets--" + self.dataset.replace("/", "--"))
        ref = repo / "refs" / self.revision
        sha = ref.read_text().strip() if ref.is_file() else self.revision
        snap = repo / "snapshots" / sha
        return snap if snap.is_dir() else None


def _snake(name: str) -> str:
    """datasets' own ``camelcase_to_snakecase`` (how it names a repository's cache folder)."""
    from datasets.naming import camelcase_to_snakecase

    return camelcase_to_snakecase(name)


def needs(kind: str, tasks: list[str]) -> list[Need]:
    """One :class:`Need` per leaf task of ``tasks`` (groups expanded), read from lmms-eval's YAMLs."""
    if kind not in FOLDERS:
        raise ValueError(f"unknown benchmark kind {kind!r}; choices: {', '.join(FOLDERS)}")
    index = _index(FOLDERS[kind])
    out: list[Need] = []
    for t in tasks:
        if t not in index:
            raise ValueError(f"lmms-eval has no task {t!r} in tasks/{FOLDERS[kind]}; known: {', '.join(sorted(index))}")
        cfg = index[t]
        if "group" in cfg and not isinstance(cfg.get("task"), str):
            out += needs(kind, list(cfg["task"]))
            continue
        kw = cfg.get("dataset_kwargs") or {}
        out.append(Need(task=t, dataset=cfg["dataset_path"], config=cfg.get("dataset_name"),
                        revision=str(kw.get("revision", "main")), cache_dir=str(kw.get("cache_dir", "")),
                        create_link=bool(kw.get("create_link", False))))
    return out


def builtin_dirs(tasks: list[str]) -> list[str] | None:
    """The lmms-eval task folders holding all of ``tasks`` when each is one of the six benchmarks', else None."""
    dirs = []
    for t in tasks:
        folder = next((f for f in FOLDERS.values() if t in _index(f)), None)
        if folder is None:
            return None
        dirs.append(str(_tasks_root() / folder))
    return list(dict.fromkeys(dirs))


def repo_size(dataset: str, revision: str) -> int | None:
    """Total bytes of the dataset repository at ``revision`` from the hub's file listing; None when unreachable."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().dataset_info(dataset, revision=revision, files_metadata=True, timeout=20)
        return sum(int(s.size or 0) for s in (info.siblings or []))
    except Exception:  # noqa: BLE001 - any failure only means the size is unknown
        return None


def human(n: int | None) -> str:
    if n is None:
        return "size unknown (hub listing not reachable)"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"~{n:.0f} {unit}" if unit == "B" else f"~{n:.1f} {unit}"
        n /= 1024
    return str(n)


# MVBench's dead ``data0613`` fallback (lmms-eval 0.7.3 ``mvbench/utils.py`` ``mvbench_doc_to_visual``): when
# ``<cache>/<folder>/<video>`` is missing it would try ``<cache>/data0613/<folder>/<video>``, but only when
# ``os.path.basename(folder)`` is "clevrer" or "star"; the folders are "clevrer/video_validation" and
# "star/Charades_segment", whose basenames never are, so the fallback never runs. An unpack that left the CLEVRER /
# STAR videos under ``data0613/`` (as older MVBench archives did) is not found: lmms-eval only logs an error and
# returns the missing path, and the run's pre-load video probe refuses it. :func:`mvbench_data0613` names the fix.
MVBENCH_FALLBACK_PREFIX = "data0613"


def mvbench_data0613(video_root: Path) -> list[str]:
    """One fix per MVBench video folder found only under ``<video_root>/data0613/`` (``video_root`` =
    ``$HF_HOME/mvbench_video``), which lmms-eval 0.7.3 never reads (see above)."""
    from eval.tinyhub.specs import MVBENCH_FOLDERS

    fixes = []
    for folder in sorted(set(MVBENCH_FOLDERS.values())):
        old, new = video_root / MVBENCH_FALLBACK_PREFIX / folder, video_root / folder
        if old.is_dir() and not new.exists():
            fixes.append(f"{old} holds MVBench videos lmms-eval 0.7.3 never reads (its data0613 fallback is dead): "
                         f"move it to {new} (mkdir -p {new.parent} && mv {old} {new})")
    return fixes
