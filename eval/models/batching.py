"""Batched generation for the harness wrappers: B requests, each through its own unchanged per-request path, ONE
``model.generate`` for all of them.

Each request of a batch runs its wrapper's per-request path (``Harnessed._generate_one``: frame sampling, prompt,
processor, decoding, ``until`` cutting — lmms-eval's own code for the Qwen wrappers) in a worker thread. The model
stand-in those threads see (:class:`GateModel`) does not generate: its ``generate(**inputs)`` hands the inputs to a
:class:`Gate` and waits. When every request of the batch has arrived, the calling thread collates the inputs
(:func:`collate`: sequence-aligned tensors left-padded, every other tensor concatenated on dim 0, every non-tensor
argument required to be equal) and runs one real ``generate`` inside the current ``vidcom2.compress`` block, so the
library sees a left-padded batch and records one row of token counts per sample. Each thread then gets its own row in
exactly the shape a batch-1 ``generate`` returns (its own prompt ids + its new tokens up to and including its first
end-of-sequence id, :func:`split_rows`) and finishes its own decoding.

Why not the parents' own batching: lmms-eval 0.7.3's LLaVA-OV wrappers assert ``batch_size == 1``, and its
Qwen2.5-VL ``generate_until`` subsamples only the first video of a batch to ``max_num_frames`` (``video_inputs[0] =
video_inputs[0][indices]``), so batched answers would differ from batch-1 answers for a reason that is not numerics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

#: generate() keywords aligned with the prompt sequence: left-padded (ids with the pad id, the others with 0)
SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def collate(inputs: list[dict], pad_id: int) -> dict:
    """One ``generate`` call's keywords from the per-request keywords ``inputs`` (all with batch dimension 1)."""
    keys = set(inputs[0])
    for i, kw in enumerate(inputs[1:], 1):
        if set(kw) != keys:
            raise ValueError(f"batched requests 0 and {i} pass different generate() arguments: "
                             f"{sorted(keys ^ set(kw))}; run with batch_size=1")
    length = max(int(kw["input_ids"].shape[-1]) for kw in inputs)
    out = {}
    for key in sorted(keys):
        values = [kw[key] for kw in inputs]
        if key in SEQUENCE_KEYS and isinstance(values[0], torch.Tensor):
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.cat([_left_pad(v, length, fill) for v in values])
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.cat(values)
        elif isinstance(values[0], list) and key in ("second_per_grid_ts",):
            out[key] = [x for v in values for x in v]
        else:
            if any(v != values[0] for v in values[1:]):
                raise ValueError(f"batched requests pass different {key!r} to generate(); run with batch_size=1")
            out[key] = values[0]
    if "attention_mask" not in out:  # left padding needs a mask
        out["attention_mask"] = torch.cat([_left_pad(torch.ones_like(kw["input_ids"]), length, 0) for kw in inputs])
    return out


def _left_pad(t: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    if t.shape[0] != 1:
        raise ValueError(f"a batched request passed {t.shape[0]} prompts; each request must be one prompt")
    pad = length - t.shape[-1]
    if pad == 0:
        return t
    return torch.cat([t.new_full((1, pad), fill), t], dim=-1)


def split_rows(sequences: torch.Tensor, inputs: list[dict], eos) -> list[torch.Tensor]:
    """Row ``i`` of a batched ``generate`` output as batch-1 ``generate`` returns it: request ``i``'s own prompt ids,
    then its new tokens up to and including its first end-of-sequence id (later positions are padding)."""
    if not isinstance(sequences, torch.Tensor):
        raise TypeError("batched generation expects generate() to return a tensor of sequences")
    eos_ids = torch.tensor([] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
                           dtype=sequences.dtype, device=sequences.device)
    prompt = max(int(kw["input_ids"].shape[-1]) for kw in inputs)
    rows = []
    for i, kw in enumerate(inputs):
        new = sequences[i, prompt:]
        hits = torch.isin(new, eos_ids).nonzero()
        if hits.numel():
            new = new[: int(hits[0]) + 1]
        own = kw["input_ids"][0].to(sequences.device, sequences.dtype)
        rows.append(torch.cat([own, new])[None])
    return rows


class Aborted(RuntimeError):
    """Raised in a request thread whose batch was abandoned because another request or the batch failed."""


@dataclass
class _Slot:
    inputs: dict | None = None
    output: torch.Tensor | None = None
    info: dict = field(default_factory=dict)  # what the request's generate() saw (frames fed, ...)
    done: bool = False  # the request's thread has finished (answered or failed)


class Gate:
    """Where the ``generate`` calls of ``n`` request threads meet (one per request, by thread-local index)."""

    def __init__(self, n: int):
        self.slots = [_Slot() for _ in range(n)]
        self._cond = threading.Condition()
        self._local = threading.local()
        self.failed: BaseException | None = None
        self.released = False

    # ---- request threads ------------------------------------------------------------------------------------
    def bind(self, index: int) -> None:
        self._local.index = index

    def submit(self, inputs: dict, info: dict) -> torch.Tensor:
        """Called by a request thread's ``generate``: deposit its inputs, wait for its row."""
        slot = self.slots[self._local.index]
        with self._cond:
            if slot.inputs is not None:
                raise RuntimeError("a request called generate() twice in one batch")
            slot.inputs, slot.info = inputs, info
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.released)
            if slot.output is None:
                raise Aborted(f"the batch was abandoned: {self.failed!r}")
            return slot.output

    def finished(self) -> None:
        with self._cond:
            self.slots[self._local.index].done = True
            self._cond.notify_all()

    # ---- the calling thread -------------------------------------------------------------------------------
    def wait_arrivals(self) -> None:
        """Until every request has deposited its inputs or finished without generating."""
        with self._cond:
            self._cond.wait_for(lambda: all(s.inputs is not None or s.done for s in self.slots))

    def release(self, outputs: list | None, error: BaseException | None = None) -> None:
        with self._cond:
            if outputs is not None:
                for slot, out in zip([s for s in self.slots if s.inputs is not None], outputs):
                    slot.output = out
            self.failed, self.released = error, True
            self._cond.notify_all()


class GateModel:
    """Stands in for the HF model in a request thread: ``generate`` goes through the gate; the rest is the model's."""

    def __init__(self, model, gate: Gate, describe):
        self._model, self._gate, self._describe = model, gate, describe

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, *args, **kwargs):
        if args:
            raise TypeError("batched generation needs generate() inputs as keywords")
        if kwargs.get("pixel_values_videos") is None:
            raise RuntimeError(
                "a request reached model.generate() without video inputs (the video could not be read or the "
                "prompt has no video placeholder); refusing to score a text-only answer"
            )
        return self._gate.submit(kwargs, self._describe(kwargs))


def run_batch(requests: list, per_request, generate, pad_id: int, eos) -> tuple[list[str], list[dict]]:
    """Answer ``requests`` with one ``generate`` call.

    per_request(request, gate): runs one request's own path in a worker thread (its model stand-in is a GateModel on
    ``gate``) and returns its answer; generate(**kwargs): the real (timed) generate; ``pad_id`` / ``eos``: the
    tokenizer's pad id and the end-of-sequence id(s) the rows are cut at. Returns the answers and what each request's
    generate saw. The first error of any request
    (in request order) or of the batched generate is raised after every thread has stopped.
    """
    gate = Gate(len(requests))
    answers: list = [None] * len(requests)
    errors: list = [None] * len(requests)

    def work(i, req):
        gate.bind(i)
        try:
            answers[i] = per_request(req, gate)
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            errors[i] = e
        finally:
            gate.finished()

    threads = [threading.Thread(target=work, args=(i, r), daemon=True) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    batch_error = None
    try:
        gate.wait_arrivals()
        arrived = [s.inputs for s in gate.slots if s.inputs is not None]
        if all(e is None for e in errors) and arrived:
            kwargs = collate(arrived, pad_id)
            gate.release(split_rows(generate(**kwargs), arrived, eos))
        else:
            gate.release(None, Aborted("another request of the batch failed before generate()"))
    except BaseException as e:  # noqa: BLE001
        batch_error = e
        gate.release(None, e)
    for t in threads:
        t.join()
    if batch_error is not None:
        raise batch_error
    first = next((e for e in errors if e is not None and not isinstance(e, Aborted)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return answers, [s.info for s in gate.slots]
