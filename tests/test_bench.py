"""The benchmarks' statistics (spreads, per-round paired ratios, noise flags) and one smoke run of `make bench`."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_e2e, bench_select
from benchmarks.common import NOISE_THRESHOLD, Spread, noise_warning, paired_ratios


def test_spread_and_noise_flag():
    s = Spread.of([1.0, 1.2, 0.9])
    assert (s.min, s.median, s.max) == (0.9, 1.0, 1.2)
    assert s.rel == pytest.approx(0.3) and s.noisy
    quiet = Spread.of([1.0, 1.02, 0.99])
    assert quiet.rel == pytest.approx(0.03) and not quiet.noisy
    assert quiet.cell(2) == "1.00 (0.99-1.02)" and s.cell(1).endswith(" !")
    assert NOISE_THRESHOLD == 0.10


def test_paired_ratios_cancel_a_drift_common_to_both_variants():
    # the machine slows down 2x in round 2: both variants slow alike, so the per-round ratio stays exactly 0.25
    times = {"none": [4.0, 8.0, 4.4], "vidcom2": [1.0, 2.0, 1.1]}
    r = paired_ratios(times, "none")["vidcom2"]
    assert (r.min, r.median, r.max) == pytest.approx((0.25, 0.25, 0.25))
    assert not r.noisy
    # while the ratio of medians of the same numbers would not be paired at all
    assert paired_ratios(times, "none")["none"].median == 1.0


def test_noise_warning_counts_noisy_figures():
    assert noise_warning([Spread.of([1, 1, 1])], "ratios") is None
    msg = noise_warning([Spread.of([1, 1, 1]), Spread.of([1, 2, 1.5])], "ratios")
    assert msg.startswith("WARNING: the machine was noisy: 1 of 2 ratios spread more than 10%")


@pytest.mark.slow
def test_bench_e2e_smoke_writes_spreads_and_throughput(tmp_path, capsys):
    out = tmp_path / "latest.json"
    bench_e2e.main(["--size", "tiny", "--device", "cpu", "--frames", "2", "--ratios", "0.25", "--methods", "vidcom2",
                    "--repeats", "2", "--new-tokens", "2", "--scaling-frames", "--batch-sizes", "1", "2",
                    "--throughput-methods", "none", "vidcom2", "fastv", "--out", str(out)])
    data = json.loads(out.read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"none", "vidcom2"}
    spread = rows["vidcom2"]["prefill_ratio_spread"]
    assert spread["min"] <= spread["median"] <= spread["max"] and rows["vidcom2"]["prefill_ratio"] == spread["median"]
    assert rows["none"]["prefill_ratio_spread"] == {"min": 1.0, "median": 1.0, "max": 1.0, "rel_spread": 0.0,
                                                    "noisy": False}  # fmt: skip
    assert rows["vidcom2"]["visual_tokens_out"] < rows["vidcom2"]["visual_tokens_in"] == 2 * 196
    tp = {(t["method"], t["batch_size"]): t for t in data["throughput"]}
    assert set(tp) == {("none", 1), ("none", 2), ("vidcom2", 1), ("vidcom2", 2)}  # fastv: one prompt per generate
    assert tp[("none", 1)]["vs_batch1"]["median"] == 1.0 and tp[("none", 2)]["samples_per_s"]["median"] > 0
    assert data["noise"]["ratios"] == 2 and "loadavg" in data["machine"]
    printed = capsys.readouterr().out
    assert "samples/s" in printed and "throughput: fastv skipped: in-LLM pruning runs one prompt" in printed


def test_bench_select_growth_table(tmp_path, capsys):
    out = tmp_path / "select.json"
    bench_select.main(["--device", "cpu", "--repeats", "2", "--dim", "16", "--growth-frames", "2",
                       "4", "8", "--layouts", "--out", str(out)])
    data = json.loads(out.read_text())
    growth = [g for g in data["growth"] if g["what"] == "vidcom2"]
    assert [g["frames"] for g in growth] == [2, 4, 8]
    assert growth[0]["growth_per_doubling"] is None and growth[1]["growth_per_doubling"] > 0
    assert {g["what"] for g in data["growth"]} == {"vidcom2", "fca"}
    assert all(g["peak_mem_growth_bytes"] >= 0 for g in data["growth"])
    assert [v["variant"] for v in data["vs_official"]][:2] == ["official", "vidcom2"]
    assert data["vs_official"][0]["speed_vs_official"]["median"] == 1.0
    assert "per doubling" in capsys.readouterr().out


def test_official_operations_keep_what_vidcom2_keeps():
    # the bench's re-expression of the official function and the library select the same tokens (fp32, no ties)
    import torch

    import vidcom2
    from benchmarks.official_vidcom2 import official_select

    x = torch.randn(6, 49, 32, generator=torch.Generator().manual_seed(4))
    for r in (0.1, 0.25, 0.5):
        keep = vidcom2.select("vidcom2", x, r)
        assert torch.equal(official_select(x, r), x.reshape(-1, 32)[keep.reshape(-1)])
