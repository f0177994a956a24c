"""The synthetic benchmark's generator: seeded, disjoint splits, answers that follow from the pixels, committed docs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.tasks import synthetic_data as sd


def _pixels(clip: sd.Clip, colour: str) -> np.ndarray:
    """bool [F, H, W]: where the clip's frames have exactly ``colour``."""
    return (clip.render() == np.array(sd.COLORS[colour], dtype=np.uint8)).all(-1)


def test_deterministic_and_splits_disjoint():
    for task in sd.TASKS:
        assert sd.make_clip(task, "test", 3) == sd.make_clip(task, "test", 3)
        train = {sd.make_clip(task, "train", k).squares for k in range(64)}
        test = {sd.make_clip(task, "test", k).squares for k in range(64)}
        assert not train & test


@pytest.mark.parametrize("k", range(8))
def test_answers_follow_from_the_pixels(k):
    ev = sd.make_clip("event", "test", k)
    per_frame = _pixels(ev, ev.answer).any(axis=(1, 2))
    assert per_frame.tolist() == [f in ev.decisive for f in range(sd.FRAMES)]  # one frame only
    od = sd.make_clip("order", "test", k)
    first = [c for c in sd.COLORS if _pixels(od, c)[od.decisive[0]].any()]
    assert first == [od.answer] and od.decisive[0] < od.decisive[1]
    loc = sd.make_clip("location", "test", k)
    ys, xs = np.nonzero(_pixels(loc, loc.squares[0].color)[0])
    quadrant = 2 * int(ys.min() >= sd.SIZE // 2) + int(xs.min() >= sd.SIZE // 2)
    assert sd.QUADRANTS[quadrant] == loc.answer and (ys.max() < sd.SIZE // 2) == (ys.min() < sd.SIZE // 2)
    ctl = sd.make_clip("control", "test", k)
    assert (ctl.render()[:, 0, 0] == sd.BACKGROUNDS[ctl.answer]).all() or ctl.squares[0].y == 0


def test_committed_docs_match_the_generator_and_answers_are_spread():
    for path, docs in sd.doc_files().items():
        assert json.loads(path.read_text()) == docs, f"{path} is stale: python scripts/make_tiny_benchmarks.py --write-docs"
        letters = {d["candidates"].index(d["answer"]) for d in docs}
        assert len(letters) >= 3  # the gold letter varies


def test_lossless_video_round_trip(tmp_path):
    from eval.models.llava_onevision import sample_frames

    clip = sd.make_clip("event", "test", 0)
    sd.write_mp4(clip.render(), tmp_path / "c.mp4")
    got = sample_frames(str(tmp_path / "c.mp4"), sd.FRAMES)
    assert np.abs(got.astype(int) - clip.render()).max() <= 2
    assert list(tmp_path.iterdir()) == [tmp_path / "c.mp4"]  # no temp debris
