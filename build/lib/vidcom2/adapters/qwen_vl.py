"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (``Qwen{2,2_5,3}VLForConditionalGeneration``, transformers 5.23).

Layout (spec hooks_transformers.md 1.3-1.5): a "frame" is one temporal patch (2 frames) of ``(H/m)*(W/m)``
merged tokens (m = spatial merge size 2); ``get_video_features`` returns a tuple of per-video ``[T*n, D]``
tensors. Qwen2/2.5-VL put one ``<|vision_start|> pads <|vision_end|>`` block per video; Qwen3-VL one block per
temporal patch, each preceded by a timestamp text. Positions are 3-D M-RoPE; dropping keeps the original positions
of the kept tokens (gathered from the uncompressed prompt). Qwen3-VL's DeepStack levels are gathered with the same
indices as the main features.

Qwen2/2.5-VL text positions after a video: ``text_rule="reference"`` (default) resumes at ``max(previous) + 1``
as transformers 4.x and the original Qwen code do; ``"hf5"`` reproduces transformers 5.23's ``get_rope_index``
(resume at ``start + max(H, W)/m``, ignoring the temporal extent). See spec 8.2.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from vidcom2.adapters._common import attention_mask, check_video_inputs, with_pooler
from vidcom2.adapters.base import Encoded, VideoSlots

TEXT_RULES = ("reference", "hf5")


def rope_index(
    mm_token_type_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    grids: torch.Tensor,
    intervals: list,
    merge: int,
    text_rule: str = "reference",
) -> torch.Tensor:
    """3-D M-RoPE positions ``[3, B, L]`` (t, h, w) of a Qwen2/2.5-VL prompt with videos; padding columns hold 1.

    mm_token_type_ids: ``[B, L]`` (0 text, 2 video). attention_mask: ``[B, L]``. grids: ``[V, 3]`` video_grid_thw
    (patch units). intervals: per video, the temporal step (Qwen2-VL 1; Qwen2.5-VL ``tokens_per_second *
    second_per_grid_t``), applied as ``long(arange(T) * interval)``. merge: spatial merge size.
    text_rule: where the text after a video resumes: ``"reference"`` at ``max(all previous positions) + 1``
    (transformers 4.x / original Qwen code), ``"hf5"`` at ``video start + max(H, W) / merge`` (transformers 5.x).
    """
    if text_rule not in TEXT_RULES:
        raise ValueError(f"text_rule must be one of {TEXT_RULES}, got {text_rule!r}")
    B, L = mm_token_type_ids.shape
    out = torch.ones(3, B, L, dtype=torch.long)
    video = 0
    for b in range(B):
        valid = attention_mask[b].bool().cpu()
        types = mm_token_type_ids[b].cpu()[valid].tolist()
        pieces, cur = [], 0
        for kind, group in itertools.groupby(types):
            n = len(list(group))
            if kind == 0:
                pieces.append(torch.arange(n).expand(3, n) + cur)
                cur += n
                continue
            if kind != 2:
                raise NotImplementedError("image tokens in a compressed prompt are not supported")
            t, h, w = (int(x) for x in grids[video])
            h, w = h // merge, w // merge
            if t * h * w != n:
                raise ValueError(f"video {video}: grid {t}x{h}x{w} does not match its {n} prompt tokens")
            # float32 as transformers (4.x and 5.x) computes it: arange(T) * interval, truncated
            tt = (
                torch.arange(t, dtype=torch.float32) * torch.as_tensor(intervals[video], dtype=torch.float32)
            ).long()
            pos = torch.stack(torch.meshgrid(tt, torch.arange(h), torch.arange(w), indexing="ij")).reshape(
                3, -1
            )
            pieces.append(pos + cur)
            cur = int(pos.max()) + cur + 1 if text_rule == "reference" else cur + max(h, w)
            video += 1
        out[:, b, valid] = torch.cat(pieces, dim=1) if pieces else out[:, b, valid]
    return out.to(mm_token_type_ids.device)


class QwenVLAdapter:
    position_modes = ("original",)
    encoder_inputs = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")

    def __init__(self, family: str):
        if family not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
            raise ValueError(f"QwenVLAdapter serves qwen2_vl, qwen2_5_vl and qwen3_vl, not {family!r}")
        self.family = family

    def __repr__(self):
        return f"QwenVLAdapter({self.family!r})"

    def text_model(self, model: nn.Module) -> nn.Module:
        return model.model.language_model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.language_model.layers

    def vision_tower(self, model: nn.Module) -> nn.Module:
        return model.model.visual

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.visual.blocks

    def merge_size(self, model: nn.Module) -> int:
        return int(model.config.vision_config.spatial_merge_size)

    def visual_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        return inputs["input_ids"] == int(model.config.video_token_id)

    def video_slots(self, model: nn.Module, inputs: dict) -> list[VideoSlots]:
        check_video_inputs(inputs)
        if inputs.get("mm_token_type_ids") is None:
            raise ValueError(
                "Qwen prompts need `mm_token_type_ids` (the processor returns it); pass all its outputs"
            )
        grids = inputs["video_grid_thw"]
        m = self.merge_size(model)
        mask = self.visual_token_mask(model, inputs)
        slots, video = [], 0
        for row in range(mask.shape[0]):
            cols = mask[row].nonzero().squeeze(1)
            start = 0
            while start < cols.numel():
                if video >= grids.shape[0]:
                    raise ValueError("the prompt holds more video tokens than video_grid_thw describes")
                t, h, w = (int(x) for x in grids[video])
                n = (h // m) * (w // m)
                slots.append(
                    VideoSlots(row, cols[start : start + t * n].reshape(t, n), cols[:0], (t, h // m, w // m))
                )
                start += t * n
                video += 1
            if start != cols.numel():
                raise ValueError(f"row {row}: video tokens do not match video_grid_thw")
        if video != grids.shape[0]:
            raise ValueError(f"video_grid_thw describes {grids.shape[0]} videos but the prompt holds {video}")
        return slots

    def encode(self, model: nn.Module, inputs: dict) -> Encoded:
        slots = self.video_slots(model, inputs)
        out = model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
        )
        feats = [p.reshape(s.frames, s.tokens_per_frame, -1) for p, s in zip(out.pooler_output, slots)]
        extras = {}
        if getattr(out, "deepstack_features", None) is not None:
            extras["deepstack"] = [list(level) for level in out.deepstack_features]
        return Encoded(feats, slots, out, extras)

    def pack(self, model, encoded: Encoded, kept: list[torch.Tensor], flat: list[torch.Tensor]):
        """Tuple of per-video kept features; Qwen3-VL DeepStack levels gathered at ``flat`` (a merged token takes
        the DeepStack rows of the token it stands for: methods merge only the main features)."""
        fields = {}
        if "deepstack" in encoded.extras:
            fields["deepstack_features"] = [
                tuple(level[v].index_select(0, flat[v].to(level[v].device)) for v in range(len(kept)))
                for level in encoded.extras["deepstack"]
            ]
        return with_pooler(encoded.output, tuple(kept), **fields)

    def intervals(self, model: nn.Module, inputs: dict) -> list[float]:
        """Temporal position step per video: Qwen2-VL 1; Qwen2.5-VL ``tokens_per_second * second_per_grid_t``."""
        n = inputs["video_grid_thw"].shape[0]
        if self.family != "qwen2_5_vl":
            return [1.0] * n
        tps = model.config.vision_config.tokens_per_second
        spg = inputs.get("second_per_grid_ts")
        # a float32 product, as transformers computes tokens_per_second * second_per_grid_t
        return [
            tps * torch.as_tensor(1.0 if spg is None else spg[v], dtype=torch.float32).cpu() for v in range(n)
        ]

    def full_positions(self, model: nn.Module, inputs: dict, *, text_rule: str = "reference") -> torch.Tensor:
        am = attention_mask(inputs)
        if self.family == "qwen3_vl":
            # one frame per block with t = 1: the text rules agree; use transformers' own index
            pos, _ = model.model.get_rope_index(
                inputs["input_ids"],
                inputs["mm_token_type_ids"],
                video_grid_thw=inputs["video_grid_thw"].clone(),
                attention_mask=am,
            )
            return pos.masked_fill((am == 0)[None], 1)
        return rope_index(
            inputs["mm_token_type_ids"],
            am,
            inputs["video_grid_thw"],
            self.intervals(model, inputs),
            self.merge_size(model),
            text_rule,
        )
