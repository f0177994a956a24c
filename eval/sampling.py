"""Which documents a ``limit`` evaluates: lmms-eval's first N of every task, or N spread over the task's strata.

lmms-eval 0.7.3 applies ``limit`` as the first N documents of each task (``Task.doc_iterator``). Where a dataset is
sorted by a field the tables break down by, that distorts a quick run: VideoMME's test split lists every short
video before the medium and long ones, so ``limit=20`` evaluates short videos only and its medium / long columns
are empty (the headline is a short-video score). ``+benchmark.limit_mode=stratified`` instead takes the first
document of each stratum in turn (round robin in document order, strata in order of first appearance) until N are
chosen, per task: VideoMME by ``duration``, MLVU by ``task_type``, LongVideoBench by ``duration_group``,
PerceptionTest by ``area``. MVBench's subtasks are separate tasks (``limit`` already applies to each) and EgoSchema
defines no breakdown: there ``stratified`` takes the first N, as ``first`` does. The mode is a key of the benchmark
config, so it is part of the run's identity (a stratified and a first-N run never share a record); absent, the
default ``first`` keeps the identity of runs made before the option existed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

LIMIT_MODES = ("first", "stratified")
#: doc field each benchmark kind is stratified by (the field its accuracy breakdown reads)
STRATA = {"videomme": "duration", "mlvu": "task_type", "longvideobench": "duration_group", "perceptiontest": "area"}


def limit_mode(bench: dict) -> str:
    return bench.get("limit_mode") or "first"


def limit_mode_problem(bench: dict, limit) -> str | None:
    """The one-line refusal of an unknown mode, or of ``stratified`` without a ``limit`` (it would change nothing);
    None when the setting is fine. The runner raises it as a configuration error before anything loads."""
    mode = limit_mode(bench)
    if mode not in LIMIT_MODES:
        return (f"benchmark.limit_mode={mode!r} is not one of {', '.join(LIMIT_MODES)}; use "
                "+benchmark.limit_mode=stratified (the first docs of every stratum in turn) or leave it unset")
    if mode == "stratified" and limit is None:
        return ("benchmark.limit_mode='stratified' without a limit selects every doc anyway; set limit=N "
                "or drop +benchmark.limit_mode")
    return None


def stratified_indices(values: list, limit: int) -> list[int]:
    """Indices of ``limit`` documents taken round robin over the strata of ``values`` (document order kept within
    and between strata), sorted; all of them when there are fewer."""
    strata: dict = {}
    for i, v in enumerate(values):
        strata.setdefault(str(v), []).append(i)
    queues = list(strata.values())
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        chosen += [q[depth] for q in queues if depth < len(q)][: limit - len(chosen)]
        depth += 1
    return sorted(chosen)


def _leaves(task_dict: dict) -> Iterator:
    for value in task_dict.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        elif isinstance(value, tuple):
            if value[1] is not None:
                yield value[1]
        elif value is not None:
            yield value


def restrict(task_dict: dict, kind: str, limit: int) -> None:
    """Keep only the stratified selection in every leaf task's evaluation split (``dataset`` and its media-free
    copy: the model reads ``dataset[split][doc_id]``, so both stay aligned with the docs lmms-eval iterates)."""
    field = STRATA.get(kind)
    for task in _leaves(task_dict):
        split = task.config.test_split if task.has_test_docs() else task.config.validation_split
        docs = task.dataset[split]
        keep = stratified_indices([d.get(field) for d in docs] if field else [0] * len(docs), limit)
        task.dataset[split] = docs.select(keep)
        no_media = getattr(task, "dataset_no_image", None)
        if no_media is not None and split in no_media:
            no_media[split] = no_media[split].select(keep)


@contextlib.contextmanager
def stratified(kind: str, limit: int):
    """Within the block, lmms-eval's evaluator builds its tasks and then keeps the stratified selection of each."""
    from lmms_eval import evaluator

    from vidcom2.hooks import scoped_item

    original = evaluator.get_task_dict

    def get_task_dict(*args, **kwargs):
        task_dict = original(*args, **kwargs)
        restrict(task_dict, kind, limit)
        return task_dict

    with scoped_item(vars(evaluator), "get_task_dict", get_task_dict):
        yield
