"""The lmms-eval model wrappers on tiny random-weight checkpoints of each family, through ``simple_evaluate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eval.tasks import tiny_data

FAMILIES = {
    "llava_onevision": ("eval.models.llava_onevision.LlavaOneVisionCompressed", {"dtype": "float32"}),
    "llava_video": ("eval.models.llava_video.LlavaVideoCompressed", {"dtype": "float32"}),
    "qwen2_vl": ("eval.models.qwen2_vl.Qwen2VLCompressed", {"min_pixels": 50176, "max_pixels": 50176}),
    "qwen2_5_vl": ("eval.models.qwen2_5_vl.Qwen2_5_VLCompressed", {"min_pixels": 50176, "max_pixels": 50176}),
    "qwen3_vl": ("eval.models.qwen3_vl.Qwen3VLCompressed", {"min_pixels": 50176, "max_pixels": 50176}),
    # the MoE architecture of Qwen3-VL-30B-A3B, served by the qwen3_vl wrapper and adapter
    "qwen3_vl_moe": ("eval.models.qwen3_vl.Qwen3VLCompressed", {"min_pixels": 50176, "max_pixels": 50176}),
}
FOLDERS = {"qwen3_vl_moe": "qwen3_vl_moe-A3B"}  # lmms-eval picks the MoE class from the checkpoint name


ROOT = Path(__file__).resolve().parents[2]
HUB = ROOT / ".cache" / "tiny_hub"  # the session's shared tiny hub (tests/conftest.py)
MV_TASKS = ["mvbench_moving_direction", "mvbench_moving_count"]  # built-in tasks of conf/benchmark/tiny_mvbench.yaml


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from vidcom2.testing import tiny

    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: tiny.save(arch, root / FOLDERS.get(arch, arch)) for arch in FAMILIES}


def make(family, path, **kw):
    from hydra.utils import get_class

    target, extra = FAMILIES[family]
    return get_class(target)(pretrained=str(path), frames=8, device="cpu", progress=False, **extra, **kw)


def evaluate(lm, limit=1, home: Path = HUB):
    """lmms-eval's built-in MVBench subtasks of the tiny benchmark, with HF_HOME = ``home`` (a tiny hub)."""
    from eval.evaluate import run_tasks
    from eval.hubdata import use_hf_home

    with use_hf_home(home):
        return run_tasks(lm, MV_TASKS, prompt_model=lm.family, limit=limit, seed=0, offline=False)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_wrapper_compresses_measures_and_survives_clean(family, checkpoints):
    from vidcom2.budget import count

    lm = make(family, checkpoints[family], method="uniform", retention_ratio=0.25, hparams={"budget": "uniform"})
    model = lm.hf_model
    if family == "qwen3_vl_moe":  # lmms-eval loaded the MoE class (its experts are the checkpoint's, not fresh)
        from vidcom2.testing import tiny

        assert type(model).__name__ == "Qwen3VLMoeForConditionalGeneration"
        ref, _ = tiny.build("qwen3_vl_moe")
        experts = "model.language_model.layers.1.mlp.experts.gate_up_proj"
        assert torch.equal(model.state_dict()[experts].float(), ref.state_dict()[experts].bfloat16().float())
    res = evaluate(lm)
    assert sum(len(v) for v in res["samples"].values()) == 2 and len(lm.sample_rows) == 2
    for row in lm.sample_rows:
        assert row["visual_tokens_in"] > 0 and row["frames_fed"] > 0
        for key in ("vision_encoder_s", "compression_s", "prefill_s", "decode_s", "preprocess_s", "generate_s"):
            assert row[key] is not None and row[key] >= 0, key
        # uniform budgets: each frame (Qwen: temporal patch) keeps count(0.25, N) of its N tokens
        frames = row["frames_fed"] // (1 if family.startswith("llava") else 2)
        n = row["visual_tokens_in"] // frames
        assert row["visual_tokens_out"] == frames * count(0.25, n)
    # lmms-eval's clean() ran: the modules are still there, the model is the same object, compress left nothing
    assert lm.hf_model is model and "generate" not in model.__dict__
    lm.configure(method="none", retention_ratio=1.0, seed=0, hparams={})
    lm.reset_measurements()
    evaluate(lm)
    assert [r["visual_tokens_out"] for r in lm.sample_rows] == [r["visual_tokens_in"] for r in lm.sample_rows]


@pytest.mark.slow
def test_unreadable_video_is_an_error_not_an_empty_answer(checkpoints, tmp_path):
    # Qwen2-VL's parent logs and drops a video it cannot read; the harness must refuse the request instead
    import shutil

    shutil.copytree(HUB, tmp_path / "hub")  # a copy of the tiny hub whose MVBench videos are all garbage
    for video in (tmp_path / "hub" / "mvbench_video").rglob("*.mp4"):
        video.write_bytes(b"not a video")
    lm = make("qwen2_vl", checkpoints["qwen2_vl"], method="none")
    with pytest.raises(RuntimeError, match="without video inputs"):
        evaluate(lm, home=tmp_path / "hub")


@pytest.mark.parametrize(("arch", "folder", "message"), [
    ("qwen3_vl_moe", "qwen3_vl_moe", "is a MoE Qwen3-VL checkpoint.*Qwen3VLForConditionalGeneration.*A3B"),
    ("qwen3_vl", "qwen3_vl-A3B", "is a dense Qwen3-VL checkpoint.*Qwen3VLMoeForConditionalGeneration.*rename"),
])
def test_qwen3_checkpoint_name_must_match_its_variant(tmp_path, arch, folder, message):
    # lmms-eval 0.7.3 chooses dense vs MoE from the name; a mismatch would load freshly initialised MLPs silently
    from eval.models.qwen3_vl import check_variant
    from vidcom2.testing import tiny

    path = tiny.save(arch, tmp_path / folder, text_layers=1)
    with pytest.raises(ValueError, match=message):
        check_variant(str(path))
    check_variant(str(tiny.save(arch, tmp_path / ("qwen3_vl_moe-A3B" if arch == "qwen3_vl_moe" else "dense"),
                                text_layers=1)))


def test_flat_cli_kwargs_become_hyper_parameters():
    from eval.models.base import split_method_kwargs

    kwargs = {"budget": "uniform", "compute_dtype": "float32", "max_pixels": 100}
    assert split_method_kwargs("vidcom2", kwargs) == {"budget": "uniform", "compute_dtype": "float32"}
    assert kwargs == {"max_pixels": 100}


def test_entry_point_registers_every_family():
    from lmms_eval.models import get_model

    from eval.models import WRAPPERS

    for family, path in WRAPPERS.items():
        cls = get_model(f"vidcom2_{family}")
        assert f"{cls.__module__}.{cls.__name__}" == path and cls.family == family


def test_llava_prompt_is_the_qwen_1_5_conversation():
    from eval.models.llava_onevision import build_prompt

    assert build_prompt("<image>\nWhat moves?\n") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<video>\nWhat moves?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llava_frames_are_uniform_over_the_clip(tmp_path):
    import av

    from eval.models.llava_onevision import sample_frames

    clip = tiny_data.CLIPS["clip02.mp4"]  # 32 frames
    tiny_data.write_mp4(clip.render(), tmp_path / "c.mp4")
    with av.open(str(tmp_path / "c.mp4")) as f:
        decoded = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    got = sample_frames(str(tmp_path / "c.mp4"), 5)
    # linspace(0, 31, 5) truncated: 0, 7, 15, 23, 31
    want = np.stack([decoded[i] for i in (0, 7, 15, 23, 31)])
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 2


def test_missing_video_of_a_real_benchmark_is_named():
    from types import SimpleNamespace

    from eval.models.qwen3_vl import Qwen3VLCompressed

    lm = object.__new__(Qwen3VLCompressed)  # no weights needed: the check runs before any model work
    lm.task_dict = {"videomme": {"test": {0: {"videoID": "abc"}}}}
    req = SimpleNamespace(args=("ctx", {}, lambda doc: [f"/nonexistent/{doc['videoID']}.mp4"], 0, "videomme", "test"))
    with pytest.raises(FileNotFoundError, match=r"videomme doc 0: video /nonexistent/abc.mp4 is missing.*HF_HOME"):
        lm._check_media(req)


def test_benchmark_exit_on_missing_video_becomes_a_named_error():
    import sys
    from types import SimpleNamespace

    from eval.models.qwen3_vl import Qwen3VLCompressed

    lm = object.__new__(Qwen3VLCompressed)
    lm.task_dict = {"mlvu_dev": {"test": {3: {}}}}
    req = SimpleNamespace(args=("ctx", {}, lambda doc: sys.exit("video path:/x.mp4 does not exist"), 3, "mlvu_dev", "test"))
    with pytest.raises(FileNotFoundError, match=r"mlvu_dev doc 3: video path:/x.mp4 does not exist"):
        lm._check_media(req)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_request_types_that_would_bypass_compression_are_refused(family):
    from hydra.utils import get_class

    lm = object.__new__(get_class(FAMILIES[family][0]))
    for call in (lm.loglikelihood, lm.generate_until_multi_round):
        with pytest.raises(NotImplementedError, match="uncompressed"):
            call([])
