"""Per-sample measurements of a compressed ``generate`` call: token counts (always) and split latency (opt-in).

Timers synchronise the device before reading the clock (``torch.cuda.synchronize`` on CUDA), so each stage's
time is the time its kernels took, not the time it took to enqueue them. Stages: vision encoder
(``get_video_features``), compression (the method plus rebuilding the prompt), prefill (from calling ``generate``
to the end of its first forward: the prompt pass) and decode (the rest of ``generate``). With ``measure=False``
every timer is a no-op and the times stay ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class SampleStats:
    """One prompt (one batch row) of one ``generate`` call.

    visual_tokens_in / out: video tokens in the uncompressed prompt / given to the LLM's first layer (pre-LLM
        methods) or kept after in-LLM pruning (in-LLM methods record their per-layer average separately).
    visual_tokens_layer_avg: visual tokens averaged over the decoder layers (= out for pre-LLM methods).
    *_s: seconds, device-synchronised; ``None`` unless ``measure=True``. The encoder and compression times are
        those of the whole batch (shared by its rows).
    new_tokens: generated tokens up to and including the first end-of-sequence token.
    prompt_tokens_in / out: prompt length (without padding) before / after compression.
    visual_tokens_per_layer: visual tokens each decoder layer processed in prefill (in-LLM methods; ``None`` for
        pre-LLM methods, where every layer sees ``visual_tokens_out``).
    """

    visual_tokens_in: int
    visual_tokens_out: int
    visual_tokens_layer_avg: float
    vision_encoder_s: float | None = None
    compression_s: float | None = None
    prefill_s: float | None = None
    decode_s: float | None = None
    new_tokens: int = 0
    prompt_tokens_in: int = 0
    prompt_tokens_out: int = 0
    visual_tokens_per_layer: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Recorder:
    """Collects the timings and per-row fields of one ``generate`` call.

    enabled: take timings (``measure=True``); token counts are recorded either way.
    device: the device to synchronise.
    times: stage name -> seconds (only when enabled).
    fields: per-call overrides for :class:`SampleStats` fields, set with :meth:`note` (a scalar for all rows or a
        list with one value per row), e.g. by in-LLM pruning: ``visual_tokens_out``, ``visual_tokens_layer_avg``.
    """

    enabled: bool = False
    device: torch.device | None = None
    times: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (adds up if entered twice)."""
        if not self.enabled:
            yield
            return
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def mark(self) -> float | None:
        """A synchronised clock reading (``None`` when disabled)."""
        if not self.enabled:
            return None
        synchronize(self.device)
        return time.perf_counter()

    def note(self, **fields) -> None:
        unknown = set(fields) - {f for f in SampleStats.__dataclass_fields__}
        if unknown:
            raise KeyError(f"unknown SampleStats fields {sorted(unknown)}")
        self.fields.update(fields)

    def rows(self, base: list[dict]) -> list[SampleStats]:
        """Merge the per-row token counts ``base`` with the timings and noted fields into SampleStats."""
        out = []
        for row, values in enumerate(base):
            values = dict(values)
            for key, value in self.fields.items():
                values[key] = value[row] if isinstance(value, (list, tuple)) else value
            for stage in ("vision_encoder", "compression", "prefill", "decode"):
                values[f"{stage}_s"] = self.times.get(stage)
            values.setdefault("visual_tokens_layer_avg", float(values["visual_tokens_out"]))
            out.append(SampleStats(**values))
        return out
