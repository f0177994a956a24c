"""Every table/sweep preset composes and keeps every published row; launchers compose; a tiny sweep runs end to
end offline and the report includes all its runs."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eval import paper, presets, report

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = presets.preset_names("experiment")
SWEEPS = presets.preset_names("sweep")


def test_presets_exist_for_every_paper_table():
    tables = {presets.load_preset("experiment", n).paper_table for n in EXPERIMENTS}
    assert tables >= set(paper.load_published()["table"])
    assert "tiny" in EXPERIMENTS and "tiny" in SWEEPS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_preset_composes_and_keeps_every_published_row(name):
    preset = presets.load_preset("experiment", name)
    assert preset.rows[0] == ("none", 1.0) and len(set(preset.rows)) == len(preset.rows)
    known = set(paper.load_methods()["method"]) | presets.implemented_methods()
    assert {paper.base_method(m) for m, _ in preset.rows} <= known
    if preset.paper_table is None:
        # the tiny presets have no paper table and run on CPU; a method-source preset (table.method_tables) compares
        # with the method's own numbers instead (tests/eval/test_method_papers.py)
        assert not preset.requires_gpu or preset.method_tables
        return
    pub = paper.load_published()
    pub = pub[(pub["table"] == preset.paper_table)]
    model = pub["model"].iloc[0]
    same = pub[pub["frames"].isna() | (pub["frames"] == preset.frames)]
    assert len(same), f"{name}: frames {preset.frames} match no published row"
    missing = set(zip(same["method"], same["retention_ratio"])) - set(preset.rows)
    assert not missing, f"{name} drops published rows {missing}"
    assert preset.requires_gpu
    commands, skipped = presets.sweep_commands(preset)
    run = {c[5].split("=")[1] for c in commands}
    # every row is either run or reported as skipped with its reason, never dropped
    skipped_rows = {paper.base_method(s.split(" ")[0]) for s in skipped}
    assert run | skipped_rows == {paper.base_method(m) for m, _ in preset.rows}
    assert len(commands) + len(skipped) == len({m for m, _ in preset.rows})
    assert all(any(why in s for why in ("not implemented", "not supported", "no conf/method")) for s in skipped)
    assert model in {"LLaVA-OV-7B", "Qwen2-VL-7B", "LLaVA-Video-7B", "Qwen3-VL-8B-Instruct", "Qwen3-VL-32B-Instruct",
                     "Qwen3-VL-30B-A3B-Instruct"}


def test_distinct_presets_write_distinct_records():
    # records live at <benchmark>/<model>/<method>/r<ratio>/seed<seed>: two presets that differ in frames must
    # differ in model name, or the second would be skipped as already finished
    seen = {}
    for name in EXPERIMENTS:
        p = presets.load_preset("experiment", name)
        assert seen.setdefault(p.model, p.frames) == p.frames, f"{name}: model {p.model} reused with other frames"


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_preset_composes(name):
    preset = presets.load_preset("sweep", name)
    assert preset.rows[0] == ("none", 1.0) and len(preset.rows) > 2 and preset.benchmarks


@pytest.mark.parametrize(("launcher", "target"), [("local_gpu", "LocalLauncher"), ("slurm_gpu", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("eval", overrides=["+sweep=tiny", f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target) and cfg.hydra.launcher.gpus_per_node == 1


def test_gpu_preset_stops_before_loading_without_cuda(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU.*Nothing was loaded"):
        presets.main(["experiment", "llava_ov_7b"])
    assert "$" not in capsys.readouterr().out  # no command was started
    assert presets.main(["experiment", "llava_ov_7b", "--dry-run"]) == 0
    assert "method=vidcom2 retention_ratio=0.25,0.15" in capsys.readouterr().out


def test_check_accepts_overrides_after_flags(capsys):
    assert presets.main(["sweep", "tiny", "--check", "limit=1"]) == 0
    assert "tiny_qwen2_5_vl" in capsys.readouterr().out


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="available experiment presets: .*tiny"):
        presets.load_preset("experiment", "no_such_table")


def _offline_env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="offline", OMP_NUM_THREADS="1")  # fmt: skip
    return env


@pytest.mark.slow
def test_tiny_sweep_end_to_end_offline(tmp_path):
    env = _offline_env()
    # the offline assets (skipped when present): the tiny checkpoint and the generated videos
    subprocess.run([sys.executable, "scripts/make_tiny_models.py", "--arch", "qwen2_5_vl"], cwd=ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "scripts/make_tiny_benchmarks.py"], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip
    runs = tmp_path / "runs"
    # command-line overrides narrow the preset's grid (Hydra: they replace hydra.sweeper.params of the same key)
    cmd = [sys.executable, "-m", "eval.run", "-m", "+sweep=tiny", "method=none,vidcom2", "retention_ratio=0.5",
           "limit=1", f"results_dir={runs}", f"hydra.sweep.dir={tmp_path / 'hydra'}", "progress=false"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = report.find_records(runs)
    assert len(records) == 2
    out = tmp_path / "tables"
    assert report.main(["--runs", str(runs), "--sweep", "tiny", "--out", str(out), "--plots", str(tmp_path / "p"),
                        "--quiet"]) == 0  # fmt: skip
    table = pd.read_csv(out / "accuracy.csv")
    ran = table[table["n_columns"] > 0]
    assert set(zip(ran["method"], ran["retention_ratio"])) == {("none", 1.0), ("vidcom2", 0.5)}
    # rows of the preset's grid that were not run here are listed with dashes, not dropped
    assert {("random", 0.25), ("vidcom2", 0.25)} <= set(zip(table["method"], table["retention_ratio"]))
    assert len(pd.read_csv(out / "runs.csv")) == 2
    assert "RANDOM WEIGHTS" in (out / "report.md").read_text()
    assert (tmp_path / "p" / "latency_tiny_qwen2_5_vl_8f_tiny_mvbench.png").is_file()
    # resumable: the same sweep again finds both records and skips them
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and report.find_records(runs) == records
