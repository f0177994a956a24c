"""Shared helpers of the benchmarks: interleaved repeats, spreads and noise flags, memory probes, machine, JSON."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


#: A ratio whose spread over rounds, (max - min) / median, exceeds this is flagged as noise in the tables.
NOISE_THRESHOLD = 0.10


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


@dataclass(frozen=True)
class Spread:
    """min / median / max of one figure over rounds; ``noisy`` when (max - min) / median > :data:`NOISE_THRESHOLD`."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(min(values), statistics.median(values), max(values))

    @property
    def rel(self) -> float:
        return (self.max - self.min) / self.median if self.median else 0.0

    @property
    def noisy(self) -> bool:
        return self.rel > NOISE_THRESHOLD

    def cell(self, digits: int = 3) -> str:
        """``median (min-max)``, with a ``!`` when noisy."""
        flag = " !" if self.noisy else ""
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}-{self.max:.{digits}f}){flag}"

    def as_dict(self) -> dict:
        return {"min": self.min, "median": self.median, "max": self.max, "rel_spread": self.rel, "noisy": self.noisy}


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
    return (f"WARNING: the machine was noisy: {len(noisy)} of {len(spreads)} {what} spread more than "
            f"{NOISE_THRESHOLD:.0%} over rounds (marked !; load average {load}); rerun on a quiet machine or with "
            "more rounds before quoting them")


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
