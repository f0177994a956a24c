"""The benchmarks' statistics (spreads, per-round paired ratios, noise flags) and one smoke run of `make bench`."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_e2e, bench_select
from benchmarks.common import NOISE_THRESHOLD, Spread, median_interval, noise_warning, paired_ratios


def test_spread_flags_an_unsettled_median_not_one_disturbed_round():
    # 3 rounds: every resample's median is one of the 3 values and min / max each come up with probability 7/27
    # (> 2.5%), so the interval is the min-max range
    s = Spread.of([1.0, 1.2, 0.9])
    assert (s.min, s.median, s.max, s.lo, s.hi) == (0.9, 1.0, 1.2, 0.9, 1.2)
    assert s.rel == pytest.approx(0.3) and s.noisy and s.rel_minmax == pytest.approx(0.3)
    quiet = Spread.of([1.0, 1.02, 0.99])
    assert quiet.rel == pytest.approx(0.03) and not quiet.noisy
    assert quiet.cell(2) == "1.00 [0.99-1.02]" and s.cell(1).endswith(" !")
    assert NOISE_THRESHOLD == 0.10
    # 9 rounds, one of them disturbed (2x): the min-max range is 100% of the median, the median's interval is not
    # (a resample's median is the outlier only when 5 of 9 draws are: P = 0.0006 < 2.5%)
    rounds = [1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99, 2.00]
    one_bad = Spread.of(rounds)
    assert one_bad.rel_minmax == pytest.approx(1.02, abs=1e-9) and one_bad.hi < 1.05 and not one_bad.noisy
    # a median that really is uncertain (values spread evenly over +-20%) stays flagged
    assert Spread.of([0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2]).noisy
    # dividing by a constant divides every figure (at_limit = prefill ratio / FLOPs ratio)
    half = one_bad.scaled(2.0)
    assert (half.lo, half.median, half.hi) == pytest.approx((one_bad.lo / 2, one_bad.median / 2, one_bad.hi / 2))
    assert half.rel == pytest.approx(one_bad.rel)


def test_median_interval_matches_exact_bootstrap_distribution():
    # independent computation: enumerate all 5^5 resamples of 5 distinct values; the exact 2.5% / 97.5% quantiles
    # of the resampled median, compared with the seeded Monte-Carlo interval (4000 resamples)
    import itertools
    import statistics

    values = [3.0, 1.0, 4.0, 1.5, 9.0]
    meds = sorted(statistics.median(c) for c in itertools.product(values, repeat=5))
    exact = (meds[int(0.025 * len(meds))], meds[int(0.975 * len(meds))])
    assert median_interval(values) == exact == (1.0, 9.0)  # P(median = min) = 5.8% > 2.5%: min-max with 5 rounds
    seven = [3.0, 1.0, 4.0, 1.5, 9.0, 2.0, 5.0]
    lo, hi = median_interval(seven)
    assert (lo, hi) == (1.5, 5.0)  # P(median = 1.0) = P(>= 4 of 7 draws are 1.0) = 1.0% < 2.5%: extremes excluded
    assert median_interval(seven) == (lo, hi)  # seeded: the same rounds give the same interval


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
    assert msg.startswith("WARNING: the machine was noisy: 1 of 2 ratios have a 95% interval of the median wider than 10%")


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
    assert rows["none"]["prefill_ratio_spread"] == {"min": 1.0, "median": 1.0, "max": 1.0, "ci95": [1.0, 1.0],
                                                    "rel_spread": 0.0, "rel_minmax": 0.0, "noisy": False}  # fmt: skip
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
