"""``doc_to_visual`` of the project's own MVBench-format tasks (``synthetic_mvbench``): a doc's video in the cache.

The videos are generated (``python scripts/make_tiny_benchmarks.py``) into :func:`data_dir`; a missing video raises
``FileNotFoundError`` naming the command that makes it (lmms-eval's own MVBench loader only logs a missing video,
pitfall 8 of the spec, so these tasks never rely on it). Prompts and scoring are lmms-eval's own functions,
referenced from the task YAMLs. (The tiny_* benchmarks use lmms-eval's built-in tasks on the tiny hub instead.)
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "VTC_TINY_DATA"
DEFAULT = Path(".cache") / "tiny_bench" / "videos"


def data_dir() -> Path:
    """Folder of the tiny videos: ``$VTC_TINY_DATA`` if set, else ``.cache/tiny_bench/videos`` under the working
    directory (like the tiny checkpoints; ``python -m eval.run`` sets the variable from its ``tiny_data`` key)."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT).resolve()


def video_path(name: str) -> str:
    path = data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"tiny benchmark video {path} is missing: generate the tiny videos with "
            f"`python scripts/make_tiny_benchmarks.py` (or `make demo`); ${ENV_VAR} overrides the folder"
        )
    return str(path)


def mvbench_doc_to_visual(doc, lmms_eval_specific_kwargs=None):
    return [video_path(doc["video"])]
