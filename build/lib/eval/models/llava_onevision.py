"""LLaVA-OneVision under the harness: lmms-eval 0.7.3's transformers-based ``LlavaHf``, made right for video.

Why not the parent's ``generate_until``: for video it swallows ``generate`` errors into ``""`` (MVBench then drops
the sample from the denominator, spec pitfall 7), re-processes a request after a decode failure, and formats the
prompt with whatever chat template the tokenizer has. This wrapper keeps the parent's constructor (weights, processor,
device) and replaces the per-request path with the LLaVA-NeXT ``llava_onevision`` recipe the published numbers used:

- frames: ``frames`` (paper: 32) sampled uniformly over the whole clip, ``linspace(0, n - 1, frames)`` cast to int,
  decoded with decord (as LLaVA-NeXT's ``load_video``);
- prompt: the LLaVA-NeXT ``qwen_1_5`` conversation template, video placeholder on its own line before the question::

      <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<video>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

- greedy decoding with the task's ``max_new_tokens``; the answer is cut at the task's ``until`` strings;
- any error propagates (never an empty answer).

Deviations from the paper's setup: the HF port (``LlavaOnevisionForConditionalGeneration``) instead of the LLaVA-NeXT
package (lmms-eval's maintainers note scores can differ, lmms-eval PR #260); dtype is the config's ``dtype``
(``float16`` by default on GPU, as LLaVA-NeXT), SDPA attention unless set.
"""

from __future__ import annotations

import numpy as np
from lmms_eval.models.simple.llava_hf import LlavaHf

from eval.models.base import Harnessed

SYSTEM = "You are a helpful assistant."
PROMPT = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<video>\n{question}<|im_end|>\n<|im_start|>assistant\n"


def sample_frames(path: str, frames: int) -> np.ndarray:
    """``uint8 [frames, H, W, 3]``: ``frames`` indices ``linspace(0, n - 1, frames)`` (int) of the video at ``path``."""
    from decord import VideoReader, cpu

    vr = VideoReader(path, ctx=cpu(0))
    idx = np.linspace(0, len(vr) - 1, frames, dtype=int).tolist()
    return vr.get_batch(idx).asnumpy()


def build_prompt(question: str, system: str = SYSTEM) -> str:
    """The ``qwen_1_5`` conversation with the video placeholder (lmms-eval's ``<image>`` tokens removed)."""
    return PROMPT.format(system=system, question=question.replace("<image>", "").strip("\n"))


class LlavaOneVisionCompressed(Harnessed, LlavaHf):
    family = "llava_onevision"
    frames_arg = "max_frames_num"

    def count_frames(self, generate_kwargs: dict) -> int | None:
        pv = generate_kwargs.get("pixel_values_videos")
        return None if pv is None else int(pv.shape[1])

    def prepare_inputs(self, inputs):
        """Processor outputs -> ``generate`` inputs; identity here (LLaVA-Video rewrites the video token runs)."""
        return inputs

    def _generate_one(self, request) -> str:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if len(visuals) != 1 or not isinstance(visuals[0], str):
            raise ValueError(f"{task} doc {doc_id}: expected one video path, got {visuals!r}")
        video = sample_frames(visuals[0], self.frames)
        processor = self._image_processor
        inputs = self.prepare_inputs(processor(videos=[video], text=build_prompt(context), return_tensors="pt"))
        inputs = inputs.to(self._device)
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.hf_model.dtype)
        gen = dict(gen_kwargs)
        until = gen.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen.get("temperature", 0) or 0)
        cont = self.model.generate(
            **inputs,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=gen.get("top_p") if temperature > 0 else None,
            num_beams=int(gen.get("num_beams", 1)),
            max_new_tokens=int(gen.get("max_new_tokens", 1024)),
            use_cache=self.use_cache,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id,
            eos_token_id=self.eot_token_id,
        )
        text = self.tokenizer.decode(cont[0, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)
        for term in until:
            if term:
                text = text.split(term)[0]
        return text
