"""Data parallelism inside one run: ``accelerate launch`` / ``torchrun`` start N copies of ``eval.run``.

    accelerate launch --multi_gpu --num_processes 8 -m eval.run model=llava_ov_7b benchmark=videomme method=vidcom2
    torchrun --nproc_per_node 8 -m eval.run model=llava_ov_7b benchmark=videomme method=vidcom2

Every process loads its own replica of the model (``cuda:<LOCAL_RANK>``, or the CPU with ``device=cpu``), lmms-eval
shards each task's documents over the processes (document ``i`` goes to rank ``i % N``) and gathers the logged
samples and metrics on rank 0. The harness adds what lmms-eval does not do:

- **Placement** (:func:`one_process_view`): the Qwen parents in lmms-eval 0.7.3 put the model on
  ``cuda:<local rank>`` whenever accelerate reports more than one process (so a CPU launch cannot run), the LLaVA
  parent does so only without an explicit ``device_map``. The harness always passes the device itself and lets each
  parent constructor see a one-process accelerator while it runs, then gives the instance the real one (lmms-eval's
  evaluator gathers through ``lm.accelerator``). One code path for every family; on a GPU it places the model where
  the Qwen parents would have (their data-parallel branch wraps nothing: ``prepare_model(evaluation_mode=True)``).
- **Measurements** (:func:`gather_to_main`): each process measures its own requests; rank 0 receives every rank's
  per-sample rows and peak memory, and alone writes the per-sample log, the record and the wandb mirror.
- **Fail fast** (:func:`fail_fast`): a run that raises in one process ends that process at once with a non-zero
  status, so the launcher stops the others; otherwise, in a Hydra sweep, the failed rank would go on to the next
  run while the others wait in (or, worse, pair up with) the failed run's collectives.

CPU data parallelism (``device=cpu``) uses gloo collectives: the harness sets ``ACCELERATE_USE_CPU`` before
accelerate first reads it. It exists to test this path on machines without a GPU; latency there is not meaningful.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

from vidcom2.hooks import scoped_item


@dataclass(frozen=True)
class World:
    """This process's place in the launch (from the launcher's environment variables)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` as set by ``torchrun`` and ``accelerate launch`` (defaults: one)."""
    env = os.environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"malformed launcher variables (RANK/LOCAL_RANK/WORLD_SIZE): {e}") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"launcher variables out of range: RANK={rank}, WORLD_SIZE={size}")
    return World(rank=rank, local_rank=local, size=size)


def process_device(device: str, w: World) -> str:
    """The device of this process: ``cuda`` / ``cuda:k`` become ``cuda:<local rank>`` under a multi-process launch."""
    if w.distributed and (device == "cuda" or device.startswith("cuda:")):
        return f"cuda:{w.local_rank}"
    return device


def prepare_backend(device: str, w: World) -> None:
    """Before the first ``Accelerator()``: CPU processes must use gloo collectives (accelerate's MULTI_CPU mode)."""
    if w.distributed and device == "cpu":
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


class _OneProcessAccelerator:
    """What an lmms-eval parent constructor sees of accelerate: one process (placement is the harness's)."""

    num_processes = 1
    process_index = 0
    local_process_index = 0
    is_main_process = True
    is_local_main_process = True

    def __init__(self, real) -> None:
        self.real = real

    @property
    def distributed_type(self):
        from accelerate import DistributedType

        return DistributedType.NO

    def __getattr__(self, name):
        return getattr(self.real, name)


def lmms_parent(cls: type) -> type:
    """The first lmms-eval class in ``cls``'s MRO (the parent whose constructor loads the model)."""
    for klass in cls.__mro__:
        if klass.__module__.startswith("lmms_eval."):
            return klass
    raise TypeError(f"{cls.__name__} has no lmms-eval model class among its bases")


@contextmanager
def one_process_view(cls: type):
    """While the parent constructor of ``cls`` runs, its ``Accelerator()`` reports one process.

    Yields a list that receives the real accelerators made meanwhile. The module attribute is restored in
    ``finally`` (the parents look ``Accelerator`` up in their module at call time; nothing else is touched).
    """
    module = sys.modules[lmms_parent(cls).__module__]
    real_cls = getattr(module, "Accelerator", None)
    if real_cls is None:
        raise TypeError(f"{module.__name__} does not use accelerate.Accelerator; data parallelism is not wired for it")
    made: list = []

    def make(*args, **kwargs):
        acc = real_cls(*args, **kwargs)
        made.append(acc)
        return _OneProcessAccelerator(acc)

    with scoped_item(vars(module), "Accelerator", make):
        yield made


def gather_to_main(obj, w: World):
    """Every rank's ``obj`` as a list on rank 0 (rank order), ``None`` elsewhere; ``[obj]`` without a launch."""
    if not w.distributed:
        return [obj]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"WORLD_SIZE={w.size} but no torch.distributed process group is initialised: start data-parallel runs "
            "with `accelerate launch` or `torchrun` (see docs/reporting.md, 'Data parallel inside one run')"
        )
    out = [None] * w.size if w.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def merge_rank_rows(per_rank: list[list[dict]]) -> list[dict]:
    """One row per (task, doc_id): every rank's rows tagged with ``rank`` and ``rank_index`` (position in that
    rank's request order, which is what warm-up exclusion counts), padding duplicates dropped.

    lmms-eval pads a rank with fewer requests by repeating its last request, so the collectives line up; the repeat
    is a real generation but not a document of the benchmark, and the first occurrence is kept.
    """
    seen: set = set()
    out: list[dict] = []
    for rank, rows in enumerate(per_rank):
        for i, row in enumerate(rows):
            key = (row.get("task"), row.get("doc_id"))
            if key in seen:
                continue
            seen.add(key)
            out.append({**row, "rank": rank, "rank_index": i})
    return out


def barrier(w: World) -> None:
    """Wait for every process (no-op without a launch)."""
    if w.distributed:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def shutdown() -> None:
    """Leave the process group together and tear it down before the interpreter exits (a process that exits with
    a live gloo group while another still uses it can abort with "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextmanager
def fail_fast(w: World):
    """Under a multi-process launch, an exception ends this process immediately (status 1) after printing it."""
    if not w.distributed:
        yield
        return
    try:
        yield
    except BaseException as e:  # noqa: BLE001 - any failure: the other ranks cannot continue without this one
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        traceback.print_exc()
        print(
            f"[rank {w.rank}/{w.size}] this run failed; exiting so that the launcher stops the other ranks "
            "(records of finished runs are kept; rerunning resumes)",
            file=sys.stderr,
            flush=True,
        )
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
