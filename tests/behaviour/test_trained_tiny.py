"""Behaviour of the committed trained tiny LLaVA-OV on the synthetic benchmark (docs/synthetic.md).

Only wide-margin facts: vanilla answers >= 90% of the test split; with every visual token of the decisive frame
removed the event task falls to near chance (the answer comes from the video); method ``none`` through the harness
(lmms-eval's evaluator, ``python -m eval.run``) gives exactly the bare model's answers. The bare path here is written
independently of the harness: decord frames, the processor, ``model.generate`` / the model's own embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eval.tasks import synthetic_data as sd

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "assets" / "trained_tiny" / "llava_onevision"
POST = "Only give the best option.\n"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def videos(synthetic_videos) -> Path:
    return synthetic_videos


@pytest.fixture(scope="module")
def bare():
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(CKPT).eval()
    return model, AutoProcessor.from_pretrained(CKPT)


def _inputs(processor, videos: Path, doc: dict):
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_text

    from eval.models.llava_onevision import build_prompt, sample_frames

    frames = sample_frames(str(videos / doc["video"]), sd.FRAMES)
    text = build_prompt(mvbench_doc_to_text(doc, {"post_prompt": POST}))
    return processor(videos=[frames], text=text, return_tensors="pt")


def _letter(doc: dict) -> str:
    return "ABCD"[doc["candidates"].index(doc["answer"])]


@pytest.fixture(scope="module")
def bare_answers(bare, videos) -> dict[str, list[str]]:
    """Greedy answers of the bare model, per task, in doc order."""
    model, processor = bare
    out = {}
    with torch.no_grad():
        for task, clips in sd.test_clips().items():
            answers = []
            for clip in clips:
                batch = _inputs(processor, videos, clip.doc())
                ids = model.generate(**batch, max_new_tokens=16, do_sample=False)
                answers.append(processor.tokenizer.decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True))
            out[task] = answers
    return out


def test_vanilla_accuracy_at_least_90(bare_answers):
    docs = [c.doc() for clips in sd.test_clips().values() for c in clips]
    answers = [a for task in sd.TASKS for a in bare_answers[task]]
    hits = sum(a.strip() == _letter(d) for a, d in zip(answers, docs))
    assert hits / len(docs) >= 0.90, f"{hits}/{len(docs)} correct"


def test_removing_the_decisive_frame_drops_the_event_task_to_chance(bare, videos):
    """Drop the 64 visual tokens of the frame where the event happens: the event is no longer answerable."""
    model, processor = bare
    m = model.model
    per_frame = (sd.SIZE // 14 // 2) ** 2
    full, removed = 0, 0
    clips = sd.test_clips()["event"]
    with torch.no_grad():
        for clip in clips:
            batch = _inputs(processor, videos, clip.doc())
            ids = batch["input_ids"][0]
            emb = m.get_input_embeddings()(ids)[None].clone()
            feats = m.get_video_features(batch["pixel_values_videos"], vision_feature_layer=-1,
                                         vision_feature_select_strategy="full").pooler_output
            pos = (ids == model.config.video_token_index).nonzero()[:, 0]
            emb[0, pos] = feats[0]
            gold = processor.tokenizer.convert_tokens_to_ids(_letter(clip.doc()))
            full += int(model(inputs_embeds=emb).logits[0, -1].argmax() == gold)
            f = clip.decisive[0]
            drop = set(pos[f * per_frame : (f + 1) * per_frame].tolist())
            keep = torch.tensor([i for i in range(len(ids)) if i not in drop])
            removed += int(model(inputs_embeds=emb[:, keep]).logits[0, -1].argmax() == gold)
    n = len(clips)
    assert full / n >= 0.85, f"event task with all tokens: {full}/{n}"
    assert removed / n <= 0.5, f"event task without its decisive frame: {removed}/{n} (chance 25%)"


def test_method_none_through_the_harness_equals_the_bare_model(bare_answers, harness_none):
    rec, got = harness_none["trained_tiny_llava_ov"]
    assert rec["random_weights"] is False and rec["config"]["benchmark"]["synthetic"] is True
    assert got == {t: [a.strip() for a in v] for t, v in bare_answers.items()}
    assert np.isclose(rec["accuracy"]["headline"], 100 * np.mean(
        [a.strip() == _letter(c.doc()) for t, clips in sd.test_clips().items() for a, c in zip(bare_answers[t], clips)]))
