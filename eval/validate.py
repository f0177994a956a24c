"""Checks made before any weights load, each failing with an error that names the problem and the fix.

Unknown model / benchmark / method config names are refused by Hydra itself, which lists the available options.
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.evaluate import TASKS_DIR


class ConfigError(ValueError):
    """A run configuration that cannot work; the message says how to fix it."""


def check_ratio(method: str, retention_ratio) -> float:
    from vidcom2.budget import check_ratio as _check

    if method == "none":
        return 1.0
    try:
        return _check(retention_ratio)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{e}. Set retention_ratio=<r> with 0 < r <= 1 (e.g. retention_ratio=0.25).") from None


def method_hparams(method_cfg: dict, budget: str | None) -> dict:
    """The method's hyper-parameters from its config, with the root ``budget`` override applied and checked."""
    from vidcom2.budget import ALLOCATORS
    from vidcom2.registry import get_method, hparam_names, list_methods

    name = method_cfg.get("name")
    if name not in list_methods():
        raise ConfigError(f"method config names {name!r}, which vidcom2 does not register; choices: {', '.join(list_methods())}")
    hp = {k: v for k, v in method_cfg.items() if k not in ("_target_", "name")}
    if budget is not None:
        if budget not in ALLOCATORS:
            raise ConfigError(f"budget must be one of {ALLOCATORS} (or null for the method's default), got {budget!r}")
        if "budget" not in hparam_names(name):
            with_budget = [m for m in list_methods() if "budget" in hparam_names(m)]
            raise ConfigError(
                f"method {name!r} has no per-frame budget allocator; budget={budget} applies to {', '.join(with_budget)}. "
                "Drop the budget override."
            )
        hp["budget"] = budget
    try:
        get_method(name, **hp)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"method {name!r}: {e}") from None
    return hp


def llm_depth(pretrained: str) -> int | None:
    """Decoder layers of the checkpoint's LLM when its config is available without a download, else ``None``."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(pretrained, local_files_only=True)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "num_hidden_layers", None)


def check_compatible(
    family: str,
    method: str,
    position_mode: str | None = None,
    hparams: dict | None = None,
    retention_ratio: float = 1.0,
    pretrained: str | None = None,
) -> None:
    """Refuse a model family / method / setting combination ``vidcom2.compress`` would refuse, before loading.

    Checks, like ``compress`` does at entry: an adapter exists for the family; the method's stage module
    (``encoder_scores`` for vision-encoder methods, ``in_llm`` for in-LLM methods) is installed; an explicit
    ``position_mode`` is one the family's adapter offers (pre-LLM and vision-encoder methods; in-LLM methods follow
    their own position rule); and for in-LLM methods, when the checkpoint's config is on disk, that the method's
    pruning layers fit the LLM's depth (the plan ``vidcom2.adapters.in_llm`` would build at the first sample).
    """
    import importlib

    from vidcom2.adapters import adapter_for, list_adapters
    from vidcom2.registry import method_class

    if family not in list_adapters():
        raise ConfigError(f"no vidcom2 adapter for model family {family!r}; families: {', '.join(list_adapters())}")
    stage = method_class(method).info.stage
    module = {"vision_encoder": "encoder_scores", "in_llm": "in_llm"}.get(stage)
    if module is not None:
        try:
            importlib.import_module(f"vidcom2.adapters.{module}")
        except ModuleNotFoundError as e:
            raise ConfigError(f"method {method!r} ({stage}) cannot run on {family}: vidcom2.adapters.{module} is missing ({e})") from None
    depth = llm_depth(pretrained) if (stage == "in_llm" and pretrained) else None
    if depth is not None:
        from vidcom2.adapters.in_llm import plan_for
        from vidcom2.registry import get_method

        try:
            plan_for(get_method(method, **(hparams or {})), retention_ratio, depth, 196, mrope=False)
        except ValueError as e:
            raise ConfigError(
                f"model {pretrained} ({depth}-layer LLM) cannot run method {method!r} with these settings: {e}"
            ) from None
    if position_mode is not None and stage != "in_llm":
        modes = adapter_for(family).position_modes
        if position_mode not in modes:
            raise ConfigError(
                f"model family {family!r} cannot run method {method!r} with position_mode={position_mode!r}; "
                f"this family offers {', '.join(modes)} (or position_mode=null for its default)"
            )


def check_pretrained(pretrained: str, random_weights: bool) -> None:
    """A local checkpoint folder must exist (tiny models are built, never downloaded)."""
    looks_local = random_weights or pretrained.startswith((".", "/", "~"))  # else a hub id such as Qwen/Qwen2-VL-7B
    if looks_local and not Path(pretrained).expanduser().is_dir():
        hint = ("build the tiny models with `python scripts/make_tiny_models.py`" if random_weights else
                "check model.pretrained (the comment of the model's conf/model/*.yaml says where its checkpoint comes from)")
        raise ConfigError(f"model checkpoint folder {pretrained} does not exist: {hint}")


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
