"""What the tiny hub holds for each benchmark: the dataset repository, its configs and splits, the doc fields, and
where each video lies under ``$HF_HOME/<cache_dir>``, as lmms-eval 0.7.3's built-in task code reads them.

Layouts learned from the installed task code (``lmms_eval/tasks/<folder>/``; the YAMLs give ``dataset_path``,
``dataset_name``, ``test_split``, ``dataset_kwargs.cache_dir``; ``utils.py`` gives the path joins and doc fields):

- MVBench (``mvbench/utils.py`` ``mvbench_doc_to_visual``, ``DATA_LIST``): ``OpenGVLab/MVBench`` revision ``video``,
  one config per subtask (20; 1 doc each, 2 for ``moving_direction`` / ``moving_count``), split ``train``; video
  ``mvbench_video/<DATA_LIST[sub_task]>/<doc.video>``; fields
  ``video, question, candidates, answer`` (answer is a candidate's text).
- VideoMME (``videomme/utils.py``): ``lmms-eval/Video-MME`` default config, split ``test``; video
  ``videomme/data/<doc.videoID>.mp4``; ``domain/sub_category/task_type`` must be in the utils' hard-coded lists.
- LongVideoBench (``longvideobench/utils.py`` ``_resolve_dataset_dir``): ``longvideobench/LongVideoBench`` (gated),
  split ``validation``; video ``datasets/longvideobench/videos/<doc.video_path>``; ``correct_choice`` is an index.
- MLVU dev (``mlvu/utils.py``): ``sy1998/MLVU_dev``, split ``test``; video ``mlvu/<doc.video_name>``; options are
  inline in ``question``; ``answer`` is a letter; all 7 ``task_type``s.
- EgoSchema (``egoschema/utils.py``): ``lmms-eval/egoschema`` config ``Subset`` (``egoschema_subset``, the 500
  public answers), split ``test``; video ``egoschema/videos/<doc.video_idx>.mp4``; five ``option`` strings
  ``"A. ..."``; ``answer`` an index as text.
- PerceptionTest (``perceptiontest/val/utils.py``): ``lmms-eval/PerceptionTest_Val`` config ``mc_question_val``,
  split ``validation``; video ``perceptiontest_val/videos/<doc.video_name>.mp4``; three ``options``, ``answer_id``,
  plus ``question_id, area, reasoning, tag``.

Archive names inside the snapshots are the tiny hub's own (lmms-eval globs every ``*.zip`` / ``*.tar*``); what
matters is the tree they unpack to, which is the one above. LongVideoBench ships split tar parts, as the real
repository does (lmms-eval concatenates ``<base>.tar.*`` parts before extracting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eval.tasks import tiny_data as td

LETTERS = "ABCDE"
#: lmms-eval's ``mvbench/utils.py`` ``DATA_LIST`` (sub-task -> video folder under mvbench_video), copied as facts
MVBENCH_FOLDERS = {
    "object_interaction": "star/Charades_segment", "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment", "action_localization": "sta/sta_video_segment",
    "moving_count": "clevrer/video_validation", "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos", "object_shuffle": "perception/videos", "egocentric_navigation": "vlnqa",
    "moving_direction": "clevrer/video_validation", "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "fine_grained_action": "Moments_in_Time_Raw/videos", "scene_transition": "scene_qa/video",
    "state_change": "perception/videos", "moving_attribute": "clevrer/video_validation",
    "action_antonym": "ssv2_video_mp4", "unexpected_action": "FunQA_test/test",
    "counterfactual_inference": "clevrer/video_validation", "object_existence": "clevrer/video_validation",
    "action_count": "perception/videos",
}
PERCEPTION_AREAS = ("memory", "abstraction", "physics", "semantics")


@dataclass
class HubDataset:
    """One dataset repository: ``configs[config][split] = docs``; ``videos[path under cache_dir] = clip name``."""

    kind: str
    repo: str
    revision: str
    cache_dir: str
    configs: dict[str | None, dict[str, list[dict]]]
    videos: dict[str, str] = field(default_factory=dict)
    archive: str = "videos.zip"  # name in the snapshot; ".tar" -> split tar parts


def _questions(j: int):
    clip = td.CLIPS[f"clip{j % len(td.CLIPS):02d}.mp4"]
    q, opts, ans = (td._direction_q, td._count_q, td._color_q)[j % 3](clip)
    return clip, q, td._rotate(opts, 3 * j + 1), ans


def mvbench() -> HubDataset:
    """All 20 subtasks; ``moving_direction`` and ``moving_count`` (``benchmark=tiny_mvbench``) hold two docs each
    (:func:`eval.tasks.tiny_data.mvbench_docs`), every other subtask one."""
    configs, videos = {}, {}
    two = td.mvbench_docs()
    for j, sub in enumerate(MVBENCH_FOLDERS):
        if sub in two:
            docs = two[sub]
            videos.update({f"{MVBENCH_FOLDERS[sub]}/{d['video']}": d["video"] for d in docs})
        else:
            clip, q, opts, ans = _questions(j)
            name = f"{sub}_{j:02d}.mp4"
            videos[f"{MVBENCH_FOLDERS[sub]}/{name}"] = clip.name
            docs = [{"video": name, "question": q, "candidates": opts, "answer": ans}]
        configs[sub] = {"train": docs}
    return HubDataset("mvbench", "OpenGVLab/MVBench", "video", "mvbench_video", configs, videos)


def videomme() -> HubDataset:
    docs = td.videomme_docs()
    videos = {f"data/{d['videoID']}.mp4": f"{d['videoID']}.mp4" for d in docs}
    return HubDataset("videomme", "lmms-eval/Video-MME", "main", "videomme", {None: {"test": docs}}, videos)


def longvideobench() -> HubDataset:
    docs = td.longvideobench_docs()
    videos = {f"videos/{d['video_path']}": d["video_path"] for d in docs}
    return HubDataset("longvideobench", "longvideobench/LongVideoBench", "main", "datasets/longvideobench",
                      {None: {"validation": docs}}, videos, archive="videos.tar")


def mlvu() -> HubDataset:
    docs = td.mlvu_docs()
    return HubDataset("mlvu", "sy1998/MLVU_dev", "main", "mlvu", {None: {"test": docs}}, {d["video_name"]: d["video_name"] for d in docs})


def egoschema() -> HubDataset:
    docs, videos = [], {}
    for j in range(3):
        clip, q, opts, ans = _questions(j + 4)
        opts = (opts + ["none of the above"])[:5]
        idx = f"ego{j:04d}"
        videos[f"videos/{idx}.mp4"] = clip.name
        docs.append({"question_idx": f"q{j}", "question": q, "video_idx": idx,
                     "option": [f"{LETTERS[i]}. {o}" for i, o in enumerate(opts)], "answer": str(opts.index(ans))})
    return HubDataset("egoschema", "lmms-eval/egoschema", "main", "egoschema", {"Subset": {"test": docs}}, videos)


def perceptiontest() -> HubDataset:
    docs, videos = [], {}
    for j in range(4):
        clip, q, opts, ans = _questions(j + 1)
        opts = opts[:2] + [ans] if ans not in opts[:3] else opts[:3]
        name = f"video_{j:04d}"
        videos[f"videos/{name}.mp4"] = clip.name
        docs.append({"video_name": name, "question_id": f"{name}_q0", "question": q, "options": opts,
                     "answer_id": opts.index(ans), "area": PERCEPTION_AREAS[j % 4], "reasoning": "descriptive",
                     "tag": ["motion"]})
    return HubDataset("perceptiontest", "lmms-eval/PerceptionTest_Val", "main", "perceptiontest_val",
                      {"mc_question_val": {"validation": docs}}, videos)


DATASETS = {f.__name__: f for f in (mvbench, videomme, longvideobench, mlvu, egoschema, perceptiontest)}
