"""LLaVA-Video (LLaVA-Video-7B-Qwen2) under the harness: the LLaVA-OneVision wrapper with LLaVA-Video's visual tokens.

LLaVA-Video has the LLaVA-OneVision architecture (SigLIP tower, MLP projector, ``image_newline``, Qwen2 LLM), so an
HF-format checkpoint loads into ``LlavaOnevisionForConditionalGeneration`` through lmms-eval 0.7.3's ``LlavaHf``,
exactly like :mod:`eval.models.llava_onevision`. What differs is the video path, which here follows lmms-eval's
``llava_vid`` model (LLaVA-NeXT package; ``mm_spatial_pool_mode="average"``, ``mm_spatial_pool_stride=2``,
``mm_newline_position="grid"``) and the VidCom2 paper's LLaVA-Video setup:

- frames: ``frames`` (paper: 64) sampled uniformly over the whole clip, ``linspace(0, n - 1, frames)`` cast to int,
  decord (``llava_vid``'s ``load_video`` with ``force_sample=True``; without it ``llava_vid`` samples at 1 fps and
  only falls back to uniform sampling for clips longer than ``frames`` seconds);
- prompt: the ``qwen_1_5`` conversation with the video placeholder on its own line (same text as LLaVA-OV's), no
  time instruction (``llava_vid``'s default ``add_time_instruction=False``);
- visual tokens: the ``vidcom2`` ``llava_video`` adapter builds them (tower -> projector -> ``avg_pool2d`` stride 2
  -> 13 x 13 = 169 scored tokens per frame + 13 row newlines = 182 prompt tokens per frame). The HF processor writes
  ``F * 196 + 1`` video tokens; :meth:`LlavaVideoCompressed.prepare_inputs` rewrites them to ``F * 182`` with
  ``adapter.prepare_inputs(model, batch)``, and every request runs inside ``vidcom2.compress(...,
  adapter=<llava_video adapter>)``: the HF class is LLaVA-OV's, so the adapter is named instead of inferred (a
  converted checkpoint need not carry LLaVA-NeXT's config keys);
- ``newline_order``: where each frame's 13 newlines go after compression, ``"after_frame"`` (default: the official
  VidCom2 ``_map_grid_vid`` order) or ``"row"``; recorded in the record as ``env.adapter.newline_order``.

Greedy decoding, ``until`` cutting, errors propagating and the measurements are the LLaVA-OV wrapper's.
"""

from __future__ import annotations

from eval.models.llava_onevision import LlavaOneVisionCompressed


class LlavaVideoCompressed(LlavaOneVisionCompressed):
    family = "llava_video"

    def __init__(self, pretrained: str, newline_order: str = "after_frame", **kwargs) -> None:
        from vidcom2.adapters import adapter_for

        # an instance attribute (never the class's): compress() and prepare_inputs() use this very adapter
        self.compress_adapter = adapter_for("llava_video", newline_order=newline_order)
        super().__init__(pretrained=pretrained, **kwargs)

    def prepare_inputs(self, inputs):
        """HF processor output (``F * 196 + 1`` video tokens) -> LLaVA-Video's ``F * 182`` (left-padded)."""
        return self.compress_adapter.prepare_inputs(self.hf_model, inputs)
