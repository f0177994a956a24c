"""Every config combination composes, and every ``_target_`` binds to the signature it names.

Discovery is recursive over ``conf/`` (a new group option is picked up without editing this file).
"""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("model", "benchmark", "method")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).rglob("*.yaml"))


def all_yaml() -> list[Path]:
    return sorted(CONF.rglob("*.yaml"))


def test_groups_exist():
    assert options("model") and options("benchmark") and options("method")
    assert {"llava_ov_7b", "qwen2_vl_7b", "qwen2_5_vl_7b", "qwen3_vl_8b"} <= set(options("model"))
    assert {"mvbench", "videomme", "longvideobench", "mlvu"} <= set(options("benchmark"))
    assert {"egoschema", "perceptiontest"} <= set(options("benchmark"))
    kinds = ("mvbench", "videomme", "longvideobench", "mlvu", "egoschema", "perceptiontest")
    assert {f"tiny_{b}" for b in kinds} <= set(options("benchmark"))  # a tiny-hub counterpart of each


@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: str(p.relative_to(CONF)))
def test_every_yaml_opens_with_a_comment_and_parses(path):
    text = path.read_text()
    assert text.startswith("# "), f"{path} must start with a one-line comment (what it is, the command using it)"
    yaml.safe_load(text)


def test_every_method_registered_has_a_config_and_vice_versa():
    import vidcom2

    assert set(options("method")) == set(vidcom2.list_methods())


def test_group_options_do_not_reference_each_other():
    # makes pairwise coverage (below) equivalent to the full product: an option can only break a composition
    # through its own content or through the root keys, never through another group's option
    for group in GROUPS:
        for name in options(group):
            text = (CONF / group / f"{name}.yaml").read_text()
            for other in GROUPS:
                assert "${" + other + "." not in text, f"{group}/{name} interpolates group {other}"


def test_every_pair_of_options_composes():
    models, benches, methods = options("model"), options("benchmark"), options("method")
    # benchmark (i + j) % len covers every (model, method), (model, benchmark) and (benchmark, method) pair
    combos = [(m, benches[(i + j) % len(benches)], x) for i, m in enumerate(models) for j, x in enumerate(methods)]
    assert {(b, x) for _, b, x in combos} == set(itertools.product(benches, methods))
    assert {(m, b) for m, b, _ in combos} == set(itertools.product(models, benches))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for model, bench, method in combos:
            cfg = compose("eval", overrides=[f"model={model}", f"benchmark={bench}", f"method={method}"])
            assert cfg.model.name == model and cfg.benchmark.name == bench and cfg.method.name == method
            assert cfg.model.pretrained  # interpolations resolve
        for logger in options("logger"):
            assert compose("eval", overrides=[f"logger={logger}"]).logger._target_


def _load(group, name):
    return yaml.safe_load((CONF / group / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", options("method"))
def test_method_target_binds(name):
    from hydra.utils import instantiate

    cfg = _load("method", name)
    assert cfg["_target_"] == "vidcom2.get_method" and cfg["name"] == name
    method = instantiate(cfg)  # get_method refuses unknown hyper-parameters
    assert method.info.name == name


@pytest.mark.parametrize("name", options("model"))
def test_model_target_binds(name):
    from hydra.utils import get_class

    from eval.models.base import HARNESS_ARGS, accepted_kwargs
    from eval.runner import split_model_cfg

    meta, init = split_model_cfg(_load("model", name))
    cls = get_class(init.pop("_target_"))
    assert meta["name"] == name
    assert cls.family == meta["family"], "the config's family must be the wrapper's adapter family"
    accepted = accepted_kwargs(cls)
    unknown = set(init) - accepted
    assert not unknown, f"{name}: {sorted(unknown)} are not constructor arguments of {cls.__name__} or its parent"
    assert set(HARNESS_ARGS) <= accepted


@pytest.mark.parametrize("name", options("logger"))
def test_logger_target_binds(name):
    from hydra.utils import get_class

    cfg = _load("logger", name)
    cls = get_class(cfg.pop("_target_"))
    inspect.signature(cls).bind(**cfg)


@pytest.fixture(scope="module")
def all_tasks():
    from lmms_eval.tasks import TaskManager

    from eval.evaluate import TASKS_DIR

    return set(TaskManager(include_path=str(TASKS_DIR)).all_tasks)


@pytest.mark.parametrize("name", options("benchmark"))
def test_benchmark_names_real_lmms_eval_tasks(name, all_tasks):
    from eval.accuracy import METRICS

    cfg = _load("benchmark", name)
    assert cfg["name"] == name and cfg["kind"] in METRICS
    assert set(cfg["tasks"]) <= all_tasks
    assert cfg["offline"] == bool(cfg.get("synthetic"))  # only the synthetic benchmark has project-defined tasks
    assert bool(cfg.get("tiny")) == name.startswith("tiny_")  # the tiny_* ones read the generated tiny hub
    if cfg.get("tiny"):  # the same built-in tasks as the real config of their kind, on the tiny hub
        real = _load("benchmark", cfg["kind"])
        assert cfg["hf_home"] == "${tiny_hub}" and real["hf_home"] is None
        from eval.hubdata import needs

        assert set(cfg["tasks"]) <= set(real["tasks"]) | {n.task for n in needs(cfg["kind"], real["tasks"])}
