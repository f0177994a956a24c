"""The tiny benchmark data: deterministic synthetic videos and docs in each real benchmark's format.

Every video is a few coloured shapes moving in straight lines over a plain background, written as H.264 mp4 with
PyAV. Everything (shape, colour, direction, count, frame count) follows from a fixed spec below, so two runs of
:func:`build` produce the same docs and frame content. The docs carry exactly the fields lmms-eval 0.7.3's own
prompt and scoring functions read (MVBench ``video/question/candidates/answer``; VideoMME ``videoID/duration/
domain/sub_category/task_type/options/answer``; LongVideoBench ``video_path/option0..4/correct_choice/
duration_group/question_category``; MLVU dev ``video_name/question/answer/task_type``).

The tiny hub (:mod:`eval.tinyhub`) serves these docs and clips to lmms-eval's built-in tasks in each dataset's hub
layout (``benchmark=tiny_*``); ``python scripts/make_tiny_benchmarks.py`` also writes the clips into the cache folder
(:func:`eval.tasks.tiny_utils.data_dir`), next to the synthetic benchmark's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 128  # px, square; even (H.264 4:2:0 needs even sides)
FPS = 8
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SHAPES = ("square", "circle")


@dataclass(frozen=True)
class Clip:
    """One synthetic video: ``count`` shapes of one kind and colour moving in ``direction``."""

    name: str
    frames: int
    shape: str
    color: str
    direction: str
    count: int
    background: int = 235  # grey level

    def render(self) -> np.ndarray:
        """Frames ``uint8 [T, SIZE, SIZE, 3]``; shape i starts on a fixed lane and moves 3 px per frame."""
        t = np.arange(self.frames)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        out = np.full((self.frames, SIZE, SIZE, 3), self.background, dtype=np.uint8)
        dx, dy = DIRECTIONS[self.direction]
        r = 10
        for i in range(self.count):
            lane = (i + 1) * SIZE // (self.count + 1)
            start = SIZE // 2 - dx * 36 - dy * 36  # centred path, 3 px/frame, wraps inside the frame
            for k in t:
                cx = lane if dx == 0 else (start + dx * 3 * k) % SIZE
                cy = lane if dy == 0 else (start + dy * 3 * k) % SIZE
                if self.shape == "square":
                    mask = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
                else:
                    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
                out[k][mask] = COLORS[self.color]
        return out


def write_mp4(frames: np.ndarray, path: Path, *, fps: int = FPS, lossless: bool = False) -> None:
    """Encode ``uint8 [T, H, W, 3]`` RGB frames as H.264 at ``fps``: ``yuv420p`` crf 18, or ``lossless`` (``yuv444p``,
    crf 0). Written atomically: a unique temp file in the target folder, then replace (none is left on failure)."""
    import os
    import tempfile

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
            stream.options = {"crf": "0" if lossless else "18", "preset": "veryfast", "threads": "1"}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _clips() -> list[Clip]:
    """The fixed clip list: 16 to 32 frames, every colour, direction and count 1-3 represented."""
    colors, dirs = list(COLORS), list(DIRECTIONS)
    clips = []
    for i in range(8):
        clips.append(
            Clip(
                name=f"clip{i:02d}.mp4",
                frames=(16, 24, 32)[i % 3],
                shape=SHAPES[i % 2],
                color=colors[i % 4],
                direction=dirs[(i * 3) % 4],
                count=1 + i % 3,
            )
        )
    return clips


CLIPS = {c.name: c for c in _clips()}
LETTERS = "ABCDE"


def _rotate(options: list[str], shift: int) -> list[str]:
    """Options rotated by ``shift`` so the gold letter varies across docs (deterministic)."""
    k = shift % len(options)
    return options[k:] + options[:k]


def _direction_q(c: Clip) -> tuple[str, list[str], str]:
    return f"In which direction do the {c.color} {c.shape}s move?", list(DIRECTIONS), c.direction


def _count_q(c: Clip) -> tuple[str, list[str], str]:
    return f"How many {c.shape}s are in the video?", ["1", "2", "3", "4"], str(c.count)


def _color_q(c: Clip) -> tuple[str, list[str], str]:
    return f"What colour are the moving {c.shape}s?", list(COLORS), c.color


def mvbench_docs() -> dict[str, list[dict]]:
    """Two MVBench subtasks (real subtask names) of two docs each: ``{sub_task: [doc, ...]}``."""
    out: dict[str, list[dict]] = {}
    for sub, make, names in (
        ("moving_direction", _direction_q, ["clip00.mp4", "clip01.mp4"]),
        ("moving_count", _count_q, ["clip02.mp4", "clip03.mp4"]),
    ):
        docs = []
        for j, name in enumerate(names):
            q, opts, ans = make(CLIPS[name])
            docs.append({"video": name, "question": q, "candidates": _rotate(opts, 3 * j + 1), "answer": ans})
        out[sub] = docs
    return out


def videomme_docs() -> list[dict]:
    """Three VideoMME docs, one per duration class; categories from lmms-eval's hard-coded lists."""
    docs = []
    for j, (name, duration) in enumerate((("clip04.mp4", "short"), ("clip05.mp4", "medium"), ("clip06.mp4", "long"))):
        q, opts, ans = _color_q(CLIPS[name])
        opts = _rotate(opts, 3 * j + 1)
        docs.append(
            {
                "video_id": f"{j:03d}",
                "duration": duration,
                "domain": "Knowledge",
                "sub_category": "Astronomy",
                "url": "",
                "videoID": name.removesuffix(".mp4"),
                "question_id": f"{j:03d}-1",
                "task_type": "Attribute Perception",
                "question": q,
                "options": [f"{LETTERS[i]}. {o}" for i, o in enumerate(opts)],
                "answer": LETTERS[opts.index(ans)],
            }
        )
    return docs


def longvideobench_docs() -> list[dict]:
    """Four LongVideoBench docs, one per duration group (15/60/600/3600 s), 4 options + one ``N/A``."""
    docs = []
    for j, (name, group) in enumerate(zip(("clip00.mp4", "clip03.mp4", "clip05.mp4", "clip07.mp4"), (15, 60, 600, 3600))):
        c = CLIPS[name]
        q, opts, ans = (_direction_q, _count_q)[j % 2](c)
        opts = _rotate(opts, 3 * j + 1)
        doc = {
            "video_path": name,
            "subtitle_path": "",
            "duration": c.frames / FPS,
            "duration_group": group,
            "starting_timestamp_for_subtitles": 0,
            "question": q,
            "correct_choice": opts.index(ans),
            "id": f"tiny_lvb_{j}",
            "question_category": ("S2E", "O2E")[j % 2],
        }
        doc.update({f"option{i}": (opts[i] if i < len(opts) else "N/A") for i in range(5)})
        docs.append(doc)
    return docs


#: MLVU dev's seven task types (``mlvu_aggregate_results_dev`` averages over all seven, so all must be present).
MLVU_TYPES = ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")


def mlvu_docs() -> list[dict]:
    """Seven MLVU dev docs, one per task type; options are inlined in the question as in MLVU_dev."""
    docs = []
    for j, task_type in enumerate(MLVU_TYPES):
        name = f"clip{j:02d}.mp4"
        q, opts, ans = (_direction_q, _count_q, _color_q)[j % 3](CLIPS[name])
        opts = _rotate(opts, 3 * j + 1)
        body = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(opts))
        docs.append({"video_name": name, "question": f"{q}\n{body}", "answer": LETTERS[opts.index(ans)], "task_type": task_type})
    return docs


def build(video_dir: Path, force: bool = False) -> list[Path]:
    """Write every clip to ``video_dir`` (skips existing files unless ``force``); returns the video paths."""
    paths = []
    for clip in CLIPS.values():
        path = Path(video_dir) / clip.name
        if force or not path.exists():
            write_mp4(clip.render(), path)
        paths.append(path)
    return paths
