"""The tiny benchmarks: lmms-eval's BUILT-IN tasks on the generated tiny hub, deterministic data, the breakdowns.

Every ``conf/benchmark/tiny_*.yaml`` runs unmodified built-in task code (no project task YAML stands in for one).
Scores come from lmms-eval's own scoring run on a constant-answer model (lmms-eval's ``dummy``, answer "B"); the
expected values are computed here from the hub's doc spec (gold letters by hand-written rules), not by
:mod:`eval.accuracy`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from eval.tasks import tiny_data
from eval.tinyhub import build as hub

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("mvbench", "videomme", "longvideobench", "mlvu", "egoschema", "perceptiontest")
ANSWER = "B"


def bench(kind: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "benchmark" / f"tiny_{kind}.yaml").read_text())


def _gold(doc: dict) -> str:
    """The gold letter of a doc, by each dataset's own field convention."""
    if "candidates" in doc:  # MVBench: the answer is a candidate's text
        return "ABCDE"[doc["candidates"].index(doc["answer"])]
    if "correct_choice" in doc:  # LongVideoBench: an index
        return "ABCDE"[doc["correct_choice"]]
    if "answer_id" in doc:  # PerceptionTest: an index
        return "ABCDE"[doc["answer_id"]]
    if "option" in doc:  # EgoSchema: an index as text
        return "ABCDE"[int(doc["answer"])]
    return doc["answer"]  # VideoMME, MLVU: the letter


def _pct(xs):
    return 100.0 * sum(xs) / len(xs)


@pytest.fixture(scope="module")
def dummy_results():
    """``{kind: simple_evaluate result}`` of every tiny benchmark's tasks, with HF_HOME = the shared tiny hub."""
    from lmms_eval.models.simple.dummy import Dummy

    from eval.evaluate import run_tasks
    from eval.hubdata import use_hf_home

    lm = Dummy(response=ANSWER)
    with use_hf_home(hub.ensure(ROOT / ".cache" / "tiny_hub")):
        return {k: run_tasks(lm, bench(k)["tasks"], prompt_model="dummy", limit=None, seed=0, offline=False) for k in KINDS}


def test_tiny_benchmarks_name_builtin_tasks_only():
    """The grep of issue 12's "Done when": no project task YAML defines a task of the six benchmarks' names, and
    every tiny benchmark's tasks are lmms-eval's own (read from its installed task folders)."""
    from eval.hubdata import builtin_dirs

    project = [p for p in (ROOT / "eval" / "tasks").rglob("*") if p.suffix == ".yaml" or p.name.endswith("_yaml")]
    docs = [yaml.safe_load(p.read_text().replace("!function", "")) or {} for p in project]
    defined = {d[k] for d in docs for k in ("task", "group") if isinstance(d.get(k), str)}  # names a YAML defines
    assert defined and all(name.startswith("synthetic_") for name in defined), sorted(defined)
    for kind in KINDS:
        assert builtin_dirs(bench(kind)["tasks"]), f"tiny_{kind} names a task lmms-eval does not ship"


def test_mvbench_subtasks_and_mean(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("mvbench", dummy_results["mvbench"], bench("mvbench")["tasks"])
    configs = hub.DATASETS["mvbench"]().configs
    expect = {sub: _pct([_gold(d) == ANSWER for d in configs[sub]["train"]]) for sub in ("moving_direction", "moving_count")}
    assert acc["breakdown"] == pytest.approx(expect)
    assert acc["headline"] == pytest.approx(sum(expect.values()) / 2)
    assert acc["unparsable"] == 0 and acc["metric"] == "mvbench_accuracy"


def test_videomme_duration_breakdown(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("videomme", dummy_results["videomme"], ["videomme"])
    d = hub.docs("videomme")
    assert acc["breakdown"] == pytest.approx({x["duration"]: 100.0 * (_gold(x) == ANSWER) for x in d})
    assert acc["headline"] == pytest.approx(_pct([_gold(x) == ANSWER for x in d]))


def test_longvideobench_on_0_100_scale_with_groups(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("longvideobench", dummy_results["longvideobench"], ["longvideobench_val_v"])
    d = hub.docs("longvideobench")
    assert acc["headline"] == pytest.approx(_pct([_gold(x) == ANSWER for x in d]))
    assert acc["breakdown"] == pytest.approx({str(x["duration_group"]): 100.0 * (_gold(x) == ANSWER) for x in d})


def test_mlvu_mean_over_task_types(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("mlvu", dummy_results["mlvu"], ["mlvu_dev"])
    per_type = {x["task_type"]: 100.0 * (_gold(x) == ANSWER) for x in hub.docs("mlvu")}
    assert len(per_type) == 7
    assert acc["breakdown"] == pytest.approx(per_type)
    assert acc["headline"] == pytest.approx(sum(per_type.values()) / 7)


def test_egoschema_public_subset_score(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("egoschema", dummy_results["egoschema"], ["egoschema_subset"])
    d = hub.docs("egoschema")
    assert acc["headline"] == pytest.approx(_pct([_gold(x) == ANSWER for x in d]))
    assert acc["breakdown"] == {} and acc["unparsable"] == 0


def test_perceptiontest_area_breakdown(dummy_results):
    from eval.accuracy import summarise

    acc = summarise("perceptiontest", dummy_results["perceptiontest"], ["perceptiontest_val_mc"])
    d = hub.docs("perceptiontest")
    assert acc["headline"] == pytest.approx(_pct([_gold(x) == ANSWER for x in d]))
    assert acc["breakdown"] == pytest.approx({x["area"]: 100.0 * (_gold(x) == ANSWER) for x in d})  # one doc per area


def test_gold_letters_are_not_constant():
    """The constant answer must hit some docs and miss others, or the tests above could not fail."""
    golds = [_gold(x) for k in KINDS for x in hub.docs(k)]
    assert ANSWER in golds and any(g != ANSWER for g in golds)


def test_unparsable_answers_are_counted():
    from lmms_eval.models.simple.dummy import Dummy

    from eval.accuracy import summarise
    from eval.evaluate import run_tasks
    from eval.hubdata import use_hf_home

    with use_hf_home(hub.ensure(ROOT / ".cache" / "tiny_hub")):
        res = run_tasks(Dummy(response="no idea"), ["videomme"], prompt_model="dummy", limit=None, seed=0, offline=False)
    acc = summarise("videomme", res, ["videomme"])
    assert acc["unparsable"] == 3 and acc["headline"] == 0.0


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


def test_missing_video_names_the_fix(tmp_path, monkeypatch):
    from eval.tasks import tiny_utils

    monkeypatch.setenv(tiny_utils.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make_tiny_benchmarks.py"):
        tiny_utils.mvbench_doc_to_visual({"video": "clip00.mp4"})
