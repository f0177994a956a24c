"""The synthetic video benchmark ``synthetic_mvbench``: seeded clips whose answers live in a few visual tokens.

A probe of the mechanisms a token-compression method relies on, not a proxy for any real benchmark's score. Every
clip is :data:`FRAMES` frames of :data:`SIZE` px on a plain background (one of :data:`BACKGROUNDS`); objects are
axis-aligned squares in one of :data:`COLORS`. Four task types (MVBench format: ``video/question/candidates/answer``,
4 candidates in a fixed order per task, letter answers), each with a purpose:

- ``event``: one square flashes in ONE frame (what colour appeared?). Lives in ~2-4 of the clip's 256 tokens of one
  frame: a method must give a distinctive frame its budget (VidCom2's frame uniqueness) and keep its odd tokens.
- ``location``: one small static square in every frame, in one quadrant (where is it?). Needs a kept token of the
  object and the spatial information its features carry.
- ``order``: two squares of different colours flash in two different frames (which colour came first?). Needs both
  events kept and their temporal order (sequence positions) preserved.
- ``control``: the background colour (what colour is the background?): spread over every token of the clip, so it
  should survive any compression; a method that loses it is broken, not merely lossy.

Splits come from disjoint seeds: clip ``k`` of task ``t`` in split ``s`` is drawn from
``np.random.default_rng([SPLIT_IDS[s], TASK_IDS[t], k])`` (train/val for ``scripts/train_tiny.py``; test is the
benchmark). ``scale`` (>= 1) enlarges the objects (the training curriculum starts large). Videos are lossless H.264
(``yuv444p``, crf 0: decoded frames differ from the rendered ones by at most 1 level), written into the tiny-data
cache (:func:`eval.tasks.tiny_utils.data_dir`) ``/synthetic/`` by ``python scripts/make_tiny_benchmarks.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASKS_DIR = Path(__file__).resolve().parent
GROUP = "synthetic_mvbench"
SIZE = 224  # px: SigLIP 14-px patches -> 16 x 16 -> LLaVA-OV 2x2 pooling -> 8 x 8 = 64 tokens per frame
FRAMES = 4
FPS = 4
TEST_PER_TASK = 16
COLORS = {"red": (230, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 240), "yellow": (240, 220, 30)}
BACKGROUNDS = {"black": (15, 15, 15), "white": (235, 235, 235), "grey": (125, 125, 125), "brown": (110, 70, 35)}
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
TASKS = ("event", "location", "order", "control")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
TASK_IDS = {t: i for i, t in enumerate(TASKS)}
QUESTIONS = {
    "event": "A small square appears in only one frame. What colour is it?",
    "location": "Where is the small square?",
    "order": "Two small squares appear one after the other. What colour is the one that appears first?",
    "control": "What colour is the background?",
}
CANDIDATES = {"event": list(COLORS), "location": list(QUADRANTS), "order": list(COLORS), "control": list(BACKGROUNDS)}
VERSION = 2  # in the video names: a cache of clips drawn by an earlier generator is never reused
SIDE = (36, 48)  # object side in px at scale 1: a pooled token covers 28 x 28 px, so >= 56% of one token, 2-4 tokens


@dataclass(frozen=True)
class Square:
    frames: tuple[int, ...]
    y: int
    x: int
    side: int
    color: str


@dataclass(frozen=True)
class Clip:
    """One sample: its frames' content, the question's task type and the gold candidate."""

    task: str
    name: str
    background: str
    squares: tuple[Square, ...]
    answer: str
    decisive: tuple[int, ...]  # frames whose removal removes the answer (all frames for location/control)
    frames: int = FRAMES

    def render(self) -> np.ndarray:
        """``uint8 [frames, SIZE, SIZE, 3]``."""
        out = np.empty((self.frames, SIZE, SIZE, 3), dtype=np.uint8)
        out[:] = BACKGROUNDS[self.background]
        for s in self.squares:
            for f in s.frames:
                out[f, s.y : s.y + s.side, s.x : s.x + s.side] = COLORS[s.color]
        return out

    def doc(self) -> dict:
        return {"video": self.name, "question": QUESTIONS[self.task], "candidates": CANDIDATES[self.task],
                "answer": self.answer, "decisive_frames": list(self.decisive)}


def _square(rng, frames, color, scale, quadrant=None) -> Square:
    side = int(min(SIZE // 2 - 8, round(rng.integers(SIDE[0], SIDE[1] + 1) * scale)))
    if quadrant is None:
        y, x = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
    else:  # inside the quadrant, 8 px from the centre lines so the answer is never ambiguous
        half = SIZE // 2
        qy, qx = divmod(quadrant, 2)
        y = int(rng.integers(0, half - side - 8 + 1)) + (half + 8 if qy else 0)
        x = int(rng.integers(0, half - side - 8 + 1)) + (half + 8 if qx else 0)
    return Square(tuple(int(f) for f in frames), y, x, side, color)


def make_clip(task: str, split: str, k: int, scale: float = 1.0, frames: int = FRAMES) -> Clip:
    """Clip ``k`` of ``task`` in ``split`` (deterministic in its indices, ``scale`` and ``frames``; the benchmark's
    clips have :data:`FRAMES` frames, the training curriculum starts with fewer)."""
    if task not in TASK_IDS or split not in SPLIT_IDS:
        raise ValueError(f"unknown task {task!r} or split {split!r}: tasks {TASKS}, splits {tuple(SPLIT_IDS)}")
    rng = np.random.default_rng([SPLIT_IDS[split], TASK_IDS[task], int(k)])
    colors, backgrounds = list(COLORS), list(BACKGROUNDS)
    background = backgrounds[int(rng.integers(4))]
    name = f"synthetic/v{VERSION}/{split}_{task}_{k:04d}_{frames}f.mp4"
    if task == "event":
        f, c = int(rng.integers(frames)), colors[int(rng.integers(4))]
        return Clip(task, name, background, (_square(rng, [f], c, scale),), c, (f,), frames)
    if task == "location":
        q, c = int(rng.integers(4)), colors[int(rng.integers(4))]
        sq = _square(rng, range(frames), c, scale, quadrant=q)
        return Clip(task, name, background, (sq,), QUADRANTS[q], tuple(range(frames)), frames)
    if task == "order":
        f1, f2 = sorted(int(v) for v in rng.choice(frames, size=2, replace=False))
        c1, c2 = (colors[int(i)] for i in rng.choice(4, size=2, replace=False))
        sq = (_square(rng, [f1], c1, scale), _square(rng, [f2], c2, scale))
        return Clip(task, name, background, sq, c1, (f1, f2), frames)
    # control: a distractor square in some frames so the clip is not blank
    c = colors[int(rng.integers(4))]
    sq = _square(rng, sorted(int(v) for v in rng.choice(frames, size=min(3, frames), replace=False)), c, scale)
    return Clip(task, name, background, (sq,), background, tuple(range(frames)), frames)


def write_mp4(frames: np.ndarray, path: Path) -> None:
    """Lossless H.264 (``yuv444p``, crf 0) at :data:`FPS`, written atomically (the tiny benchmarks' writer)."""
    from eval.tasks.tiny_data import write_mp4 as write

    write(frames, path, fps=FPS, lossless=True)


def test_clips(per_task: int = TEST_PER_TASK) -> dict[str, list[Clip]]:
    return {t: [make_clip(t, "test", k) for k in range(per_task)] for t in TASKS}


def doc_files() -> dict[Path, list[dict]]:
    """The committed test-split docs: ``eval/tasks/synthetic_mvbench/<task>.json``."""
    return {TASKS_DIR / GROUP / f"{t}.json": [c.doc() for c in clips] for t, clips in test_clips().items()}


def write_docs() -> list[Path]:
    for path, docs in doc_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(docs, indent=1, sort_keys=True) + "\n")
    return list(doc_files())


def build(video_dir: Path, force: bool = False) -> list[Path]:
    """Write every test clip under ``video_dir`` (skips existing files unless ``force``); returns the paths."""
    paths = []
    for clips in test_clips().values():
        for clip in clips:
            path = Path(video_dir) / clip.name
            if force or not path.exists():
                write_mp4(clip.render(), path)
            paths.append(path)
    return paths
