"""Generate the tiny offline benchmark videos (deterministic mp4s) into the cache folder.

    python scripts/make_tiny_benchmarks.py [--out DIR] [--force] [--write-docs]

Videos go to ``--out``, default ``$VTC_TINY_DATA`` or ``.cache/tiny_bench/videos`` under the working directory
(where ``python -m eval.run`` looks by default: its ``tiny_data`` key). ``--write-docs`` rewrites the committed doc
JSONs of ``eval/tasks/synthetic_mvbench`` from ``eval/tasks/synthetic_data.py`` (whose test clips go to
``<out>/synthetic/``). The tiny_* benchmarks read the tiny hub instead: ``python -m eval.tinyhub``.
"""

import argparse
from pathlib import Path

from eval.tasks import synthetic_data, tiny_data
from eval.tasks.tiny_utils import data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="video folder (default: $VTC_TINY_DATA or .cache/tiny_bench/videos)")
    ap.add_argument("--force", action="store_true", help="re-encode existing videos")
    ap.add_argument("--write-docs", action="store_true", help="rewrite eval/tasks/synthetic_mvbench/*.json from the spec")
    args = ap.parse_args()
    if args.write_docs:
        for p in synthetic_data.write_docs():
            print(f"[docs] {p}")
    out = Path(args.out).resolve() if args.out else data_dir()
    paths = tiny_data.build(out, force=args.force)
    print(f"[videos] {len(paths)} in {out}")
    synthetic = synthetic_data.build(out, force=args.force)
    print(f"[videos] {len(synthetic)} synthetic in {out / 'synthetic'}")


if __name__ == "__main__":
    main()
