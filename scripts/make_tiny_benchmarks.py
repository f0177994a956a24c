"""Generate the tiny offline benchmark videos (deterministic mp4s) into the cache folder.

    python scripts/make_tiny_benchmarks.py [--force] [--write-docs]

Videos go to ``$VTC_TINY_DATA`` or ``.cache/tiny_bench/videos`` (what the tiny tasks read). ``--write-docs``
rewrites the committed doc JSONs under ``eval/tasks/tiny_*`` from the spec in ``eval/tasks/tiny_data.py``.
"""

import argparse

from eval.tasks import tiny_data
from eval.tasks.tiny_utils import data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="re-encode existing videos")
    ap.add_argument("--write-docs", action="store_true", help="rewrite eval/tasks/tiny_*/*.json from the spec")
    args = ap.parse_args()
    if args.write_docs:
        for p in tiny_data.write_docs():
            print(f"[docs] {p}")
    paths = tiny_data.build(data_dir(), force=args.force)
    print(f"[videos] {len(paths)} in {data_dir()}")


if __name__ == "__main__":
    main()
