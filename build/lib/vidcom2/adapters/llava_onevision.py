"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``, transformers 5.23).

Layout (spec hooks_transformers.md 1.1): per frame SigLIP 27x27 patches -> projector -> bilinear pooling to 14x14 =
196 tokens; one ``image_newline`` after the whole video. The prompt holds ``F*196 + 1`` video tokens per video;
the newline is always kept (after the kept tokens, as in the uncompressed layout). Positions are 1-D RoPE.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vidcom2.adapters._common import (
    attention_mask,
    check_video_inputs,
    text_positions,
    video_chunks,
    with_pooler,
)
from vidcom2.adapters.base import Encoded, VideoSlots


class LlavaModules:
    """Module handles shared by every adapter over ``LlavaOnevisionForConditionalGeneration`` weights."""

    def text_model(self, model: nn.Module) -> nn.Module:
        return model.model.language_model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.language_model.layers

    def vision_tower(self, model: nn.Module) -> nn.Module:
        return model.model.vision_tower

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        tower = model.model.vision_tower
        # transformers 5.x SiglipVisionModel holds the encoder itself; 4.x wrapped it in .vision_model
        return getattr(tower, "vision_model", tower).encoder.layers

    def video_token_id(self, model: nn.Module) -> int:
        cfg = model.config
        return int(getattr(cfg, "video_token_id", None) or cfg.video_token_index)


class LlavaOnevisionAdapter(LlavaModules):
    # contiguous: kept tokens renumbered 0..L'-1 (what the official VidCom2 LLaVA-OV integration does, because it
    # rebuilds inputs_embeds); original: the gapped positions of the uncompressed prompt.
    position_modes = ("contiguous", "original")
    encoder_inputs = ("pixel_values_videos",)

    def __init__(self, family: str = "llava_onevision"):
        self.family = family

    def __repr__(self):
        return f"LlavaOnevisionAdapter({self.family!r})"

    def frame_grid(self, model: nn.Module) -> tuple[int, int]:
        """(h, w) of the pooled token grid of one frame: ``ceil(image_size / patch / 2)`` squared (14 x 14)."""
        vc = model.config.vision_config
        side = math.ceil((vc.image_size // vc.patch_size) / 2)
        return side, side

    def visual_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        return inputs["input_ids"] == self.video_token_id(model)

    def video_slots(self, model: nn.Module, inputs: dict) -> list[VideoSlots]:
        check_video_inputs(inputs)
        pixels = inputs["pixel_values_videos"]
        frames = int(pixels.shape[1])
        h, w = self.frame_grid(model)
        per_video = frames * h * w + 1
        mask = self.visual_token_mask(model, inputs)
        hint = f"F*{h * w}+1 = {per_video}; build the prompt with the model's processor"
        return [
            VideoSlots(row, chunk[:-1].reshape(frames, h * w), chunk[-1:], (frames, h, w))
            for row, chunk in video_chunks(mask, per_video, hint, pixels.shape[0])
        ]

    def encode(self, model: nn.Module, inputs: dict) -> Encoded:
        slots = self.video_slots(model, inputs)
        cfg = model.config
        out = model.model.get_video_features(
            inputs["pixel_values_videos"],
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        )
        pooled = out.pooler_output  # [V, F*N + 1, D]; the last row is the newline
        f, h, w = slots[0].grid
        feats = [pooled[v, :-1].reshape(f, h * w, -1) for v in range(pooled.shape[0])]
        return Encoded(feats, slots, out, {"newline": pooled[:, -1]})

    def pack(self, model, encoded: Encoded, kept: list[torch.Tensor], flat: list[torch.Tensor]):
        newline = encoded.extras["newline"]
        rows = [torch.cat([k, newline[v : v + 1].to(k.dtype)]) for v, k in enumerate(kept)]
        # The model flattens pooler_output over (videos, tokens) and scatters in prompt order, so any [V', n, D]
        # split works. One row per video ([V, K+1, D]) when the videos kept equally many tokens: generate's beam /
        # num_return_sequences expansion splits pooler_output by rows to match prompts. Otherwise one row.
        if len({r.shape[0] for r in rows}) == 1:
            return with_pooler(encoded.output, torch.stack(rows))
        return with_pooler(encoded.output, torch.cat(rows)[None])

    def full_positions(self, model: nn.Module, inputs: dict, *, text_rule: str = "hf5") -> torch.Tensor:
        return text_positions(attention_mask(inputs))[None]
