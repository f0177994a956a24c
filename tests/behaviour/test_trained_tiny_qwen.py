"""Behaviour of the committed trained tiny Qwen2.5-VL on the synthetic benchmark (docs/synthetic.md).

The issue's bar, wide-margin facts only: vanilla answers >= 90% of the test split; with the visual tokens of the
temporal patch that holds the event removed, the event task falls to near chance; method ``none`` through the
harness gives exactly the bare model's answers. The bare path is written here, independently of the
harness and of ``scripts/``: lmms-eval's Qwen2_5_VL conventions (bfloat16 weights, system prompt, video first,
``qwen_vl_utils.process_vision_info``), ``model.generate``; the removal test builds the 3-D M-RoPE positions of the
transformers 4.x rule (text after the video resumes at the largest position + 1) itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eval.tasks import synthetic_data as sd

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "assets" / "trained_tiny" / "qwen2_5_vl"
POST = "Only give the best option.\n"
PIXELS = sd.SIZE * sd.SIZE
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bare():
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(CKPT, dtype=torch.bfloat16).eval()
    return model, AutoProcessor.from_pretrained(CKPT, min_pixels=PIXELS, max_pixels=PIXELS)


def _inputs(processor, videos: Path, doc: dict):
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_text
    from qwen_vl_utils import process_vision_info

    video = {"type": "video", "video": str(videos / doc["video"]), "max_pixels": PIXELS, "min_pixels": PIXELS}
    text = mvbench_doc_to_text(doc, {"post_prompt": POST})
    messages = [[{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": [video, {"type": "text", "text": text}]}]]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=prompt, videos=process_vision_info(messages)[1], padding=True, return_tensors="pt")


def _letter(doc: dict) -> str:
    return "ABCD"[doc["candidates"].index(doc["answer"])]


@pytest.fixture(scope="module")
def bare_answers(bare, synthetic_videos) -> dict[str, list[str]]:
    model, processor = bare
    out = {}
    with torch.no_grad():
        for task, clips in sd.test_clips().items():
            answers = []
            for clip in clips:
                batch = _inputs(processor, synthetic_videos, clip.doc())
                ids = model.generate(**batch, max_new_tokens=16, do_sample=False)
                answers.append(processor.tokenizer.decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True))
            out[task] = answers
    return out


def test_vanilla_accuracy_at_least_90(bare_answers):
    """The issue's bar. Measured in bfloat16 (the harness's dtype): 64/64, every task 16/16 (docs/synthetic.md); the
    bar leaves 6 clips of margin; each task >= 75% (4 clips of margin) guards location, the task the previous
    checkpoint missed (56%)."""
    acc = {t: np.mean([a.strip() == _letter(c.doc()) for a, c in zip(bare_answers[t], clips)])
           for t, clips in sd.test_clips().items()}
    assert np.mean(list(acc.values())) >= 0.90 and min(acc.values()) >= 0.75, acc


def _positions(batch, model) -> torch.Tensor:
    """``[3, L]``: text 0..s-1; video (t * step, s + row, s + col); text after at max + 1 onwards."""
    ids = batch["input_ids"][0]
    vid = (ids == model.config.video_token_id).nonzero()[:, 0]
    s, e = int(vid[0]), int(vid[-1]) + 1
    t, h, w = (int(v) for v in batch["video_grid_thw"][0])
    h, w = h // 2, w // 2
    step = model.config.vision_config.tokens_per_second * float(batch["second_per_grid_ts"][0])
    tt = (torch.arange(t, dtype=torch.float32) * step).long()
    grid = torch.stack(torch.meshgrid(tt, torch.arange(h), torch.arange(w), indexing="ij")).reshape(3, -1) + s
    after = torch.arange(len(ids) - e) + int(grid.max()) + 1
    return torch.cat([torch.arange(s).expand(3, -1), grid, after.expand(3, -1)], dim=1)


def _hit(model, emb, pos, keep, gold) -> int:
    """1 when the model's next-token argmax on the kept columns (their own positions) is ``gold``."""
    p = torch.cat([torch.arange(len(keep))[None], pos[:, keep]])[:, None]
    return int(model(inputs_embeds=emb[:, keep], position_ids=p).logits[0, -1].argmax() == gold)


def test_removing_the_event_temporal_patch_drops_the_event_task_to_chance(bare, synthetic_videos):
    """Drop the 64 merged tokens of the temporal patch (2 frames) holding the event; others keep their positions."""
    model, processor = bare
    m = model.model
    full, removed = 0, 0
    clips = sd.test_clips()["event"]
    with torch.no_grad():
        for clip in clips:
            batch = _inputs(processor, synthetic_videos, clip.doc())
            ids = batch["input_ids"][0]
            emb = m.get_input_embeddings()(ids)[None].clone()
            feats = m.get_video_features(batch["pixel_values_videos"].to(torch.bfloat16), batch["video_grid_thw"],
                                         return_dict=True).pooler_output
            feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
            cols = (ids == model.config.video_token_id).nonzero()[:, 0]
            emb[0, cols] = feats.to(emb.dtype)
            pos = _positions(batch, model)
            gold = processor.tokenizer.convert_tokens_to_ids(_letter(clip.doc()))

            full += _hit(model, emb, pos, torch.arange(len(ids)), gold)
            g = clip.decisive[0] // 2
            drop = set(cols[g * 64 : (g + 1) * 64].tolist())
            removed += _hit(model, emb, pos, torch.tensor([i for i in range(len(ids)) if i not in drop]), gold)
    n = len(clips)
    assert full / n >= 0.85, f"event task with all tokens: {full}/{n}"
    assert removed / n <= 0.5, f"event task without its temporal patch: {removed}/{n} (chance 25%)"


def test_method_none_through_the_harness_equals_the_bare_model(bare_answers, harness_none):
    rec, got = harness_none["trained_tiny_qwen2_5_vl"]
    assert rec["random_weights"] is False and rec["config"]["benchmark"]["synthetic"] is True
    assert got == {t: [a.strip() for a in v] for t, v in bare_answers.items()}
