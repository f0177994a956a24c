"""Bad configurations fail before any weights load, naming the problem and the fix (in-process, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from eval.runner import run
from eval.validate import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


def cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if a run gets as far as loading a model."""
    import eval.runner

    def boom(*a, **k):
        raise AssertionError("the model was loaded although the configuration is invalid")

    monkeypatch.setattr(eval.runner, "load_model", boom)


def test_ratio_out_of_range(no_load, tmp_path):
    for r in ("0", "-0.5", "1.01"):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            run(cfg(f"retention_ratio={r}", f"results_dir={tmp_path}"))


def test_vanilla_ignores_the_ratio_and_runs_at_one():
    from eval import compression

    assert compression.run_ratio("none", 0.25) == 1.0


def test_budget_on_a_method_without_allocator(no_load, tmp_path):
    # (fastv and sparsevlm take budget=fca since FCA inside the LLM, paper Figure 5; pdrop has no per-frame allocator)
    with pytest.raises(ConfigError, match="no per-frame budget allocator"):
        run(cfg("method=pdrop", "budget=fca", f"results_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="budget must be one of"):
        run(cfg("method=vidcom2", "budget=fair", f"results_dir={tmp_path}"))


def test_unknown_hyper_parameter(no_load, tmp_path):
    with pytest.raises(ConfigError, match="did you mean|Did you mean|no hyper-parameter"):
        run(cfg("method=vidcom2", "+method.budgett=fca", f"results_dir={tmp_path}"))


def test_incompatible_model_method_setting(no_load, tmp_path):
    with pytest.raises(ConfigError, match="offers original"):
        run(cfg("model=tiny_qwen3_vl", "method=vidcom2", "position_mode=contiguous", f"results_dir={tmp_path}"))


def test_missing_tiny_model_names_the_script(no_load, tmp_path):
    with pytest.raises(ConfigError, match="make_tiny_models.py"):
        run(cfg(f"cache_dir={tmp_path}", f"results_dir={tmp_path}"))


def test_missing_videos_name_the_script(no_load, tmp_path, monkeypatch):
    from vidcom2.testing import tiny

    tiny.save("qwen3_vl", tmp_path / "tiny_models" / "qwen3_vl")
    monkeypatch.setenv("VTC_TINY_DATA", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="make_tiny_benchmarks.py"):  # the synthetic benchmark's own videos
        run(cfg("model=tiny_qwen3_vl", "benchmark=synthetic_mvbench", f"cache_dir={tmp_path}", f"results_dir={tmp_path}"))
    monkeypatch.setenv("VTC_TINY_HUB", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"holds no tiny hub .*python -m eval.tinyhub"):  # a tiny_* benchmark's hub
        run(cfg("model=tiny_qwen3_vl", f"cache_dir={tmp_path}", f"results_dir={tmp_path}"))


def test_missing_real_dataset_names_it_and_how_to_get_it(no_load, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # offline (make test): both the annotation cache and the video folder are named, with the fetch command
    with pytest.raises(ConfigError, match=r"lmms-eval/Video-MME: annotations .*videos in .*eval.download benchmark=videomme"):
        run(cfg("model=qwen3_vl_8b", "benchmark=videomme", f"results_dir={tmp_path}"))


def test_run_leaves_the_environment_as_it_was(no_load, tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("VTC_TINY_DATA", raising=False)
    with pytest.raises(ConfigError):
        run(cfg("retention_ratio=2", f"results_dir={tmp_path}"))
    assert "VTC_TINY_DATA" not in os.environ


def test_in_llm_layers_beyond_the_llm_depth(no_load, tmp_path):
    from vidcom2.testing import tiny

    tiny.save("qwen3_vl", tmp_path / "tiny_models" / "qwen3_vl")  # a 4-layer LLM
    with pytest.raises(ConfigError, match=r"4-layer LLM\) cannot run method 'fastv'.*prune_layer"):
        run(cfg("model=tiny_qwen3_vl", "method=fastv", "method.prune_layer=4", f"cache_dir={tmp_path}",
                f"results_dir={tmp_path}"))


@pytest.mark.parametrize("method, key, value, match", [
    ("flashvid", "pruning_layer", 4, r"pruning_layer must be in \[1, 3\]"),
    ("prunevid", "selected_layer", 3, r"selected_layer must be in \[0, 2\]"),
    ("holitom", "inner_layer", 4, r"inner_layer must be in \[1, 3\]"),
])  # fmt: skip
def test_in_llm_part_of_a_pre_llm_method_beyond_the_llm_depth(no_load, tmp_path, method, key, value, match):
    # the layers of a pre-LLM method's in-LLM part are checked before loading too, not at the first sample
    from vidcom2.testing import tiny

    tiny.save("qwen2_5_vl", tmp_path / "tiny_models" / "qwen2_5_vl")  # a 4-layer LLM
    with pytest.raises(ConfigError, match=rf"4-layer LLM\) cannot run method '{method}'.*{match}"):
        run(cfg("model=tiny_qwen2_5_vl", f"method={method}", f"method.{key}={value}", f"cache_dir={tmp_path}",
                f"results_dir={tmp_path}"))
