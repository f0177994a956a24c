"""``benchmark.hf_home``: the run's HF_HOME chosen by configuration (the tiny_* benchmarks read the tiny hub by it).

Checked without weights: the scoped variables and constants, the identity (a location is not part of it), the
tiny-hub marker, and the refusals (a tiny benchmark on a real cache, a real benchmark on the tiny hub, a bad value).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eval import hubdata, record, validate

ROOT = Path(__file__).resolve().parents[2]


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("eval", overrides=list(overrides)), resolve=True)


def test_use_hf_home_scopes_every_data_location_and_restores(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HOME", "/before")
    monkeypatch.setenv("HF_DATASETS_CACHE", "/elsewhere/datasets")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    before = (hc.HF_HOME, hc.HF_HUB_CACHE)
    with hubdata.use_hf_home(tmp_path / "h"):
        assert os.environ["HF_HOME"] == str(tmp_path / "h") and "HF_DATASETS_CACHE" not in os.environ
        assert hubdata.datasets_cache() == tmp_path / "h" / "datasets"
        assert (hc.HF_HOME, hc.HF_HUB_CACHE) == (str(tmp_path / "h"), str(tmp_path / "h" / "hub"))
    assert os.environ["HF_HOME"] == "/before" and os.environ["HF_DATASETS_CACHE"] == "/elsewhere/datasets"
    assert "HF_HUB_CACHE" not in os.environ and (hc.HF_HOME, hc.HF_HUB_CACHE) == before
    with hubdata.use_hf_home(None):  # null: nothing changes
        assert os.environ["HF_HOME"] == "/before"
    monkeypatch.setenv("HF_HUB_CACHE", "/models/hub")  # an explicit hub cache wins, as in huggingface_hub itself
    with hubdata.use_hf_home(tmp_path / "h"):
        assert hc.HF_HUB_CACHE == before[1] and os.environ["HF_HUB_CACHE"] == "/models/hub"


def test_tiny_benchmarks_resolve_hf_home_from_the_tiny_hub_key(tmp_path, monkeypatch):
    monkeypatch.delenv("VTC_TINY_HUB", raising=False)
    c = compose("benchmark=tiny_videomme", f"cache_dir={tmp_path}")
    assert hubdata.run_hf_home(c["benchmark"]) == (tmp_path / "tiny_hub").resolve()
    monkeypatch.setenv("VTC_TINY_HUB", str(tmp_path / "env_hub"))
    assert hubdata.run_hf_home(compose("benchmark=tiny_videomme")["benchmark"]) == tmp_path / "env_hub"
    assert hubdata.run_hf_home(compose("benchmark=videomme")["benchmark"]) is None  # real: the process HF_HOME
    for bad in (5, "", "  "):
        with pytest.raises(ValueError, match=r"benchmark.hf_home=.* is not a folder path"):
            hubdata.run_hf_home({"hf_home": bad})


def test_hf_home_is_not_part_of_the_identity(tmp_path):
    a = compose("benchmark=tiny_mlvu", f"tiny_hub={tmp_path / 'a'}")
    b = compose("benchmark=tiny_mlvu", f"tiny_hub={tmp_path / 'b'}", f"benchmark.hf_home={tmp_path / 'c'}")
    real = compose("benchmark=mlvu")
    ids = [record.identity(c, {}, 1.0, "cpu") for c in (a, b, real)]
    assert ids[0] == ids[1] and "hf_home" not in ids[0]["benchmark"] and "tiny_hub" not in ids[0]
    assert ids[0] != ids[2]  # the tiny benchmark is another benchmark (name, tiny flag), never the real one
    assert record.identity(compose("benchmark=mlvu", "benchmark.hf_home=/data/hf"), {}, 1.0, "cpu") == ids[2]


def test_marker_tells_a_current_tiny_hub(tmp_path):
    from eval.tinyhub import build as hub

    home = hub.build(tmp_path / "h", kinds=["egoschema"])
    assert hub.marker(home)["kinds"] == ["egoschema"] and not hub.is_current(home)  # partial: not a full tiny hub
    full = hub.ensure(tmp_path / "full")
    assert hub.is_current(full)
    stamp = (full / hub.MARKER).stat().st_mtime_ns
    assert hub.ensure(full) == full and (full / hub.MARKER).stat().st_mtime_ns == stamp  # current: not rebuilt
    (full / hub.MARKER).write_text('{"format": 1, "digest": "old", "complete": true}')
    assert not hub.is_current(full) and hub.is_current(hub.ensure(full))  # stale: rebuilt
    assert not any(p.name.startswith(f".{hub.MARKER}.") for p in full.iterdir())  # no temp debris


def test_check_hub_kind_refuses_mixing_tiny_and_real(tmp_path, monkeypatch):
    from eval.tinyhub import build as hub

    tiny = {"name": "tiny_mlvu", "kind": "mlvu", "tiny": True, "offline": False}
    real = {"name": "mlvu", "kind": "mlvu", "offline": False, "dataset": "sy1998/MLVU_dev"}
    monkeypatch.setenv("HF_HOME", str(tmp_path / "real"))
    hubdata.check_hub_kind(real)
    with pytest.raises(ValueError, match=r"holds no tiny hub .*python -m eval.tinyhub --out"):
        hubdata.check_hub_kind(tiny)
    monkeypatch.setenv("HF_HOME", str(hub.build(tmp_path / "partial", kinds=["mlvu"])))
    with pytest.raises(ValueError, match="incomplete or outdated tiny hub"):
        hubdata.check_hub_kind(tiny)
    with pytest.raises(ValueError, match=r"is the generated tiny hub .*not the real sy1998/MLVU_dev; run benchmark=tiny_mlvu"):
        hubdata.check_hub_kind(real)
    hubdata.check_hub_kind({"name": "synthetic_mvbench", "offline": True})  # project tasks: no hub involved


def _no_weights(*a, **k):
    raise AssertionError("weights were loaded before the refusal")


def test_runs_are_refused_before_weights(tmp_path, monkeypatch):
    """A real benchmark pointed at the tiny hub, and a tiny benchmark without one, never reach the model."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from eval import runner

    monkeypatch.setattr(runner, "load_model", _no_weights)
    base = [f"cache_dir={ROOT / '.cache'}", f"results_dir={tmp_path / 'runs'}", "model=tiny_llava_ov", "method=none",
            "progress=false", "limit=1"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        real_on_tiny = hydra_compose("eval", overrides=[*base, "benchmark=videomme",
                                                        f"benchmark.hf_home={ROOT / '.cache' / 'tiny_hub'}"])
        tiny_without = hydra_compose("eval", overrides=[*base, "benchmark=tiny_videomme", f"tiny_hub={tmp_path / 'none'}"])
    monkeypatch.setenv("HF_HOME", before := str(tmp_path / "real_cache"))  # absolute: the runner keeps it as it is
    with pytest.raises(validate.ConfigError, match="is the generated tiny hub"):
        runner.run(real_on_tiny)
    with pytest.raises(validate.ConfigError, match="holds no tiny hub"):
        runner.run(tiny_without)
    assert os.environ["HF_HOME"] == before  # the run's HF_HOME was scoped
