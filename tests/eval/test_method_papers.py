"""The other methods' own published numbers (results/paper/method_papers.csv, official_method_runs.csv): the schema,
the registry names, the transcription checked against each source's own averages, the presets that run the matching
configs, and the reporter placing a published number in the right cell, apart from the VidCom2 paper's rows."""

import copy
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from eval import paper, presets, report

FIXTURES = Path(__file__).parent / "fixtures" / "records"
PUB = paper.load_method_published()
METHOD_PRESETS = {n: presets.load_preset("experiment", n) for n in presets.preset_names("experiment")}
METHOD_PRESETS = {n: p for n, p in METHOD_PRESETS.items() if p.method_tables}
# each source's own average: the columns it averages (its Avg. of vanilla reproduces only with these)
AVERAGED = {
    "holitom_llava_ov_7b": ("mvbench", "egoschema_full", "longvideobench", "videomme_overall"),
    "flashvid_llava_ov_7b": ("videomme_overall", "egoschema_full", "longvideobench", "mvbench"),
    "flashvid_llava_video_7b": ("videomme_overall", "egoschema_full", "longvideobench", "mvbench"),
}


def test_schema_kinds_and_tables():
    assert list(PUB.columns[:13]) == ["table", "label", "method", "paper_method", "paper", "arxiv", "location", "model",
                                      "frames", "metric", "retention_ratio", "value", "source"]  # fmt: skip
    assert set(PUB["kind"]) == {"method_paper", "official_log"}
    assert set(PUB["table"]) == {"holitom_llava_ov_7b", "flashvid_llava_ov_7b", "flashvid_llava_video_7b",
                                 "flashvid_qwen2_5_vl_7b", "evs_sglang_qwen3_vl", "fastvid_official_log"}  # fmt: skip
    assert str(PUB["frames"].dtype) == "Int64" and PUB["value"].between(0, 200).all()
    papers = PUB[PUB["kind"] == "method_paper"]
    assert (papers["arxiv"].str.fullmatch(r"\d{4}\.\d{5}")).all() and (papers["source"].str.contains("read 20")).all()
    # one number per (table, model, printed row, ratio, metric)
    assert not PUB.duplicated(["table", "model", "paper_method", "retention_ratio", "metric"]).any()


def test_every_method_is_registered_and_every_model_is_one_of_ours():
    import vidcom2

    registered = set(vidcom2.list_methods()) | {"none"}
    assert {paper.base_method(m) for m in PUB["method"]} <= registered
    for key in set(PUB["method"]):
        paper.variant_overrides(key)  # every variant is a known one
    ours = {presets.load_preset("experiment", n).paper_model for n in presets.preset_names("experiment")}
    assert set(PUB["model"]) <= ours | {"Qwen3-VL-32B-Instruct"}  # 32B: conf/experiment/qwen3_vl_32b.yaml


@pytest.mark.parametrize("table", sorted(AVERAGED))
def test_transcription_reproduces_the_sources_own_averages(table):
    """Each printed Avg. (score) is the mean of the four transcribed columns, to the print's rounding; the relative
    one (% of vanilla) to 0.2 (it is computed from unrounded scores). VideoMME overall is the mean of its three
    equal-sized durations (FlashVID prints them). One printed inconsistency, asserted here, is kept as printed."""
    cols = AVERAGED[table]
    wide = PUB[PUB["table"] == table].pivot_table(index=["paper_method", "retention_ratio"], columns="metric",
                                                  values="value")  # fmt: skip
    vanilla = wide.loc[("Vanilla", 1.0)]
    odd = set()
    checked = 0
    for key, row in wide.dropna(subset=["source_avg_score"]).iterrows():
        mean = row[list(cols)].mean()
        rel = (100 * row[list(cols)] / vanilla[list(cols)]).mean()
        if abs(mean - row["source_avg_score"]) > 0.05 + 1e-9 or abs(rel - row["source_avg_relative_pct"]) > 0.2:
            odd.add(key)
        if "videomme_short" in row and abs(row[["videomme_short", "videomme_medium", "videomme_long"]].mean()
                                           - row["videomme_overall"]) > 0.07:  # fmt: skip
            odd.add(key)
        checked += 1
    assert checked >= 9
    # FlashVID p. 8, PruneVID at 15%: overall printed 56.1; short/medium/long average 55.57, Avg. 55.7 implies 55.6
    assert odd == ({("PruneVID", 0.15)} if table == "flashvid_llava_ov_7b" else set())


def test_bad_rows_are_refused_with_the_file_row_and_fix(tmp_path):
    good = (paper.PAPER_DIR / "method_papers.csv").read_text().splitlines()
    runs = paper.PAPER_DIR / "official_method_runs.csv"

    def load(lines):
        path = tmp_path / "m.csv"
        path.write_text("\n".join(lines) + "\n")
        return paper.load_method_published(path, runs)

    assert len(load(good[:3])) == 2 + len(pd.read_csv(runs))
    with pytest.raises(ValueError, match=r"missing columns \['label'\]"):
        load([good[0].replace(",label,", ",labels,"), good[1]])
    cases = [(",none,Vanilla,", ",nosuch,Vanilla,", "method 'nosuch' is not in methods.csv"),
             (",mvbench,1,", ",mvbenchh,1,", "metric 'mvbenchh' is not one of"),
             (",mvbench,1,", ",mvbench,0,", r"retention '0' must be a number in \(0, 1\]"),
             (",mvbench,1,58.3,", ",mvbench,1,583,", "value '583' of mvbench must be a number in")]
    for old, new, message in cases:
        assert old in good[1]
        with pytest.raises(ValueError, match=rf"m\.csv:2: {message}"):
            load([good[0], good[1].replace(old, new)])


def test_each_source_table_has_a_preset_that_runs_its_rows():
    covered = {t for p in METHOD_PRESETS.values() if not p.name.startswith("tiny") for t in p.method_tables}
    assert covered == set(PUB["table"])
    for name, preset in METHOD_PRESETS.items():
        assert preset.paper_table is None and preset.requires_gpu and preset.rows[0] == ("none", 1.0)
        pub = presets.method_published_for(PUB, preset)
        pub = pub[(pub["model"] == preset.paper_model) & (pub["frames"].isna() | (pub["frames"] == preset.frames))]
        assert len(pub), f"{name}: no published row matches {preset.paper_model} at {preset.frames} frames"
        assert set(zip(pub["method"], pub["retention_ratio"])) <= set(preset.rows), name
        # never compared with the VidCom2 paper's rows
        assert presets.published_for(paper.load_published(), preset).empty
        commands, skipped = presets.sweep_commands(preset)
        assert len(commands) + len(skipped) == len({m for m, _ in preset.rows})
    holitom = presets.sweep_commands(METHOD_PRESETS["holitom_llava_ov_7b"])[0]
    assert any("method=holitom" in c and "retention_ratio=0.1" in c and "method.tau=0.65" in c for c in holitom)
    qwen = " ".join(presets.sweep_commands(METHOD_PRESETS["flashvid_qwen2_5_vl_7b"])[0][-1])
    assert "method.selection=attn_div" in qwen and "method.min_segments=4" in qwen


def test_tiny_counterpart_relabels_the_sources_as_its_model():
    tiny = presets.load_preset("experiment", "tiny_method_papers")
    assert set(tiny.stands_in_for) == {n for n in METHOD_PRESETS if not n.startswith("tiny")} and not tiny.requires_gpu
    rows = presets.method_published_for(PUB, tiny)
    assert set(rows["model"]) == {tiny.model} and set(rows["frames"]) == {tiny.frames}
    assert set(rows["table"]) == set(PUB["table"])
    assert presets.published_for(paper.load_published(), tiny).empty


def _record(src: Path, out: Path, method: str, ratio: float, headline: float, breakdown=None, hparams=None) -> None:
    rec = json.loads(src.read_text())
    rec = copy.deepcopy(rec) | {"method": method, "retention_ratio": ratio, "hparams": hparams or {}}
    rec["accuracy"] = rec["accuracy"] | {"headline": headline, "breakdown": breakdown or {}}
    path = out / rec["benchmark"] / "llava_ov_7b" / method / f"r{ratio:.2f}" / "seed0" / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Hand-made records: vanilla (the fixture's), HoliTom at 25% (MVBench 57.0, VideoMME 58.0) and at 10% with T=0.65
    (MVBench 56.0) on LLaVA-OV-7B, 32 frames; reported with both the VidCom2 paper's and the method sources' rows."""
    root = tmp_path_factory.mktemp("method_report")
    runs = root / "runs"
    for bench in ("mvbench", "videomme"):
        src = FIXTURES / bench / "llava_ov_7b" / "none" / "r1.00" / "seed0" / "record.json"
        (runs / bench / "llava_ov_7b" / "none" / "r1.00" / "seed0").mkdir(parents=True)
        shutil.copy(src, runs / bench / "llava_ov_7b" / "none" / "r1.00" / "seed0" / "record.json")
    mv, vm = (FIXTURES / b / "llava_ov_7b" / "none" / "r1.00" / "seed0" / "record.json" for b in ("mvbench", "videomme"))
    _record(mv, runs, "holitom", 0.25, 57.0, hparams={"tau": 0.8})
    _record(vm, runs, "holitom", 0.25, 58.0, {"short": 70.0, "medium": 56.0, "long": 48.0}, {"tau": 0.8})
    _record(mv, runs, "holitom", 0.10, 56.0, hparams={"tau": 0.65})
    records = [report.load_record(p) for p in report.find_records(runs)]
    out = root / "tables"
    text = report.build(records, out, None, published=paper.load_published(), method_published=PUB)
    return out, text


def test_reporter_places_the_published_number_in_the_right_cell(built):
    out, text = built
    vs = pd.read_csv(out / "vs_method_papers.csv")
    cell = vs.set_index(["table", "paper_method", "retention_ratio", "metric"])
    # HoliTom's own 25% row, MVBench 58.4 (and its w/o-M row 58.5): ours 57.0, Δ = 57.0 − 58.4
    hol = cell.loc[("holitom_llava_ov_7b", "HoliTom", 0.25, "mvbench")]
    assert (hol["method"], hol["ours"], hol["published"]) == ("holitom", 57.0, 58.4)
    assert hol["delta"] == pytest.approx(57.0 - 58.4)
    assert cell.loc[("holitom_llava_ov_7b", "HoliTom (w/o M)", 0.25, "mvbench"), "published"] == 58.5
    assert cell.loc[("holitom_llava_ov_7b", "HoliTom", 0.25, "videomme_overall"), "delta"] == pytest.approx(58.0 - 58.9)
    # the 10% rows are the T=0.65 variant, as HoliTom's script runs them
    ten = cell.loc[("holitom_llava_ov_7b", "HoliTom", 0.10, "mvbench")]
    assert (ten["method"], ten["ours"], ten["published"]) == ("holitom:tau_0.65", 56.0, 57.3)
    # FlashVID's table on the same model: its own vanilla against ours, its FlashVID rows not run by us
    flash = vs[vs["table"] == "flashvid_llava_ov_7b"].set_index(["paper_method", "retention_ratio", "metric"])
    assert flash.loc[("Vanilla", 1.0, "mvbench"), "ours"] == 56.9
    assert flash.loc[("Vanilla", 1.0, "mvbench"), "published"] == 58.3
    assert pd.isna(flash.loc[("FlashVID", 0.25, "mvbench"), "ours"])
    # source-only columns are shown, never compared; other models' sources stay out
    assert vs.loc[vs["metric"] == "egoschema_full", "ours"].isna().all()
    assert set(vs["model_key"]) == {"LLaVA-OV-7B"} and "evs_sglang_qwen3_vl" not in set(vs["table"])
    assert "vs HoliTom paper (README table) — LLaVA-OV-7B, 32 frames" in text and "arXiv 2505.21334" in text


def test_method_numbers_never_enter_the_vidcom2_comparison(built):
    out, _ = built
    vs = pd.read_csv(out / "vs_paper.csv")
    holitom = vs[vs["method"].str.startswith("holitom")]
    assert len(holitom) and holitom["paper"].isna().all()  # the VidCom2 paper has no HoliTom row for LLaVA-OV-7B
    # every paper cell there is a VidCom2-paper number of that model
    vidcom2 = paper.load_published()
    vidcom2 = vidcom2[vidcom2["model"] == "LLaVA-OV-7B"]
    theirs = set(zip(vidcom2["method"], vidcom2["retention_ratio"], vidcom2["metric"], vidcom2["value"]))
    cells = vs.dropna(subset=["paper"])
    assert len(cells) and set(zip(cells["method"], cells["retention_ratio"], cells["metric"], cells["paper"])) <= theirs
