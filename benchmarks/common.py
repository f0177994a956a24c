"""Shared helpers of the benchmarks: interleaved repeats, spreads and noise flags, memory probes, machine, JSON."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


#: A figure whose 95% interval of the median (bootstrap over rounds, :class:`Spread`) is wider than this share of
#: the median is flagged as noise in the tables.
NOISE_THRESHOLD = 0.10
#: Bootstrap resamples behind :attr:`Spread.lo` / :attr:`Spread.hi` (seeded: the same rounds give the same interval).
BOOTSTRAP_RESAMPLES = 4000


def interleaved_times(fns: dict, repeats: int, warmup: int, device) -> dict[object, list[float]]:
    """Wall times (s) of each callable over ``repeats`` rounds; variants are interleaved in every round so that
    machine noise hits all of them alike. ``warmup`` untimed rounds first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[object, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - t0)
    return times


def median_interval(values: list[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """Percentile-bootstrap interval of the median of ``values``: the median of ``resamples`` resamples (with
    replacement, ``random.Random(seed)``), and their ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.

    One disturbed round moves the min-max range but not this interval once there are 7 or more rounds (a resample's
    median is then the extreme value with probability about 1%); with 3 or 5 rounds it is the min-max range."""
    n = len(values)
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return meds[int(tail * resamples)], meds[math.ceil((1 - tail) * resamples) - 1]


@dataclass(frozen=True)
class Spread:
    """One figure over rounds: ``median`` with its 95% bootstrap interval ``lo``-``hi`` (:func:`median_interval`)
    and the raw ``min``-``max``. ``noisy`` when the interval is wider than :data:`NOISE_THRESHOLD` of the median:
    a figure is trusted when its median is pinned down, not when every round agrees (on a shared 2-core VM the
    min-max range of 7 idle rounds exceeds 10% for nearly every timing; docs/bench/2026-12-02-select.log)."""

    min: float
    median: float
    max: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        values = [float(v) for v in values]
        lo, hi = median_interval(values)
        return cls(min(values), statistics.median(values), max(values), lo, hi)

    def scaled(self, divisor: float) -> Spread:
        """Every figure divided by ``divisor`` (a constant: e.g. a prefill ratio over a FLOPs ratio)."""
        return Spread(*(x / divisor for x in (self.min, self.median, self.max, self.lo, self.hi)))

    @property
    def rel(self) -> float:
        """Width of the median's 95% interval as a share of the median."""
        return (self.hi - self.lo) / self.median if self.median else 0.0

    @property
    def rel_minmax(self) -> float:
        return (self.max - self.min) / self.median if self.median else 0.0

    @property
    def noisy(self) -> bool:
        return self.rel > NOISE_THRESHOLD

    def cell(self, digits: int = 3) -> str:
        """``median [lo-hi]`` (the 95% interval of the median), with a ``!`` when noisy."""
        flag = " !" if self.noisy else ""
        return f"{self.median:.{digits}f} [{self.lo:.{digits}f}-{self.hi:.{digits}f}]{flag}"

    def as_dict(self) -> dict:
        return {"min": self.min, "median": self.median, "max": self.max, "ci95": [self.lo, self.hi],
                "rel_spread": self.rel, "rel_minmax": self.rel_minmax, "noisy": self.noisy}  # fmt: skip


def paired_ratios(times: dict[object, list[float]], base) -> dict[object, Spread]:
    """Per-round ratio of each variant's time to ``base``'s time in the same round, as a :class:`Spread`: pairing
    by round cancels slow drifts of the machine that would widen a ratio of two medians."""
    return {k: Spread.of([t / b for t, b in zip(v, times[base])]) for k, v in times.items()}


def noise_warning(spreads: list[Spread], what: str) -> str | None:
    """One line when any figure is noisy: how many, the load average, and what to do."""
    noisy = [s for s in spreads if s.noisy]
    if not noisy:
        return None
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"WARNING: the machine was noisy: {len(noisy)} of {len(spreads)} {what} have a 95% interval of the "
            f"median wider than {NOISE_THRESHOLD:.0%} of it (marked !; load average {load}); "
            "rerun on a quiet machine or with more rounds before quoting them")


class RssSampler:
    """Peak resident-set growth during a call, sampled every ``interval`` s from /proc/self/statm by a thread (torch
    kernels release the GIL). Large tensors are mmap-allocated by glibc and returned to the OS when freed, so the
    growth of one call is visible and falls back afterwards. A sampled peak can miss spikes shorter than the interval.
    """

    def __init__(self, interval: float = 0.0005):
        import threading

        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        gc.collect()
        self.base = self._rss()
        self.peak = self.base
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


class MemoryProbe:
    """Peak memory of the enclosed call: CUDA ``max_memory_allocated`` (weights included) or the sampled process RSS;
    ``growth`` = peak minus what was resident before the call."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.sampler = RssSampler().__enter__()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            sync(self.device)
            self.peak = float(torch.cuda.max_memory_allocated())
            self.growth = self.peak - self.base
        else:
            self.sampler.__exit__(*exc)
            self.peak, self.growth = float(self.sampler.peak), float(self.sampler.growth)


def machine(device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "loadavg": list(os.getloadavg()),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
