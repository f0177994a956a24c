"""Run identity: every result-affecting key gives a new record folder, labels and plumbing do not; a rerun skips
only an identical identity and ``force=true`` redoes it (composed configs, no model loaded)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import eval.runner
from eval import record
from tests.eval.bad_inputs import ROOT

BASE = ["model=tiny_llava_ov", "benchmark=tiny_mvbench", "method=vidcom2", "results_dir=/tmp/vtc_identity"]


def plan(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=[*BASE, *overrides])
    return eval.runner.plan(eval.runner.resolved(cfg))


AFFECTING = [
    "budget=uniform", "retention_ratio=0.254", "limit=1", "model.frames=16", "seed=1", "model.dtype=bfloat16",
    "+model.attn_implementation=eager", "benchmark.tasks=[mvbench_moving_count]", "warmup=2",
    "position_mode=original", "method.compute_dtype=float32", "model.pretrained=/elsewhere/llava",
    "+model.max_new_tokens=8", "cache_dir=/other_cache",  # cache_dir moves the checkpoint path
]
NEUTRAL = ["progress=false", "force=true", "logger=wandb", "tiny_data=/somewhere/videos", "device=cpu",
           "tiny_hub=/another/tiny_hub", "benchmark.hf_home=/same/data/elsewhere",  # where the same data is found
           "budget=fca",  # VidCom2's default allocator: the resolved hyper-parameters are the same
           "model.paper_model=Some-Label"]


def test_each_result_affecting_key_changes_the_record_path():
    base = plan()
    seen = {base.path}
    for override in AFFECTING:
        p = plan(override)
        assert p.identity_hash != base.identity_hash, override
        seen.add(p.path)
    assert len(seen) == len(AFFECTING) + 1  # all different from each other too
    assert "/r0.254/" in str(plan("retention_ratio=0.254").path)


def test_plumbing_and_labels_do_not_change_the_identity():
    base = plan()
    for override in NEUTRAL:
        assert plan(override).path == base.path, override
    assert plan("results_dir=/tmp/vtc_other").identity_hash == base.identity_hash


def test_vanilla_shares_one_identity_whatever_ratio_is_asked():
    assert plan("method=none", "retention_ratio=0.5").path == plan("method=none", "retention_ratio=0.25").path
    assert "/none/r1.00/seed0-" in str(plan("method=none").path)


def test_seed_is_the_only_difference_between_two_seeds():
    a, b = plan("seed=0"), plan("seed=1")
    assert record.without_seed(a.identity) == record.without_seed(b.identity)


@pytest.fixture
def loader(monkeypatch):
    calls = []

    def fake(*a, **k):
        calls.append(k)
        raise RuntimeError("loader reached")

    monkeypatch.setattr(eval.runner, "load_model", fake)
    return calls


def _finished(path, p):
    from tests.eval.test_record import minimal

    rec = minimal()
    rec.update(identity=p.identity, identity_hash=p.identity_hash)
    record.write(rec, path)


def test_rerun_skips_only_the_identical_identity_and_force_redoes(tmp_path, loader, capsys):
    cache = ROOT / ".cache"
    args = [f"results_dir={tmp_path}", f"cache_dir={cache}", "limit=1", "progress=false"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = {o: compose("eval", overrides=[*BASE, *args, *o.split()]) for o in
                ("", "method.compute_dtype=float32", "limit=2", "force=true")}  # fmt: skip
    p = eval.runner.plan(eval.runner.resolved(cfgs[""]))
    _finished(p.path, p)
    assert eval.runner.run(cfgs[""]) == p.path and not loader
    assert "[skip]" in capsys.readouterr().out
    for key in ("method.compute_dtype=float32", "limit=2", "force=true"):  # a new run each, not a [skip]
        with pytest.raises(RuntimeError, match="loader reached"):
            eval.runner.run(cfgs[key])
    assert len(loader) == 3
