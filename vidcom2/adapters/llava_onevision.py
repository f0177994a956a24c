"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``, transformers 5.23).

Layout (spec hooks_transformers.md 1.1): per frame SigLIP 27x27 patches -> projector -> bilinear pooling to 14x14 =
196 tokens; one ``image_newline`` after the whole video. The prompt holds ``F*196 + 1`` video tokens per video;
the newline is always kept (after the kept tokens, as in the uncompressed layout). Positions are 1-D RoPE.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from vidcom2.adapters import _siglip_head
from vidcom2.adapters._common import (
    attention_mask,
    check_video_inputs,
    decoder_query_key,
    text_positions,
    video_chunks,
    with_pooler,
)
from vidcom2.adapters.base import Encoded, VideoSlots
from vidcom2.stages.attention import attention_received


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

    def layer_query_key(self, layer: nn.Module, hidden: torch.Tensor) -> tuple:
        """The Qwen2 decoder layer's input norm and q (last token) / k projections (``decoder_query_key``)."""
        return decoder_query_key(layer, hidden)

    def video_token_id(self, model: nn.Module) -> int:
        cfg = model.config
        return int(getattr(cfg, "video_token_id", None) or cfg.video_token_index)

    # -- answers to the model-agnostic stages ------------------------------------------------------------------
    mrope = False  # 1-D RoPE
    uses_text_rule = False

    def generate_scope(self, model: nn.Module):
        """Nothing ``generate`` caches on the model needs restoring."""
        return contextlib.nullcontext()

    def rotary(self, model: nn.Module, hidden: torch.Tensor, positions: torch.Tensor):
        """``(cos, sin)`` of the text model at 1-D ``positions [n]``."""
        return self.text_model(model).rotary_emb(hidden, positions.view(1, -1))

    def position_ids(self, positions: torch.Tensor, attention_mask: torch.Tensor, *, position_mode: str):
        """``generate``'s ``position_ids`` of a shrunk prompt from its gathered ``positions [1, B, L']``: the gapped
        original ones (``"original"``), or ``None`` (``"contiguous"``: ``generate`` numbers the kept tokens)."""
        return positions[0] if position_mode == "original" else None

    def scored_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """bool ``[B, L]``: the video tokens a method may drop, from ``input_ids`` alone (no slots)."""
        return self.visual_token_mask(model, inputs)

    def shrunk_candidates(self, model: nn.Module, inputs: dict, selections: list) -> torch.Tensor:
        """bool ``[L]``: row 0's in-LLM candidates of a prompt shrunk by ``selections``; no layout token sits inside
        a shrunk run (LLaVA-OV's newline ends it), so :meth:`scored_token_mask` of the ids (LLaVA-Video overrides)."""
        return self.scored_token_mask(model, inputs)[0].clone()

    def prefill_sequence(self, model: nn.Module, current):
        """Nothing per-token besides the hidden states to keep aligned with a pruned prefill (no DeepStack)."""
        return contextlib.nullcontext()

    def pool_patches(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Encoder scores / keys ``[frames, 729, d]`` brought to the LLM token grid like the features (HF
        ``apply_pooling``: bilinear to 14 x 14)."""
        return model.model.apply_pooling(x)

    def encoder_score_hooks(self, model: nn.Module, out, block: int) -> list:
        """Hook the SigLIP attention of the layer that feeds the projector (``vision_feature_layer``; needs
        ``vision_feature_select_strategy="full"``); scores and keys are pooled like the features
        (:meth:`pool_patches`). Fills ``out`` (``vidcom2.stages.encoder.EncoderScores``); returns the handles."""
        out.layer = self._scored_layer(model)
        attn = self.vision_blocks(model)[out.layer].self_attn

        def hook(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # [frames, 729, D]
            frames, n, _ = hidden.shape
            heads, d = module.num_heads, module.head_dim
            with torch.no_grad():
                q = module.q_proj(hidden).view(frames, n, heads, d).transpose(1, 2)
                k = module.k_proj(hidden).view(frames, n, heads, d).transpose(1, 2)
                scores = torch.stack([attention_received(q[f], k[f], module.scale, block) for f in range(frames)])
                out.scores.append(self.pool_patches(model, scores.unsqueeze(-1)).squeeze(-1))
                out.keys.append(self.pool_patches(model, k.float().mean(dim=1)))  # [frames, n, d]
            return None

        return [attn.register_forward_pre_hook(hook, with_kwargs=True)]

    map_head_source = _siglip_head.SOURCE  # where a checkpoint without a head gets it (the official code's choice)

    def map_head(self, model: nn.Module) -> _siglip_head.MapHead:
        """SigLIP's ``post_layernorm`` + MAP head: the tower's own, else loaded from :attr:`map_head_source`
        (``vidcom2.adapters._siglip_head``; a clear error when offline and not cached)."""
        return _siglip_head.of_tower(self.vision_tower(model), self.map_head_source)

    def map_head_hooks(self, model: nn.Module, out, head) -> list:
        """Hook the projector's input (the encoder output it projects, ``[frames, 729, D]``): ``head`` (from
        :meth:`map_head`) gives per frame the global feature (``out.global_features``) and the probe attention,
        pooled to the LLM token grid like the features (:meth:`pool_patches`, in the head's dtype: ``out.scores``)."""
        out.layer = None

        def hook(module, args):
            with torch.no_grad():
                glob, attn = head(args[0])
                out.global_features.append(glob.float())
                out.scores.append(self.pool_patches(model, attn.unsqueeze(-1)).squeeze(-1).float())
            return None

        return [model.model.multi_modal_projector.register_forward_pre_hook(hook)]

    def _scored_layer(self, model: nn.Module) -> int:
        cfg = model.config
        layer = cfg.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"encoder scores need one vision_feature_layer, got {layer!r}")
        if cfg.vision_feature_select_strategy != "full":
            raise ValueError(
                f"encoder scores support vision_feature_select_strategy='full' (SigLIP, no CLS), got "
                f"{cfg.vision_feature_select_strategy!r}"
            )
        index = layer % (len(self.vision_blocks(model)) + 1)  # hidden_states[i] is the output of encoder layer i-1
        if index == 0:
            raise ValueError("vision_feature_layer selects the patch embeddings; there is no attention to score")
        return index - 1


class LlavaOnevisionAdapter(LlavaModules):
    # contiguous: kept tokens renumbered 0..L'-1 (what the official VidCom2 LLaVA-OV integration does, because it
    # rebuilds inputs_embeds); original: the gapped positions of the uncompressed prompt.
    position_modes = ("contiguous", "original")
    encoder_inputs = ("pixel_values_videos",)
    newline_order = None  # one newline after each video, always kept: no order to choose

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

    def scored_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """The video tokens without the one newline, the last video token of each video's run."""
        mask = self.visual_token_mask(model, inputs)
        ends = mask & ~torch.cat([mask[:, 1:], mask.new_zeros(mask.shape[0], 1)], dim=1)
        return mask & ~ends
