"""Batched evaluation (``batch_size > 1``, eval/models/batching.py): the collation on its own, error handling, and
every method at batch 4 giving batch 1's answers and per-sample token counts through the real wrappers.

The wrapper tests call ``generate_until`` of the harness wrapper directly with lmms-eval ``Instance`` requests over
four MLVU-format docs (clips of 16 / 24 / 32 / 20 frames: on Qwen the fed frame counts, hence the video token
counts, differ within one batch), so the batched path is the one ``eval.run batch_size=4`` takes, without the evaluator around it.
"""

from __future__ import annotations

import threading

import pytest
import torch

from eval.models import batching

# ---- the collation ---------------------------------------------------------------------------------------------


def _req(ids, video_rows, **extra):
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "pixel_values_videos": torch.full((video_rows, 2), float(len(ids))), "max_new_tokens": 3, **extra}


def test_collate_left_pads_sequences_and_concatenates_the_rest():
    out = batching.collate([_req([5, 6, 7], 2), _req([8], 1)], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert out["pixel_values_videos"].shape == (3, 2)  # rows of both requests, in order
    assert out["pixel_values_videos"][:, 0].tolist() == [3.0, 3.0, 1.0]
    assert out["max_new_tokens"] == 3


def test_collate_refuses_requests_that_disagree():
    with pytest.raises(ValueError, match="max_new_tokens"):
        batching.collate([_req([1], 1), _req([2], 1, max_new_tokens=4)], pad_id=0)
    with pytest.raises(ValueError, match="different generate"):
        batching.collate([_req([1], 1), _req([2], 1, video_grid_thw=torch.ones(1, 3))], pad_id=0)


def test_split_rows_gives_each_request_its_batch1_shape():
    inputs = [_req([5, 6, 7], 1), _req([8], 1)]
    eos, pad = 2, 0
    seqs = torch.tensor([[5, 6, 7, 11, 2, 0], [0, 0, 8, 12, 13, 2]])  # row 0 ended early, then padding
    rows = batching.split_rows(seqs, inputs, eos)
    assert [r.tolist() for r in rows] == [[[5, 6, 7, 11, 2]], [[8, 12, 13, 2]]]
    assert pad not in rows[0][0, 3:].tolist()


def test_a_failing_request_raises_its_own_error_and_no_thread_hangs():
    def per_request(req, gate):
        if req == "bad":
            raise OSError("video unreadable")
        return batching.GateModel(None, gate, lambda kw: {}).generate(**_req([1, 2], 1))

    before = threading.active_count()
    with pytest.raises(OSError, match="unreadable"):
        batching.run_batch(["ok", "bad", "ok"], per_request, lambda **kw: None, 0, 2)
    assert threading.active_count() == before


def test_a_failing_batched_generate_is_raised():
    def per_request(req, gate):
        return batching.GateModel(None, gate, lambda kw: {}).generate(**_req([1, 2], 1))

    def broken(**kwargs):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        batching.run_batch(["a", "b"], per_request, broken, 0, 2)


def test_identity_takes_batch_size_only_above_one():
    from eval import record

    base = {"seed": 0, "limit": None, "warmup": 1, "model": {}, "benchmark": {}, "method": {"name": "none"}}
    one = record.identity({**base, "batch_size": 1}, {}, 1.0)
    four = record.identity({**base, "batch_size": 4}, {}, 1.0)
    assert one == record.identity(base, {}, 1.0)  # batch-1 records made before the key existed stay valid
    assert four["batch_size"] == 4 and record.identity_hash(four) != record.identity_hash(one)


# ---- every method through the real wrappers --------------------------------------------------------------------

ARCHS = {"llava_onevision": "eval.models.llava_onevision.LlavaOneVisionCompressed",
         "qwen2_5_vl": "eval.models.qwen2_5_vl.Qwen2_5_VLCompressed"}


def _noise_clip(frames: int, seed: int):
    """``uint8 [frames, 128, 128, 3]``: fresh noise in every frame plus a moving square, so no two tokens tie in any
    method's similarity or score (a batch computes the features within ~1e-7 of batch 1, enough to flip a tied
    top-k, which would test the tie, not the batching)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, size=(frames, 128, 128, 3), dtype=np.uint8)
    for t in range(frames):
        y = (8 + 5 * t) % 96
        clip[t, y : y + 32, 40:72] = (230, 40, 40)
    return clip


@pytest.fixture(scope="module")
def mlvu_requests(tmp_path_factory):
    """Four MLVU-format requests over clips of 16 / 24 / 32 / 20 frames, and their docs."""
    from lmms_eval.api.instance import Instance
    from lmms_eval.tasks.mlvu.utils import mlvu_doc_to_text

    from eval.tasks import tiny_data

    folder = tmp_path_factory.mktemp("clips")
    docs = [dict(d) for d in tiny_data.mlvu_docs()[:4]]  # MLVU dev's doc format (the tiny hub's mlvu docs)
    for i, (doc, frames) in enumerate(zip(docs, (16, 24, 32, 20))):
        doc["video_name"] = f"clip{i}.mp4"
        tiny_data.write_mp4(_noise_clip(frames, seed=i), folder / doc["video_name"])

    def doc_to_visual(doc):
        return [str(folder / doc["video_name"])]

    kwargs = {"pre_prompt": "", "post_prompt": "\nOnly give the best option.\nBest option: ("}
    gen = {"max_new_tokens": 4, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    reqs = [Instance(request_type="generate_until", doc=d, idx=0,
                     metadata={"task": "tiny_mlvu", "doc_id": i, "repeats": 1},
                     arguments=(mlvu_doc_to_text(d, kwargs), dict(gen), doc_to_visual, i, "tiny_mlvu", "test"))
            for i, d in enumerate(docs)]
    return reqs, {"tiny_mlvu": {"test": docs}}


def _wrapper(arch, tmp_path_factory):
    from hydra.utils import get_class

    from vidcom2.testing import tiny

    path = tiny.save(arch, tmp_path_factory.mktemp(arch) / arch)
    # Qwen: 8 frames at most of qwen-vl-utils' 2 fps, so the 2 / 2.5 / 3 / 4 s clips feed 4 / 4-6 / 6 / 8 frames
    extra = ({"dtype": "float32", "frames": 4} if arch == "llava_onevision"
             else {"min_pixels": 50176, "max_pixels": 50176, "frames": 8})
    lm = get_class(ARCHS[arch])(pretrained=str(path), device="cpu", progress=False, **extra)
    # lmms-eval's Qwen parent loads bfloat16; in bf16 left padding alone moves logits by ~1e-3 (HF generate itself,
    # without vidcom2, measured), which flips argmaxes of a random model: the equality is tested in float32
    lm.hf_model.to(torch.float32)
    return lm


def _hparams(method: str, arch: str) -> dict:
    from vidcom2.registry import hparam_names

    hparams = {"merge_ratio": 0.75} if "merge_ratio" in hparam_names(method) else {}  # DyCoke's nominal K
    if method == "fastvid" and arch.startswith("qwen"):  # Qwen has no SigLIP MAP head: the labelled fallback
        hparams["signal"] = "encoder"
    if method == "sparsevlm":  # its layers 2/6/15 assume a 28-layer LLM; the tiny LLM has 4
        hparams["layers"] = [0, 1, 2]
    return hparams


def _answers(lm, reqs, docs, method, batch_size, arch):
    lm.task_dict = docs
    hparams = _hparams(method, arch)
    lm.configure(method=method, retention_ratio=0.5, seed=0, hparams=hparams, progress=False, batch_size=batch_size)
    lm.reset_measurements()
    answers = lm.generate_until([r for r in reqs])
    counts = [(r["visual_tokens_in"], r["visual_tokens_out"], r["prompt_tokens_out"], r["new_tokens"])
              for r in lm.sample_rows]
    return answers, counts, [r.get("batch_size") for r in lm.sample_rows], dict(lm.batching)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_batch4_gives_batch1_answers_for_every_method(arch, mlvu_requests, tmp_path_factory):
    import vidcom2
    from eval.models.base import batch_fallback

    reqs, docs = mlvu_requests
    lm = _wrapper(arch, tmp_path_factory)
    checked = []
    for method in vidcom2.list_methods():
        one = _answers(lm, reqs, docs, method, 1, arch)
        four = _answers(lm, reqs, docs, method, 4, arch)
        assert four[0] == one[0], f"{method}: batch-4 answers differ from batch 1"
        assert four[1] == one[1], f"{method}: per-sample token counts differ from batch 1"
        reason = batch_fallback(method, _hparams(method, arch))
        if reason is None:
            assert four[2] == [4] * 4 and four[3] == {"batch_size": 4, "effective": 4, "fallback": None}
        else:  # runs one prompt per generate(), and the record says why
            assert four[2] == [None] * 4 and four[3] == {"batch_size": 4, "effective": 1, "fallback": reason}
        checked.append(method)
    assert len(checked) == len(vidcom2.list_methods())
    if arch == "qwen2_5_vl":  # the batch mixed video lengths: different visual token counts in one generate()
        assert len({c[0] for c in one[1]}) > 1
