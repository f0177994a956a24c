"""The bad-input catalogue (tests/eval/bad_inputs.py): every case is refused before the model loader is called,
with one line naming the key; and the CLI turns such a refusal into ``error: ...``, exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

import eval.runner
from eval.validate import ConfigError
from tests.eval.bad_inputs import CASES, ROOT, overrides, prepare


@pytest.fixture(scope="module", autouse=True)
def _tiny_assets():
    """The catalogue starts from a valid tiny run: its checkpoint and videos must exist (built if not)."""
    from eval.tasks import tiny_data
    from vidcom2.testing import tiny

    cache = ROOT / ".cache"
    if not (cache / "tiny_models" / "llava_onevision" / "config.json").is_file():
        tiny.save("llava_onevision", cache / "tiny_models" / "llava_onevision")
    if not (cache / "tiny_models" / "qwen2_vl" / "config.json").is_file():
        tiny.save("qwen2_vl", cache / "tiny_models" / "qwen2_vl")
    tiny_data.build(cache / "tiny_bench" / "videos")


@pytest.fixture
def loader_never_called(monkeypatch):
    calls = []

    def forbidden(*a, **k):
        calls.append(a)
        raise AssertionError("the model loader was called although the configuration is invalid")

    monkeypatch.setattr(eval.runner, "load_model", forbidden)
    return calls


def compose_run(args: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("eval", overrides=args)


def test_the_base_configuration_is_valid(tmp_path, loader_never_called):
    """Without a bad key the same run reaches the loader: the refusals below are the cases' doing."""
    with pytest.raises(AssertionError, match="loader was called"):
        eval.runner.run(compose_run(overrides(CASES[0]._replace(overrides=()), tmp_path)))
    assert loader_never_called


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_early_naming_the_key(case, tmp_path, monkeypatch, loader_never_called):
    prepare(case, tmp_path, monkeypatch)
    with pytest.raises(ConfigError) as err:
        eval.runner.run(compose_run(overrides(case, tmp_path)))
    message = str(err.value)
    assert case.key in message, message
    assert "\n" not in message  # one line
    assert not loader_never_called
    assert not list(tmp_path.rglob("record.json"))


def test_catalogue_is_large_and_unique():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HYDRA_FULL_ERROR": "0", **env}
    return subprocess.run([sys.executable, "-m", "eval.run", *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=300)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    proc = _cli("-m", "seed=1.7,2", "model=tiny_llava_ov", "limit=0", f"results_dir={tmp_path}", "progress=false")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2  # both jobs of the sweep ran and were refused
    assert errors[0].startswith("error: seed=1.7 is not an integer") and "limit=0" in errors[1]
    assert "Traceback" not in proc.stderr


def test_cli_shows_the_traceback_with_hydra_full_error(tmp_path):
    proc = _cli("seed=abc", f"results_dir={tmp_path}", HYDRA_FULL_ERROR="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError: seed='abc'" in proc.stderr
