"""The tiny offline benchmark: deterministic data, real lmms-eval tasks, and the accuracy breakdowns.

Scores come from lmms-eval's own scoring run on a constant-answer model (lmms-eval's ``dummy``); the expected
values are computed here from the committed docs (gold letters by hand-written rules), not by :mod:`eval.accuracy`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.tasks import tiny_data

ROOT = tiny_data.TASKS_DIR


def docs(name: str) -> list[dict]:
    return json.loads((ROOT / name).read_text())


def test_committed_docs_match_the_spec():
    for path, content in tiny_data.doc_files().items():
        assert path.read_text() == tiny_data.dumps(content), f"{path} is stale: python scripts/make_tiny_benchmarks.py --write-docs"


def test_videos_are_deterministic_real_mp4(tmp_path):
    import av

    clip = tiny_data.CLIPS["clip01.mp4"]
    a, b = clip.render(), clip.render()
    assert a.shape == (clip.frames, tiny_data.SIZE, tiny_data.SIZE, 3) and np.array_equal(a, b)
    assert not np.array_equal(a[0], a[-1])  # the shapes move
    tiny_data.write_mp4(a, tmp_path / "c.mp4")
    with av.open(str(tmp_path / "c.mp4")) as f:
        decoded = np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
    assert decoded.shape == a.shape
    assert np.abs(decoded.astype(int) - a.astype(int)).mean() < 4  # lossy codec, same picture


def _gold(doc: dict) -> str:
    if "candidates" in doc:
        return "ABCDE"[doc["candidates"].index(doc["answer"])]
    if "correct_choice" in doc:
        return "ABCDE"[doc["correct_choice"]]
    return doc["answer"]


def _pct(xs):
    return 100.0 * sum(xs) / len(xs)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The tiny videos in a temp folder, found by the tasks through $VTC_TINY_DATA (restored after the module)."""
    folder = tmp_path_factory.mktemp("tiny_videos")
    tiny_data.build(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTC_TINY_DATA", str(folder))
        yield folder


@pytest.fixture(scope="module")
def dummy_results(videos):
    from lmms_eval.models.simple.dummy import Dummy

    from eval.evaluate import run_tasks

    lm = Dummy(response="D")
    return {t: run_tasks(lm, [t], prompt_model="dummy", limit=None, seed=0, offline=True)
            for t in ("tiny_mvbench", "tiny_videomme", "tiny_longvideobench", "tiny_mlvu")}


def test_mvbench_subtasks_and_mean(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("mvbench", dummy_results["tiny_mvbench"], ["tiny_mvbench"])
    expect = {sub: _pct([_gold(d) == "D" for d in docs(f"tiny_mvbench/{sub}.json")]) for sub in ("moving_direction", "moving_count")}
    assert acc["breakdown"] == pytest.approx(expect)
    assert acc["headline"] == pytest.approx(sum(expect.values()) / 2)
    assert acc["unparsable"] == 0 and acc["metric"] == "mvbench_accuracy"


def test_videomme_duration_breakdown(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("videomme", dummy_results["tiny_videomme"], ["tiny_videomme"])
    d = docs("tiny_videomme/docs.json")
    assert acc["breakdown"] == pytest.approx({x["duration"]: 100.0 * (_gold(x) == "D") for x in d})
    assert acc["headline"] == pytest.approx(_pct([_gold(x) == "D" for x in d]))


def test_longvideobench_on_0_100_scale_with_groups(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("longvideobench", dummy_results["tiny_longvideobench"], ["tiny_longvideobench"])
    d = docs("tiny_longvideobench/docs.json")
    assert acc["headline"] == pytest.approx(_pct([_gold(x) == "D" for x in d]))
    assert acc["breakdown"] == pytest.approx({str(x["duration_group"]): 100.0 * (_gold(x) == "D") for x in d})


def test_mlvu_mean_over_task_types(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("mlvu", dummy_results["tiny_mlvu"], ["tiny_mlvu"])
    d = docs("tiny_mlvu/docs.json")
    per_type = {x["task_type"]: 100.0 * (_gold(x) == "D") for x in d}
    assert len(per_type) == 7
    assert acc["breakdown"] == pytest.approx(per_type)
    assert acc["headline"] == pytest.approx(sum(per_type.values()) / 7)


def test_unparsable_answers_are_counted(videos):
    from lmms_eval.models.simple.dummy import Dummy

    from eval.accuracy import summarise
    from eval.evaluate import run_tasks

    res = run_tasks(Dummy(response="no idea"), ["tiny_videomme"], prompt_model="dummy", limit=None, seed=0, offline=True)
    acc = summarise("videomme", res, ["tiny_videomme"])
    assert acc["unparsable"] == 3 and acc["headline"] == 0.0


def test_missing_video_names_the_fix(tmp_path, monkeypatch):
    from eval.tasks import tiny_utils

    monkeypatch.setenv(tiny_utils.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make_tiny_benchmarks.py"):
        tiny_utils.mvbench_doc_to_visual({"video": "clip00.mp4"})
