"""Build the tiny random-weight checkpoints of every supported architecture (offline, seconds each).

    python scripts/make_tiny_models.py [--out .cache/tiny_models] [--force]

Writes ``<out>/<arch>/`` (model, processor, tokenizer; ``from_pretrained``-loadable) with
``vidcom2.testing.tiny.save``. Real architectures and tokens per frame, shrunk sizes, random weights: accuracy
means nothing, token counts and timings do.
"""

import argparse
from pathlib import Path

from vidcom2.testing import tiny


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".cache/tiny_models")
    ap.add_argument("--force", action="store_true", help="rebuild existing checkpoints")
    ap.add_argument("--arch", action="append", choices=tiny.ARCHS, help="only these (repeatable); default all")
    args = ap.parse_args()
    for arch in args.arch or tiny.ARCHS:
        path = Path(args.out) / arch
        if (path / "tiny_model.json").exists() and not args.force:
            print(f"[skip] {path}")
            continue
        tiny.save(arch, path)
        print(f"[built] {path}")


if __name__ == "__main__":
    main()
