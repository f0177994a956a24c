"""``python -m eval.tinyhub``: write the tiny hub (default ``.cache/tiny_hub``) and print how to use it."""

import argparse

from eval.tinyhub.build import DEFAULT, build
from eval.tinyhub.specs import DATASETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT), help="the tiny HF_HOME (default .cache/tiny_hub)")
    ap.add_argument("--only", nargs="*", choices=list(DATASETS), help="benchmarks to write (default all)")
    ap.add_argument("--no-unpack", action="store_true", help="leave the videos in the hub snapshot archives only")
    args = ap.parse_args()
    home = build(args.out, args.only, unpack=not args.no_unpack)
    print(f"[tiny hub] {home}  (run with HF_HOME={home} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1)")


if __name__ == "__main__":
    main()
