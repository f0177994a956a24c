"""Build the tiny random-weight checkpoints of every supported architecture (offline, seconds each).

    python scripts/make_tiny_models.py [--out .cache/tiny_models] [--force]

Writes ``<out>/<arch>/`` (model, processor, tokenizer; ``from_pretrained``-loadable) with
``vidcom2.testing.tiny.save``; the Qwen3-VL-MoE one goes to ``<out>/qwen3_vl_moe-A3B/`` because lmms-eval 0.7.3 picks
the MoE class from the checkpoint name (as in Qwen3-VL-30B-A3B). Real architectures and tokens per frame, shrunk
sizes, random weights: accuracy means nothing, token counts and timings do.
"""

import argparse
import json
from pathlib import Path

from vidcom2.testing import tiny

# arch -> folder name where it is not the arch itself (see the module docstring)
FOLDERS = {"qwen3_vl_moe": "qwen3_vl_moe-A3B"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".cache/tiny_models")
    ap.add_argument("--force", action="store_true", help="rebuild existing checkpoints")
    ap.add_argument("--arch", action="append", choices=tiny.ALL_ARCHS, help="only these (repeatable); default all")
    args = ap.parse_args()
    for arch in args.arch or tiny.ALL_ARCHS:
        path = Path(args.out) / FOLDERS.get(arch, arch)
        manifest = path / "tiny_model.json"
        current = manifest.exists() and json.loads(manifest.read_text()) == tiny.manifest(arch)
        if current and not args.force:
            print(f"[skip] {path}")
            continue
        tiny.save(arch, path)
        print(f"[built] {path}")


if __name__ == "__main__":
    main()
