"""Checks made before any weights load of what the config refers to and the library cannot check: the data, the
checkpoints, the devices, the results folder, the model group against the wrappers, the logger, the task files.
Each fails with an error that names the problem and the fix. The config's own shape (types, ranges, names,
``_target_`` allowlists) is :mod:`eval.config_shape`; the method and the ratio are built and checked once by
:mod:`eval.compression` (the library's own checks).

Unknown model / benchmark / method config names are refused by Hydra itself, which lists the available options.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from eval.config_shape import (
    ATTN_IMPLEMENTATIONS,
    DTYPES,
    LOGGER_TARGETS,
    ConfigError,  # re-exported: the harness's one error type, raised by every check
    _named,
    _reject_nested_targets,
    check_bool,
    check_int,
    check_target,
)
from eval.evaluate import TASKS_DIR


def llm_depth(pretrained: str) -> int | None:
    """Decoder layers of the checkpoint's LLM when its config is available without a download, else ``None``."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(pretrained, local_files_only=True)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "num_hidden_layers", None)


def check_compatible(family: str, method, position_mode: str | None = None, retention_ratio: float = 1.0,
                     pretrained: str | None = None) -> None:
    """Refuse a model family / method / setting combination ``vidcom2.compress`` would refuse, before loading.

    ``method``: the method instance (:mod:`eval.compression`). Checks, like ``compress`` does at entry: an adapter
    exists for the family; an explicit ``position_mode`` is one the family's adapter offers (pre-LLM and
    vision-encoder methods; in-LLM methods follow their own position rule); and for methods acting inside the LLM
    (in-LLM methods, and pre-LLM / encoder methods with an in-LLM part, ``MethodInfo.in_llm``: FlashVID, PruneVid,
    HoliTom), when the checkpoint's config is on disk, that the method's layers fit the LLM's depth (the plan
    ``vidcom2.stages.in_llm.plan_for`` would build at the first sample; without selections for the latter, which
    checks their layers, not their per-video counts).
    """
    from vidcom2.adapters import adapter_for, list_adapters

    if family not in list_adapters():
        raise ConfigError(f"model.family={family!r} has no vidcom2 adapter: set model.family to one of "
                          f"{', '.join(list_adapters())}")
    name, stage = method.info.name, method.info.stage
    in_llm = stage == "in_llm" or method.info.in_llm
    depth = llm_depth(pretrained) if (in_llm and pretrained) else None
    if depth is not None:
        from vidcom2.stages.in_llm import plan_for

        try:
            plan_for(method, retention_ratio, depth, 196, mrope=False)
        except ValueError as e:
            raise ConfigError(
                f"model {pretrained} ({depth}-layer LLM) cannot run method {name!r} with these settings: {e}"
            ) from None
    if position_mode is not None and stage != "in_llm":
        modes = adapter_for(family).position_modes
        if position_mode not in modes:
            raise ConfigError(
                f"model family {family!r} cannot run method {name!r} with position_mode={position_mode!r}; "
                f"this family offers {', '.join(modes)} (or position_mode=null for its default)"
            )


def check_pretrained(pretrained: str, random_weights: bool) -> None:
    """A local checkpoint folder must exist (tiny models are built, never downloaded)."""
    looks_local = random_weights or pretrained.startswith((".", "/", "~"))  # else a hub id such as Qwen/Qwen2-VL-7B
    if looks_local and not Path(pretrained).expanduser().is_dir():
        hint = ("build the tiny models with `python scripts/make_tiny_models.py`" if random_weights else
                "check model.pretrained (the comment of the model's conf/model/*.yaml says where its checkpoint comes from)")
        raise ConfigError(f"model.pretrained={pretrained}: checkpoint folder {pretrained} does not exist; {hint}")


def tiny_videos(tasks: list[str]) -> list[str]:
    """Video file names the docs of the tiny benchmark folders behind ``tasks`` need."""
    names: list[str] = []
    for task in tasks:
        for path in sorted((TASKS_DIR / task).glob("*.json")):
            for doc in json.loads(path.read_text()):
                names.append(doc.get("video") or doc.get("video_path") or doc.get("video_name") or f"{doc['videoID']}.mp4")
    return names


def check_data(bench: dict) -> list[str]:
    """The benchmark's data can be read (offline) or fetched (online) by lmms-eval; returns the download plan lines.

    Tiny benchmarks (``offline: true``): every video exists. Built-in tasks (:mod:`eval.hubdata`): online, a missing
    annotation cache or video folder is fetched by lmms-eval itself, so this only prints what will be downloaded
    (dataset, approximate size, destination); offline, each is refused with what is missing and the fetch command.
    An existing but empty video folder is refused in both modes (lmms-eval never fetches into it).
    """
    if bench.get("offline"):
        _check_tiny(bench)
        return []
    from eval import hubdata

    needs = hubdata.needs(str(bench["kind"]), list(bench["tasks"]))
    name, off = bench["name"], hubdata.offline()
    fetch = f"`python -m eval.download benchmark={name}` (or `make download BENCH={name}`) on a machine with hub access"
    missing, plan = [], []
    for dataset in dict.fromkeys(n.dataset for n in needs):
        group = [n for n in needs if n.dataset == dataset]
        what = [f"annotations ({n.config or 'default'}) in {n.arrow_root()}" for n in group if not n.annotations_cached()]
        for root in dict.fromkeys(n.video_root() for n in group):
            n = next(x for x in group if x.video_root() == root)
            if root.is_dir() and not root.is_symlink() and not any(root.iterdir()):
                raise ConfigError(f"benchmark {name}: video folder {root} exists but is empty, so lmms-eval will not "
                                  f"download into it; remove it (rmdir {root}) and rerun, or run {fetch}")
            if root.is_dir() and not (n.create_link and root.is_symlink()):
                _probe_folder(name, root, fetch)
                continue
            if off and n.snapshot() is not None:
                plan.append(f"[data] {name}: lmms-eval unpacks the videos of {dataset} from the hub cache {n.snapshot()} into {root}")
                continue
            what.append(f"videos in {root}")
        if not what:
            continue
        if off:
            missing.append(f"{dataset}: " + "; ".join(what))
        else:
            size = hubdata.human(hubdata.repo_size(dataset, group[0].revision))
            gated = (f" It is gated: run `hf auth login` and accept its terms on https://huggingface.co/datasets/{dataset} first."
                     if dataset in hubdata.GATED else "")
            plan.append(f"[download] {name}: lmms-eval will fetch {dataset} ({size}) -> " + "; ".join(what) + "." + gated)
    if missing:
        raise ConfigError(f"benchmark {name}: offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and HF_HOME={hubdata.hf_home()} "
                          f"lacks " + " | ".join(missing) + f". Fetch it with {fetch}, or point HF_HOME at a cache that has it.")
    for line in plan:
        print(line)
    return plan


def _probe_folder(name: str, root: Path, fetch: str, count: int = 2) -> None:
    """A cheap decodability probe of an unpacked video folder: the first ``count`` videos (sorted) must decode
    (``python -m eval.download --check`` decodes every doc's video)."""
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mp4", ".mkv", ".webm", ".avi", ".mov"))
    for path in videos[:count]:
        if (why := undecodable(path)) is not None:
            raise ConfigError(f"benchmark {name}: video {path} does not decode ({why}); the unpacked videos in {root} "
                              f"look damaged: remove the folder and rerun (lmms-eval unpacks it again), or run {fetch}")


def _check_tiny(bench: dict) -> None:
    from eval.tasks.tiny_utils import data_dir

    names = tiny_videos(list(bench["tasks"]))
    if not names:
        raise ConfigError(f"benchmark {bench['name']}: no docs found under {TASKS_DIR} for tasks {list(bench['tasks'])}")
    missing = sorted({n for n in names if not (data_dir() / n).is_file()})
    if missing:
        raise ConfigError(
            f"benchmark {bench['name']}: {len(missing)} video(s) missing in {data_dir()} (e.g. {missing[0]}); "
            "generate them with `python scripts/make_tiny_benchmarks.py`"
        )
    for name in sorted(set(names)):  # tiny clips: decoding the first frame of each costs milliseconds
        if (why := undecodable(data_dir() / name)) is not None:
            raise ConfigError(
                f"benchmark {bench['name']}: video {data_dir() / name} does not decode ({why}); regenerate it with "
                "`python scripts/make_tiny_benchmarks.py` (delete the file first)"
            )


def undecodable(path: Path) -> str | None:
    """None when the first video frame of ``path`` decodes (PyAV, as lmms-eval's readers), else the reason.

    Remembered per (path, size, mtime) for the process: the runs of a sweep probe the same files once."""
    st = path.stat()
    return _undecodable(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _undecodable(path: str, size: int, mtime_ns: int) -> str | None:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return "no video stream"
            next(container.decode(video=0))
    except StopIteration:
        return "no frame"
    except (av.error.FFmpegError, OSError, ValueError) as e:  # corrupt, truncated, not a container
        return f"{type(e).__name__}: {e}".splitlines()[0][:160]
    return None


# ------------------------------------------------------------------------------ the model group, the machine

# conf/model family -> the config.json ``model_type`` values its checkpoints have (LLaVA-Video loads as LLaVA-OV)
FAMILY_MODEL_TYPES = {
    "llava_onevision": ("llava_onevision",), "llava_video": ("llava_onevision",), "qwen2_vl": ("qwen2_vl",),
    "qwen2_5_vl": ("qwen2_5_vl",), "qwen3_vl": ("qwen3_vl", "qwen3_vl_moe"),
}  # fmt: skip
MIN_FREE_BYTES = 64 * 2**20  # a record plus samples.jsonl of a full benchmark are a few MiB


def check_device(device) -> str:
    """The device kind the run uses (``cpu`` / ``cuda`` / ``mps``), refusing one this machine does not have."""
    import re

    text = str(device)
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise ConfigError(f"device={text!r} is not a device; set device=auto, cpu, cuda, cuda:<index> or mps")
    if text == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = text.split(":")[0]
    if kind == "cuda":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= n:
            have = f"{n} GPU(s)" if n else "no CUDA GPU"
            raise ConfigError(f"device={text} is not available: this machine has {have}; set device=cpu or device=auto")
    if kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("device=mps is not available on this machine; set device=cpu or device=auto")
    return kind


def check_model_group(model: dict) -> None:
    """Names, types and ranges of the model group, its wrapper class and its checkpoint's architecture."""
    from eval.models import WRAPPERS
    from eval.record import check_name

    _reject_nested_targets("model", model)
    family = model.get("family")
    if family not in WRAPPERS:
        raise ConfigError(f"model.family={family!r} has no vidcom2 adapter: set model.family to one of {', '.join(WRAPPERS)}")
    target = check_target("model._target_", model.get("_target_"), tuple(sorted(set(WRAPPERS.values()))))
    if target != WRAPPERS[family]:
        raise ConfigError(f"model._target_={target} does not serve model.family={family}; set model._target_={WRAPPERS[family]}")
    _named("model.name", model.get("name"), check_name)
    check_int("model.frames", model.get("frames"), 1, fix="set model.frames=<frames per video>, e.g. model.frames=8")
    dtype = model.get("dtype", "auto")
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype={dtype!r} is not supported; set model.dtype to one of {', '.join(DTYPES)}")
    attn = model.get("attn_implementation")
    if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"model.attn_implementation={attn!r} is not supported; set it to one of "
                          f"{', '.join(ATTN_IMPLEMENTATIONS)} (or drop it for the default)")
    check_bool("model.random_weights", model.get("random_weights"))
    if not isinstance(model.get("pretrained"), str) or not model["pretrained"]:
        raise ConfigError(f"model.pretrained={model.get('pretrained')!r} is not a checkpoint; set model.pretrained=<folder or hub id>")


def check_checkpoint_family(family: str, pretrained: str) -> None:
    """A local checkpoint's ``config.json`` ``model_type`` must be one the configured family serves."""
    config = Path(pretrained).expanduser() / "config.json"
    if not config.is_file():
        return
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.pretrained={pretrained}: {config} does not parse ({e}); rebuild or re-download it") from None
    if model_type not in FAMILY_MODEL_TYPES.get(family, ()):
        fits = [f for f, types in FAMILY_MODEL_TYPES.items() if model_type in types]
        raise ConfigError(
            f"model.family={family} does not match the checkpoint {pretrained} (config.json model_type={model_type!r}); "
            f"set model.family={'|'.join(fits) or '<family>'} or pick the model config of that checkpoint"
        )


def check_hub_weights(pretrained: str, random_weights: bool) -> None:
    """Offline, a hub id must already be in the Hugging Face cache; the error names the id, HF_HOME and the fix."""
    if random_weights or pretrained.startswith((".", "/", "~")) or Path(pretrained).is_dir():
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false") and os.environ.get("TRANSFORMERS_OFFLINE", "0") in ("0", "", "false"):
        return  # online: transformers downloads it
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub")).expanduser()
    snapshots = hub / f"models--{pretrained.replace('/', '--')}" / "snapshots"
    if not any(snapshots.glob("*/config.json")):
        raise ConfigError(
            f"model.pretrained={pretrained}: the weights are not in the Hugging Face cache ({hub}; HF_HOME={hf_home}) and "
            f"the hub is offline; download them once with `huggingface-cli download {pretrained}` (same HF_HOME), or "
            "point HF_HOME at a cache that has them"
        )


def check_results_dir(results_dir, min_free: int = MIN_FREE_BYTES) -> Path:
    """The results folder exists or can be made, takes a probe file, and has room for the records."""
    import shutil
    import tempfile

    if not isinstance(results_dir, str) or not results_dir:
        raise ConfigError(f"results_dir={results_dir!r} is not a folder; set results_dir=<folder>")
    root = Path(results_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"results_dir={results_dir} is not writable ({e.strerror or e}); set results_dir=<a writable folder>") from None
    free = shutil.disk_usage(root).free
    if free < min_free:
        raise ConfigError(
            f"results_dir={results_dir} has {free / 2**20:.1f} MiB free, under the {min_free / 2**20:.0f} MiB a run needs; "
            "free space or set results_dir=<another folder>"
        )
    return root


def build_logger(logger: dict | None):
    """The logger instance, built before the evaluation so a misconfiguration fails before weights load."""
    if not logger:
        return None
    import importlib

    target = check_target("logger._target_", logger.get("_target_"), LOGGER_TARGETS)
    _reject_nested_targets("logger", logger)
    module, cls = target.rsplit(".", 1)
    kwargs = {k: v for k, v in logger.items() if k != "_target_"}
    try:
        return getattr(importlib.import_module(module), cls)(**kwargs)
    except TypeError as e:
        raise ConfigError(f"logger: {e}; fix the logger.* keys (conf/logger/*.yaml lists them)") from None


def _task_yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """lmms-eval task YAMLs use ``!function`` tags: parse them as plain scalars."""

    Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node) if isinstance(
        node, yaml.ScalarNode) else None)
    return Loader


def check_task_files(bench: dict) -> None:
    """Every task file of an offline benchmark parses (YAML and the JSON docs); the error names the file."""
    if not bench.get("offline"):
        return
    import yaml

    loader = _task_yaml_loader()
    for task in bench.get("tasks") or []:
        folder = TASKS_DIR / str(task)
        for path in sorted(folder.glob("*")):
            try:
                if path.suffix == ".json":
                    json.loads(path.read_text())
                elif path.suffix == ".yaml" or path.name.endswith("_yaml"):
                    yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - SafeLoader subclass
            except (ValueError, yaml.YAMLError) as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ConfigError(f"benchmark task file {path.name} ({path}) does not parse: {first}; restore it "
                                  "(git checkout) or regenerate it with `python scripts/make_tiny_benchmarks.py --write-docs`") from None


def check_generation(bench: dict) -> None:
    """``benchmark.max_new_tokens``: null (the tasks' own setting) or a positive integer."""
    check_int("benchmark.max_new_tokens", bench.get("max_new_tokens"), 1, optional=True,
              fix="set it to a token count (e.g. benchmark.max_new_tokens=16) or null (each task's own setting)")
