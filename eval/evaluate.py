"""One lmms-eval 0.7.3 evaluation of a model instance on the benchmark's tasks, through the Python API.

The CLI is avoided on purpose: it exits 0 after a crash (spec pitfall 1). Here any exception propagates, and a
result without samples for every requested task is an error. Other pinned choices (spec sections 5, 9):
``datetime_str`` is passed (its default is frozen at import), ``process_docs_parallel=1`` (LongVideoBench's random
fallback draw must be reproducible), ``bootstrap_iters=0`` (stderr bootstrap is not used), batch size 1, and the
``TaskManager`` gets the family's prompt key as ``model_name`` (it selects ``lmms_eval_specific_kwargs`` blocks) and
as ``include_path`` either the project's own tasks (``offline: true``: the synthetic benchmark, unique ``synthetic_*``
names, since built-in tasks shadow local ones) or the lmms-eval folders of the built-in tasks.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def run_tasks(lm, tasks: list[str], *, prompt_model: str, limit: int | None, seed: int, offline: bool,
              main: bool = True, max_new_tokens: int | None = None, stratify: str | None = None) -> dict | None:
    """``simple_evaluate`` on ``tasks`` with the model instance ``lm``; returns lmms-eval's result dict.

    ``max_new_tokens`` (the benchmark config's key; None = each task's own setting) caps generation through
    lmms-eval's ``gen_kwargs``, merged into every task's ``generation_kwargs`` (a task YAML without a cap, such as
    PerceptionTest's, otherwise lets a model that never emits EOS generate 1024 tokens per question).

    ``stratify`` (a benchmark kind; ``benchmark.limit_mode=stratified``): ``limit`` takes documents from every stratum
    of each task in turn instead of the first N (:mod:`eval.sampling`).

    Under a data-parallel launch lmms-eval returns the gathered result on rank 0 only: the other ranks
    (``main=False``) get ``None``.
    """
    from lmms_eval.api import task as lmms_task
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    # lmms-eval memoises the datasets cache folder (from HF_HOME) for the whole process: re-read it per evaluation
    getattr(lmms_task._resolve_hf_datasets_cache_dir, "cache_clear", lambda: None)()

    # the project's own tasks need no built-in index (0.01 s instead of ~3 s, and no shadowing possible); built-in tasks of
    # the six video benchmarks are indexed from their own lmms-eval folders only (the same unmodified YAMLs)
    from eval.hubdata import builtin_dirs

    dirs = None if offline else builtin_dirs(tasks)
    if offline or dirs:
        tm = TaskManager(include_path=[str(TASKS_DIR)] if offline else dirs, include_defaults=False,
                         model_name=prompt_model, verbosity="WARNING")
    else:
        tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=True, model_name=prompt_model, verbosity="WARNING")
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise ValueError(f"lmms-eval does not know task(s) {unknown}; the project's own tasks live in {TASKS_DIR}")
    from eval import sampling

    scope = sampling.stratified(stratify, limit) if stratify and limit else contextlib.nullcontext()
    with scope:
        results = _evaluate(simple_evaluate, lm, tasks, tm, limit=limit, seed=seed, max_new_tokens=max_new_tokens)
    if not main:
        return None
    if not results or not results.get("results"):
        raise RuntimeError(f"lmms-eval returned no results for {tasks}")
    samples = results.get("samples") or {}
    empty = [t for t, s in samples.items() if not s]
    if not samples or empty:
        raise RuntimeError(f"lmms-eval produced no samples for {empty or tasks}")
    return results


def _evaluate(simple_evaluate, lm, tasks, tm, *, limit, seed, max_new_tokens):
    return simple_evaluate(
        model=lm,
        tasks=list(tasks),
        limit=limit,
        gen_kwargs=f"max_new_tokens={int(max_new_tokens)}" if max_new_tokens else None,
        batch_size=1,
        task_manager=tm,
        bootstrap_iters=0,
        log_samples=True,
        random_seed=seed,
        datetime_str=datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f"),
        process_docs_parallel=1,
        verbosity="WARNING",
    )
