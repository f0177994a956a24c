"""Fetch a benchmark's annotations and videos through lmms-eval's own task code, then verify every doc's video.

    python -m eval.download benchmark=mvbench            # fetch (resumable) + verify
    python -m eval.download benchmark=mvbench --check    # verify only (no network needed)
    make download BENCH=mvbench

Fetching builds the benchmark's built-in lmms-eval tasks, exactly as a run does: ``ConfigurableTask.download``
``snapshot_download``-s the dataset repository into the hub cache (with progress bars; an interrupted download resumes
from the files already complete) and unpacks its archives into ``$HF_HOME/<cache_dir>``, then
``datasets.load_dataset`` writes the arrow cache an offline run reads. Gated datasets (LongVideoBench) need
``hf auth login`` and the dataset's terms accepted on its hub page first. Verification resolves each doc's video with
the task's own ``doc_to_visual`` and decodes its first frame (PyAV); it exits non-zero naming the first failures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> dict:
    from omegaconf import OmegaConf

    path = ROOT / "conf" / "benchmark" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.yaml") if not p.stem.startswith("tiny_"))
        raise SystemExit(f"benchmark={name}: no conf/benchmark/{name}.yaml; choices: {', '.join(names)}")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if raw.get("tiny"):
        raise SystemExit(f"benchmark={name} reads the generated tiny hub, nothing to download: `python -m eval.tinyhub` "
                         "(make tiny-hub) writes it")
    if raw.get("offline"):
        raise SystemExit(f"benchmark={name} is a generated offline benchmark: `python scripts/make_tiny_benchmarks.py` makes it")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def leaf_tasks(tasks: list[str], prompt_model: str = "default") -> dict:
    """``{task name: lmms-eval task object}`` of ``tasks`` (groups expanded); building them fetches missing data."""
    from lmms_eval.api import task as lmms_task
    from lmms_eval.tasks import TaskManager, get_task_dict

    from eval.hubdata import builtin_dirs

    getattr(lmms_task._resolve_hf_datasets_cache_dir, "cache_clear", lambda: None)()  # memoised from HF_HOME

    dirs = builtin_dirs(tasks)
    tm = TaskManager(include_path=dirs, include_defaults=dirs is None, model_name=prompt_model, verbosity="WARNING")
    out: dict = {}

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            else:
                out[getattr(k, "task_name", None) or str(k)] = v

    walk(get_task_dict(list(tasks), tm))
    return out


def decodes(path: str) -> str | None:
    """None when ``path`` is a video whose first frame decodes, else the reason."""
    import av

    if not Path(path).is_file():
        return "missing"
    try:
        with av.open(path) as f:
            next(f.decode(video=0))
    except (av.error.FFmpegError, StopIteration, OSError) as e:
        return f"undecodable ({type(e).__name__})"
    return None


def verify(tasks: dict) -> list[str]:
    """``"<task> doc <i>: <path>: <reason>"`` for every doc whose video does not resolve or decode."""
    bad = []
    for name, task in tasks.items():
        for i, doc in enumerate(task.eval_docs):
            try:
                paths = task.doc_to_visual(doc)
            except SystemExit as e:  # several task utils sys.exit on a missing video
                bad.append(f"{name} doc {i}: {e}")
                continue
            for p in paths if isinstance(paths, list) else [paths]:
                why = decodes(str(p)) if isinstance(p, (str, Path)) else None
                if why:
                    bad.append(f"{name} doc {i}: {p}: {why}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benchmark", help="benchmark=<conf/benchmark name>")
    ap.add_argument("--check", action="store_true", help="only verify that every doc's video resolves and decodes")
    args = ap.parse_args(argv)
    name = args.benchmark.removeprefix("benchmark=")
    from eval import hubdata, validate

    home = hubdata.resolve_hf_home()
    bench = load_benchmark(name)
    if args.check or hubdata.offline():
        try:
            validate.check_data(bench)
        except validate.ConfigError as e:
            print(f"[check] {e}", file=sys.stderr)
            return 1
    else:
        validate.check_data(bench)  # prints what will be fetched, and where
    print(f"[data] HF_HOME={home}; building lmms-eval tasks {list(bench['tasks'])}")
    try:
        tasks = leaf_tasks(list(bench["tasks"]))
    except Exception as e:  # noqa: BLE001 - the hub's errors differ by cause; all end here with the fix
        gated = [d for d in hubdata.GATED if d == bench.get("dataset")]
        hint = (f" {gated[0]} is gated: `hf auth login`, accept its terms on https://huggingface.co/datasets/{gated[0]}, rerun."
                if gated else " Rerun online (unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); downloads resume.")
        print(f"[download] {name} failed: {type(e).__name__}: {e}.{hint}", file=sys.stderr)
        return 1
    bad = verify(tasks)
    n = sum(len(t.eval_docs) for t in tasks.values())
    if bad:
        print(f"[check] {name}: {len(bad)} of {n} docs have no readable video, e.g.\n  " + "\n  ".join(bad[:5]), file=sys.stderr)
        if bench["kind"] == "mvbench":  # videos left under data0613/ (lmms-eval's fallback never runs)
            for fix in hubdata.mvbench_data0613(home / bench["media_dir"]):
                print(f"[check] {fix}", file=sys.stderr)
        return 1
    print(f"[check] {name}: all {n} docs of {len(tasks)} task(s) resolve to a decodable video under {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
