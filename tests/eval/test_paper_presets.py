"""The paper's 10 tables/figures: every `table` id of paper_results.csv has a preset, a tiny counterpart and a make
target; ablation variants become distinct method hyper-parameters (every tiny preset runs end to end in
tests/eval/test_tiny_presets.py)."""

import re
from pathlib import Path

import pytest

from eval import paper, presets

ROOT = Path(__file__).resolve().parents[2]
PAPER_PRESETS = {n: presets.load_preset("experiment", n) for n in presets.preset_names("experiment")}
PAPER_PRESETS = {n: p for n, p in PAPER_PRESETS.items() if p.paper_table}


def test_results_csv_is_the_shared_spec_copy():
    spec = ROOT.parent / "shared" / "spec" / "paper_results.csv"
    if spec.is_file():  # the project's copy must not lag the spec it was taken from
        assert (ROOT / "results" / "paper" / "paper_results.csv").read_text() == spec.read_text()


def test_every_table_id_has_a_preset_a_tiny_counterpart_and_a_make_target():
    tables = set(paper.load_published()["table"])
    assert len(tables) >= 12 and {"ablation_token_score", "fca_on_other_methods", "rel_qwen2vl_videomme"} <= tables
    covered = {p.paper_table for p in PAPER_PRESETS.values()}
    assert tables <= covered, f"tables without a preset: {sorted(tables - covered)}"
    makefile = (ROOT / "Makefile").read_text()
    for name, preset in PAPER_PRESETS.items():
        assert re.search(rf"^table-{name}: ## ", makefile, re.M), f"make help does not list table-{name}"
        if name in ("llava_ov_7b", "llava_video_7b", "efficiency_llava_ov_7b") or name.startswith("qwen3"):
            continue  # the presets that predate this issue share conf/experiment/tiny.yaml
        tiny = presets.load_preset("experiment", f"tiny_{name}")
        assert tiny.rows == preset.rows and not tiny.requires_gpu, name


def test_variant_rows_are_distinct_method_hyper_parameters():
    for name, preset in PAPER_PRESETS.items():
        keys = [m for m, _ in preset.rows]
        over = [(paper.base_method(k), tuple(sorted(map(str, paper.variant_overrides(k).items())))) for k in keys]
        assert len(set(zip(over, [r for _, r in preset.rows]))) == len(keys), name
    commands, skipped = presets.sweep_commands(PAPER_PRESETS["ablation_score_weighting"])
    assert not skipped
    flat = [" ".join(c) for c in commands]
    assert any("method=vidcom2" in c and "method.score_weights=[1.0,2.0]" in c for c in flat)
    assert sum("method=vidcom2" in c for c in flat) == 5
    fca = [" ".join(c) for c in presets.sweep_commands(PAPER_PRESETS["fca_on_other_methods"])[0]]
    assert any("method=sparsevlm" in c and "method.budget=fca" in c and "method.recycle=false" in c for c in fca)


def test_published_variants_map_to_rows_and_labels():
    pub = paper.load_published()
    t5 = pub[pub["table"] == "ablation_token_score"]
    assert set(t5["method"]) == {"none", "vidcom2", "vidcom2:s_frame", "vidcom2:neg_s_frame", "vidcom2:s_video",
                                 "vidcom2:neg_s_video"}  # fmt: skip  (u_frame + u_video is VidCom2's default)
    rec = {"method": "vidcom2", "hparams": {"budget": "fca", "token_score": "sum", "score_weights": [1, 2]}}
    assert paper.row_key(rec) == "vidcom2:weight_1_2"
    assert paper.row_key({"method": "vidcom2", "hparams": {"budget": "fca", "score_weights": [1.0, 1.0]}}) == "vidcom2"
    assert paper.row_key({"method": "fastv", "hparams": {"budget": "fca"}}) == "fastv+fca"
    assert paper.method_label("fastv+fca") == "FastV + FCA"
    assert paper.method_label("vidcom2:window_4") == "VidCom2 (window_4)"
    with pytest.raises(KeyError, match="VARIANTS"):
        paper.variant_overrides("vidcom2:no_such")
