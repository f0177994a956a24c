"""The one compression object (eval/compression.py): Hydra ``instantiate`` of ``conf/method/*.yaml`` builds the
method instance, the library validates it once (its error, prefixed with the config path), the ratio is checked
once from the config to ``generate``, and the record identity of existing configs is what it was."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

import eval.runner
from eval import compression
from eval.validate import ConfigError
from tests.eval.bad_inputs import ROOT

BASE = ["model=tiny_llava_ov", "benchmark=synthetic_mvbench", "results_dir=/tmp/vtc_identity", "device=cpu"]
METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))

# identity_hash of each config, computed by the code before the method was instantiated from its config (bd335e4's
# eval/ and conf/, run with today's vidcom2/ and today's conf/method/{flashvid,prunevid,holitom,framefusion}.yaml: the first
# three gained in-LLM hyper-parameters since, framefusion is new): records written before this change must keep their folder. The base benchmark is the
# synthetic one, whose config did not change (the tiny_* benchmarks moved to lmms-eval's built-in tasks since).
GOLDEN = {
    "divprune": "b5dba9da0e", "dycoke": "924c5a16a9", "dycoke_ttm": "4eaffcc1a7", "dycoke_vc2": "4f90fad6b5",
    "evs": "a30cc33b78", "fastv": "cc4c400172", "fastvid": "bbf27f313a", "fastvid_vc2": "86600e3f3f",
    "flashvid": "5d5100c65c", "framefusion": "577947631c", "holitom": "2a444d9247", "holitom_vc2": "70bb117a77", "none": "eb3e2f5d0d",
    "pdrop": "a076c41e87", "prunevid": "1b2488b1dd", "random": "24cfa652b1", "sparsevlm": "7358e37aef",
    "uniform": "fbbcf4a77d", "vidcom2": "655d646be5", "visionzip": "cf941331ac", "visionzip_vc2": "ba9f67a4bd",
    "vispruner": "906cf1e13a", "vidcom2_budget_uniform": "10382a61d5", "none_ratio_half": "eb3e2f5d0d", "fastv_qwen25": "91a9d0eff5",
    "visionzip_fca": "4020d5f8e2",
}  # fmt: skip
OVERRIDES = {
    "vidcom2_budget_uniform": ["method=vidcom2", "budget=uniform"],
    "none_ratio_half": ["method=none", "retention_ratio=0.5"],
    "fastv_qwen25": ["method=fastv", "model=tiny_qwen2_5_vl", "retention_ratio=0.1"],
    "visionzip_fca": ["method=visionzip", "budget=fca", "seed=3"],
}


def resolved(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return eval.runner.resolved(compose("eval", overrides=[*BASE, *overrides]))


def test_every_method_config_instantiates_the_registered_method_with_its_hparams():
    import vidcom2

    assert METHODS == vidcom2.list_methods()
    for name in METHODS:
        c = resolved(f"method={name}")
        built = compression.build(c)
        want = vidcom2.get_method(name, **{k: v for k, v in c["method"].items() if k not in ("_target_", "name")})
        assert type(built.method) is type(want) and built.method == want, name
        assert built.name == name and built.method.info.name == name


def test_identity_of_existing_configs_is_unchanged():
    assert set(GOLDEN) == set(METHODS) | set(OVERRIDES)
    for key, want in GOLDEN.items():
        c = resolved(*OVERRIDES.get(key, [f"method={key}"]))
        assert eval.runner.plan(c).identity_hash == want, key


@pytest.mark.parametrize(
    "overrides, prefix, words",
    [
        (["+method.budgett=fca"], "method.budgett: ", ["'budgett'", "'fca'", "Did you mean 'budget'"]),
        (["method.token_score=loudest"], "method.token_score: ", ["token_score", "'loudest'", "one of"]),
        (["method=fastvid", "method.signal=sound"], "method.signal: ", ["signal", "'sound'", "one of"]),
        (["budget=fcx"], "budget: ", ["'fcx'", "budget must be one of", "Did you mean 'fca'"]),
        (["method.name=vidcom"], "method.name: ", ["'vidcom'", "Did you mean 'vidcom2'"]),
        (["retention_ratio=1.5"], "retention_ratio=1.5: ", ["(0, 1]", "e.g. retention_ratio=0.25"]),
    ],
)
def test_the_librarys_error_names_key_value_and_fix_prefixed_with_the_config_path(overrides, prefix, words):
    with pytest.raises(ConfigError) as err:
        compression.build(resolved(*overrides))
    message = str(err.value)
    assert message.startswith(prefix), message
    assert all(w in message for w in words), message


def test_method_target_outside_the_allowlist_is_never_called(monkeypatch):
    import os

    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(ConfigError, match=r"method\._target_='os\.system'"):
        compression.instantiate_method({"_target_": "os.system", "name": "vidcom2"})
    assert not called


def test_vanilla_runs_at_one_and_its_ratio_is_still_checked():
    assert compression.run_ratio("none", 0.25) == 1.0
    with pytest.raises(ConfigError, match="retention_ratio"):
        compression.run_ratio("none", "abc")


def test_one_build_and_one_ratio_check_from_the_config_to_generate(monkeypatch, tiny_model):
    """``plan`` builds the method and checks the ratio; the wrapper and ``compress`` take both as they are."""
    import vidcom2
    from eval.models.base import Harnessed
    from vidcom2.budget import Ratio
    from vidcom2.methods.vidcom2 import VidCom2
    from vidcom2.testing import tiny

    calls = {"ratio": 0, "build": 0}
    new, post = Ratio.__new__, VidCom2.__post_init__

    def counted_new(cls, value):
        calls["ratio"] += 1
        return new(cls, value)

    def counted_post(self):
        calls["build"] += 1
        post(self)

    monkeypatch.setattr(Ratio, "__new__", counted_new)
    monkeypatch.setattr(VidCom2, "__post_init__", counted_post)
    p = eval.runner.plan(resolved("method=vidcom2", "retention_ratio=0.25"))
    assert calls == {"ratio": 1, "build": 1}
    lm = SimpleNamespace()  # the wrapper's own settings, without loading a model
    Harnessed.configure(lm, method=p.compression.method, retention_ratio=p.ratio, seed=0, hparams=p.hparams)
    model, proc = tiny_model("llava_onevision")
    batch = tiny.inputs("llava_onevision", proc, tiny.make_video(4, 112, 140, seed=0), "What moves?")
    with vidcom2.compress(model, method=lm.method_impl, retention_ratio=lm.retention_ratio) as session:
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert calls == {"ratio": 1, "build": 1}
    row = session.samples[0]
    assert row.visual_tokens_out < row.visual_tokens_in  # it did compress, with the configured method
    assert session.info["hparams"]["budget"] == "fca" and session.info["retention_ratio"] == 0.25
