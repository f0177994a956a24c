"""``python -m eval.tinyhub``: write the tiny hub (default ``.cache/tiny_hub``) and print how to use it.

A complete hub built from the current spec (its marker says so) is left as it is; ``--force`` rewrites it.
"""

import argparse

from eval.tinyhub.build import DEFAULT, build, ensure
from eval.tinyhub.specs import DATASETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT), help="the tiny HF_HOME (default .cache/tiny_hub)")
    ap.add_argument("--only", nargs="*", choices=list(DATASETS), help="benchmarks to write (default all)")
    ap.add_argument("--no-unpack", action="store_true", help="leave the videos in the hub snapshot archives only")
    ap.add_argument("--force", action="store_true", help="rewrite a hub that is already complete and current")
    args = ap.parse_args()
    if args.force or args.only or args.no_unpack:
        home = build(args.out, args.only, unpack=not args.no_unpack)
    else:
        home = ensure(args.out)
    print(f"[tiny hub] {home}  (benchmark=tiny_<name> reads it: the root key tiny_hub, $VTC_TINY_HUB or "
          f"<cache_dir>/tiny_hub)")


if __name__ == "__main__":
    main()
