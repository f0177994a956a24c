"""The data-parallel helpers in one process: launcher variables, placement, the parent's one-process view, merging
per-rank rows, warm-up per process and fail-fast. The 2-process runs are in ``test_data_parallel.py``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from eval import distributed, measure
from eval.distributed import World


@pytest.mark.parametrize(("env", "expected"), [
    ({}, World(0, 0, 1)),
    ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}, World(3, 1, 4)),
    ({"WORLD_SIZE": "2", "RANK": "1"}, World(1, 1, 2)),  # no LOCAL_RANK: single node
])
def test_world_reads_the_launcher_variables(monkeypatch, env, expected):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    w = distributed.world()
    assert w == expected
    assert w.distributed == (expected.size > 1) and w.main == (expected.rank == 0)


@pytest.mark.parametrize(("env", "message"), [
    ({"WORLD_SIZE": "two"}, "malformed"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "out of range"),
    ({"WORLD_SIZE": "0"}, "out of range"),
])
def test_world_rejects_bad_launcher_variables(monkeypatch, env, message):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        distributed.world()


def test_process_device_binds_cuda_to_the_local_rank():
    w = World(rank=5, local_rank=1, size=8)
    assert distributed.process_device("cuda", w) == "cuda:1"
    assert distributed.process_device("cuda:0", w) == "cuda:1"
    assert distributed.process_device("cpu", w) == "cpu"
    assert distributed.process_device("cuda:3", World()) == "cuda:3"  # one process: as configured


def test_prepare_backend_sets_gloo_for_cpu_processes_only(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    distributed.prepare_backend("cuda:0", World(0, 0, 2))
    distributed.prepare_backend("cpu", World())
    assert "ACCELERATE_USE_CPU" not in __import__("os").environ
    distributed.prepare_backend("cpu", World(0, 0, 2))
    assert __import__("os").environ["ACCELERATE_USE_CPU"] == "true"


@pytest.mark.parametrize("family", ["llava_onevision", "llava_video", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_every_wrapper_parent_gets_the_one_process_view_and_it_is_undone(family):
    import importlib

    from hydra.utils import get_class

    from eval.models import WRAPPERS

    cls = get_class(WRAPPERS[family])
    parent = distributed.lmms_parent(cls)
    assert parent.__module__.startswith("lmms_eval.models.")
    module = importlib.import_module(parent.__module__)
    original = module.Accelerator
    with pytest.raises(RuntimeError, match="boom"):
        with distributed.one_process_view(cls) as made:
            view = module.Accelerator()
            assert (view.num_processes, view.local_process_index, view.is_main_process) == (1, 0, True)
            assert view.distributed_type.name == "NO"
            assert made == [view.real]
            assert view.unwrap_model is not None  # everything else is the real accelerator's
            raise RuntimeError("boom")
    assert module.Accelerator is original


def test_lmms_parent_requires_an_lmms_eval_base():
    class Plain:
        pass

    with pytest.raises(TypeError, match="no lmms-eval model class"):
        distributed.lmms_parent(Plain)


def test_merge_rank_rows_tags_ranks_and_drops_padding_repeats():
    # lmms-eval pads the shorter rank with a repeat of its last request (here rank 1 repeats doc 3; an empty rank
    # gets a document of another rank)
    rank0 = [{"task": "t", "doc_id": 0}, {"task": "t", "doc_id": 2}, {"task": "u", "doc_id": 0}]
    rank1 = [{"task": "t", "doc_id": 1}, {"task": "t", "doc_id": 3}, {"task": "t", "doc_id": 3}]
    rank2 = [{"task": "t", "doc_id": 0}]
    merged = distributed.merge_rank_rows([rank0, rank1, rank2])
    assert [(r["task"], r["doc_id"], r["rank"], r["rank_index"]) for r in merged] == [
        ("t", 0, 0, 0), ("t", 2, 0, 1), ("u", 0, 0, 2), ("t", 1, 1, 0), ("t", 3, 1, 1),
    ]
    assert rank0[0] == {"task": "t", "doc_id": 0}  # inputs untouched


def _row(prefill: float, rank: int | None = None, index: int | None = None) -> dict:
    row = {"visual_tokens_in": 10, "visual_tokens_out": 4, "visual_tokens_layer_avg": 4.0, "preprocess_s": 0.0,
           "vision_encoder_s": 0.0, "compression_s": 0.0, "prefill_s": prefill, "decode_s": 0.0, "new_tokens": 1,
           "prompt_tokens_in": 20, "prompt_tokens_out": 14, "generate_s": prefill}
    if rank is not None:
        row.update(rank=rank, rank_index=index)
    return row


def test_summarise_excludes_the_warmup_of_each_process():
    # rank 0: 9.0 (warm-up), 1.0, 3.0; rank 1: 7.0 (warm-up), 2.0 -> measured mean (1 + 3 + 2) / 3 = 2.0
    rows = [_row(9.0, 0, 0), _row(1.0, 0, 1), _row(3.0, 0, 2), _row(7.0, 1, 0), _row(2.0, 1, 1)]
    eff = measure.summarise(rows, warmup=1, total_wall_s=1.0, shape=None, peak=(123, "cuda"))
    assert eff["latency_s"]["prefill"] == pytest.approx(2.0)
    assert (eff["warmup_samples"], eff["measured_samples"]) == (2, 3)
    assert (eff["peak_memory_bytes"], eff["peak_memory_kind"]) == (123, "cuda")
    # rows without ranks: the first `warmup` of the list, as before
    plain = measure.summarise([_row(9.0), _row(1.0), _row(3.0)], warmup=1, total_wall_s=1.0, shape=None)
    assert plain["latency_s"]["prefill"] == pytest.approx(2.0) and plain["warmup_samples"] == 1


def test_gather_without_a_process_group_names_the_launcher(monkeypatch):
    assert distributed.gather_to_main({"a": 1}, World()) == [{"a": 1}]
    with pytest.raises(RuntimeError, match="accelerate launch"):
        distributed.gather_to_main({"a": 1}, World(0, 0, 2))


@pytest.mark.parametrize(("size", "status", "printed"), [(2, 1, True), (1, 3, False)])
def test_fail_fast_exits_at_once_only_under_a_launch(size, status, printed):
    # under a launch the process ends with status 1 even though the caller would catch the exception
    code = textwrap.dedent(f"""
        import sys
        from eval.distributed import World, fail_fast
        try:
            with fail_fast(World(1, 1, {size})):
                raise ValueError("bad video")
        except ValueError:
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == status
    assert ("[rank 1/2] this run failed" in proc.stderr) == printed
    assert ("ValueError: bad video" in proc.stderr) == printed
