"""LLaVA-Video (LLaVA-Video-7B-Qwen2 style) on ``LlavaOnevisionForConditionalGeneration`` (transformers 5.23).

There is no LLaVA-Video class in transformers: the weights have the LLaVA-OneVision architecture (SigLIP tower,
2-layer MLP projector, ``image_newline``, Qwen2 LLM), but the reference pipeline is LLaVA-NeXT's
(``llava/model/llava_arch.py``, lmms-eval ``llava_vid`` defaults ``mm_spatial_pool_mode="average"``,
``mm_spatial_pool_stride=2``, ``mm_newline_position="grid"``). Read there (LLaVA-VL/LLaVA-NeXT): ``encode_multimodals``
runs the tower, then ``mm_projector`` on all 27 x 27 patch tokens, and only **then** ``get_2dPool``
(``avg_pool2d(kernel=stride=2)`` on the 27 x 27 grid, floor: 13 x 13 = 169, the last patch row and column are
dropped); ``add_token_per_grid`` then appends ``image_newline`` after every row of 13: 13 * 14 = **182 tokens per
frame**. The projector is an MLP with a GELU, so projecting before pooling matters. HF's OV class instead pools
bilinearly to 14 x 14 and adds one newline per video (spec hooks_transformers.md 1.1 / 1.2), so this adapter builds
the features itself and the prompt must hold ``F * 182`` video tokens per video: :func:`rewrite_prompt` turns the
HF processor's ``F * 196 + 1`` expansion into that.

Methods score the 169 pooled tokens of each frame (``[F, 169, D]``); the 13 row newlines of every frame are always
kept. Newline order after compression (``newline_order``): ``"after_frame"`` (default: the official VidCom2
``_map_grid_vid`` order, each frame's kept tokens then its 13 newlines) or ``"row"`` (each newline after its row's
kept tokens, where it sits in the uncompressed layout). A video that keeps every token (``method="none"``) is fed
in the uncompressed layout whatever the order, so the vanilla baseline is LLaVA-Video's own input. Positions: ``"contiguous"`` (default; LLaVA-NeXT rebuilds
``inputs_embeds`` and renumbers) or, with ``newline_order="row"`` only, ``"original"`` (the gapped positions of the
uncompressed prompt; with ``after_frame`` the newlines move, so a token's original position is not defined by the
shrunk prompt's columns).

Selecting it (the HF class is shared with LLaVA-OV): ``vidcom2.compress(model, ..., adapter="llava_video")``, or a
config marker read by ``vidcom2.adapters.family_of``: ``config.mm_newline_position == "grid"`` (LLaVA-NeXT's own
key; ``vidcom2.testing.tiny.build("llava_video")`` sets it with ``mm_spatial_pool_mode="average"`` and
``mm_spatial_pool_stride=2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidcom2.adapters._common import attention_mask, check_video_inputs, text_positions, video_chunks
from vidcom2.adapters.base import Encoded, GridLayout, VideoSlots
from vidcom2.adapters.llava_onevision import LlavaModules

NEWLINE_ORDERS = ("after_frame", "row")


def pool_stride(config) -> int:
    """``mm_spatial_pool_stride`` of the config (LLaVA-Video: 2); only average pooling is supported."""
    mode = getattr(config, "mm_spatial_pool_mode", "average")
    if mode != "average":
        raise ValueError(f"the llava_video adapter implements mm_spatial_pool_mode='average', got {mode!r}")
    return int(getattr(config, "mm_spatial_pool_stride", 2))


def grid(config) -> tuple[int, int]:
    """``(patch_side, pooled_side)``: 27 and ``27 // stride = 13`` for SigLIP 384 / 14 (``avg_pool2d`` floors)."""
    vc = config.vision_config
    side = vc.image_size // vc.patch_size
    return side, side // pool_stride(config)


def tokens_per_frame(config) -> int:
    """Prompt tokens per frame: ``pooled * (pooled + 1)`` (182), the row newlines included."""
    _, n = grid(config)
    return n * (n + 1)


def pool_patches(config, x: torch.Tensor) -> torch.Tensor:
    """LLaVA-NeXT ``get_2dPool`` (average mode): ``[frames, side*side, d] -> [frames, pooled*pooled, d]``,
    ``avg_pool2d`` with kernel = stride on the row-major patch grid. Also pools encoder scores / keys."""
    side, pooled = grid(config)
    frames, n, d = x.shape
    if n != side * side:
        raise ValueError(f"expected {side}x{side} = {side * side} patch tokens per frame, got {n}")
    maps = x.view(frames, side, side, d).permute(0, 3, 1, 2)
    out = F.avg_pool2d(maps, pool_stride(config))
    return out.permute(0, 2, 3, 1).reshape(frames, pooled * pooled, d)


def frame_features(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``pixel_values_videos [V, F, 3, H, W]`` -> projected, pooled frames ``[V, F, pooled^2, D]``.

    Tower hidden state ``config.vision_feature_layer`` (HF checkpoints: -1 of a 26-layer tower, before
    ``post_layernorm``), CLS dropped for strategy ``"default"``, then projector, then average pooling (LLaVA-NeXT
    order)."""
    cfg = model.config
    V, Fr = pixels.shape[:2]
    layer = cfg.vision_feature_layer
    out = model.model.vision_tower(pixels.flatten(0, 1), output_hidden_states=layer, return_dict=True)
    if isinstance(layer, int):
        hidden = out.hidden_states[layer]
    else:
        hidden = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
    if cfg.vision_feature_select_strategy == "default":
        hidden = hidden[:, 1:]
    pooled = pool_patches(cfg, model.model.multi_modal_projector(hidden))
    return pooled.reshape(V, Fr, pooled.shape[1], -1)


def rewrite_prompt(inputs: dict, *, video_token_id: int, pad_token_id: int = 0, config=None) -> dict:
    """Processor outputs with every video's token run rewritten to ``F * 182`` tokens (left-padded batch).

    Accepts runs from the HF LLaVA-OV processor (``F * 196 + 1`` per video, ``196 = ceil(27/2)^2``), single
    unexpanded placeholders, and runs already in LLaVA-Video form (left unchanged). ``config``: the model config
    (grid geometry); ``None`` means SigLIP 384 / 14 with stride 2. Returns a new dict; other entries are shared.
    """
    ids = inputs["input_ids"]
    am = attention_mask(inputs)
    frames = int(inputs["pixel_values_videos"].shape[1])
    side, pooled = grid(config) if config is not None else (27, 13)
    ours, hf = frames * pooled * (pooled + 1), frames * (-(-side // 2)) ** 2 + 1
    for key, value in inputs.items():
        if key not in ("input_ids", "attention_mask") and getattr(value, "shape", None) == ids.shape:
            raise NotImplementedError(f"rewrite_prompt cannot rewrite the per-token input {key!r}")
    rows = []
    for row, mask in zip(ids, am):
        toks = row[mask.bool()].tolist()
        new, i = [], 0
        while i < len(toks):
            if toks[i] != video_token_id:
                new.append(toks[i])
                i += 1
                continue
            j = i
            while j < len(toks) and toks[j] == video_token_id:
                j += 1
            n = j - i
            videos = n // hf if n % hf == 0 else n // ours if n % ours == 0 else n if n < ours else None
            if videos is None:
                raise ValueError(
                    f"a run of {n} video tokens is neither F*196+1 = {hf} (HF processor) nor F*182 = {ours} per "
                    f"video for F = {frames} frames; build the prompt with the LLaVA-OV processor"
                )
            new += [video_token_id] * (videos * ours)
            i = j
        rows.append(new)
    width = max(len(r) for r in rows)
    new_ids = torch.full((len(rows), width), pad_token_id, dtype=ids.dtype, device=ids.device)
    new_am = torch.zeros((len(rows), width), dtype=am.dtype, device=am.device)
    for b, r in enumerate(rows):
        new_ids[b, width - len(r) :] = torch.tensor(r, dtype=ids.dtype)
        new_am[b, width - len(r) :] = 1
    return type(inputs)({**inputs, "input_ids": new_ids, "attention_mask": new_am})  # dict or BatchFeature


def packed_newlines(layout: GridLayout, keep: torch.Tensor) -> torch.Tensor:
    """bool ``[K + F * rows]``: True where one video's packed run (its LLM features in sequence order, what
    :meth:`LlavaVideoAdapter.sequence` builds and ``pack`` scatters) holds a row newline, False at its ``K`` kept
    tokens. keep: bool ``[F, rows * cols]``. The newlines go where ``layout.newline_order`` puts them; a video that
    keeps every token is laid out as the uncompressed prompt (a newline after each row) whatever the order."""
    if bool(keep.all()):
        # nothing dropped (method "none", ratio 1): the uncompressed LLaVA-Video layout, whatever the order
        layout = GridLayout(layout.rows, layout.cols, newline_order="row")
    seq = layout.sequence(keep)
    return seq % layout.tokens_per_frame % (layout.cols + 1) == layout.cols


class LlavaVideoAdapter(LlavaModules):
    encoder_inputs = ("pixel_values_videos",)

    def __init__(self, family: str = "llava_video", newline_order: str = "after_frame"):
        if newline_order not in NEWLINE_ORDERS:
            raise ValueError(f"newline_order must be one of {NEWLINE_ORDERS}, got {newline_order!r}")
        self.family = family
        self.newline_order = newline_order
        # "original" needs the newlines at their own columns (see the module docstring)
        self.position_modes = ("contiguous", "original") if newline_order == "row" else ("contiguous",)

    def __repr__(self):
        return f"LlavaVideoAdapter({self.family!r}, newline_order={self.newline_order!r})"

    def layout(self, model: nn.Module) -> GridLayout:
        _, n = grid(model.config)
        return GridLayout(rows=n, cols=n, newline_order=self.newline_order)

    def pool_patches(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Encoder scores / keys ``[frames, 729, d]`` pooled like the features (its ``encoder_score_hooks``, ``vidcom2.stages.encoder``)."""
        return pool_patches(model.config, x)

    def prepare_inputs(self, model: nn.Module, inputs: dict) -> dict:
        """:func:`rewrite_prompt` with this model's token ids and geometry (HF processor output -> F*182)."""
        pad = model.generation_config.pad_token_id
        return rewrite_prompt(
            inputs, video_token_id=self.video_token_id(model), pad_token_id=pad or 0, config=model.config
        )

    # -- prompt layout -------------------------------------------------------------------------------------------
    def visual_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        return inputs["input_ids"] == self.video_token_id(model)

    def video_slots(self, model: nn.Module, inputs: dict) -> list[VideoSlots]:
        if not hasattr(getattr(model, "model", None), "image_newline"):
            raise ValueError(
                f"the llava_video adapter needs LLaVA-Video weights in a LlavaOnevisionForConditionalGeneration, got "
                f"{type(model).__name__}; leave `adapter` unset to pick the model's own adapter"
            )
        check_video_inputs(inputs)
        pixels = inputs["pixel_values_videos"]
        frames = int(pixels.shape[1])
        _, n = grid(model.config)
        per_video = frames * n * (n + 1)
        mask = self.visual_token_mask(model, inputs)
        hint = (
            f"F*{n * (n + 1)} = {per_video} (LLaVA-Video layout); rewrite the HF processor's prompt (F*196+1 tokens "
            "per video) with vidcom2.adapters.llava_video.rewrite_prompt or adapter.prepare_inputs(model, inputs)"
        )
        slots = []
        for row, chunk in video_chunks(mask, per_video, hint, pixels.shape[0]):
            g = chunk.view(frames, n, n + 1)
            slots.append(VideoSlots(row, g[:, :, :n].reshape(frames, n * n), g[:, :, n].reshape(-1), (frames, n, n)))
        return slots

    # -- encoder and rebuilding ----------------------------------------------------------------------------------
    def encode(self, model: nn.Module, inputs: dict) -> Encoded:
        slots = self.video_slots(model, inputs)
        feats = frame_features(model, inputs["pixel_values_videos"])  # [V, F, 169, D]
        # no HF get_video_features output exists for this layout: pack builds a fresh container
        return Encoded(list(feats), slots, None, {"newline": model.model.image_newline})

    def sequence(
        self, model: nn.Module, kept: torch.Tensor, flat: torch.Tensor, frames: int, newline
    ) -> torch.Tensor:
        """One video's LLM features in sequence order: kept features (slot order) and the row newlines placed by
        ``newline_order``. kept ``[K, D]``, flat ``[K]`` -> ``[K + frames * rows, D]``."""
        layout = self.layout(model)
        keep = torch.zeros(frames * layout.scored_per_frame, dtype=torch.bool, device=kept.device)
        keep[flat.to(kept.device)] = True
        is_newline = packed_newlines(layout, keep.view(frames, -1))
        out = kept.new_empty(is_newline.numel(), kept.shape[-1])
        out[~is_newline] = kept  # in their given order (Selection.order), as shrink fills the kept slots
        out[is_newline] = newline.to(kept.dtype)
        return out

    def pack(self, model, encoded: Encoded, kept: list[torch.Tensor], flat: list[torch.Tensor]):
        newline = encoded.extras["newline"]
        rows = [self.sequence(model, k, f, s.frames, newline) for k, f, s in zip(kept, flat, encoded.slots)]
        # as LLaVA-OV: one row per video when lengths agree (generate's beam expansion splits by rows)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooled = torch.stack(rows) if len({r.shape[0] for r in rows}) == 1 else torch.cat(rows)[None]
        return BaseModelOutputWithPooling(pooler_output=pooled)

    def full_positions(self, model: nn.Module, inputs: dict, *, text_rule: str = "hf5") -> torch.Tensor:
        return text_positions(attention_mask(inputs))[None]

    def shrunk_candidates(self, model: nn.Module, inputs: dict, selections: list) -> torch.Tensor:
        """bool ``[L]`` of row 0 of a prompt shrunk by ``selections`` (one per video, prompt order): the kept tokens
        of each video's run of video tokens, not its row newlines (:func:`packed_newlines`, the layout ``pack``
        fed). Every newline carries the video token id, so the ids alone cannot tell them apart."""
        video = self.visual_token_mask(model, inputs)[0]
        cols = video.nonzero().squeeze(1)
        if any(sel is None for sel in selections):
            raise ValueError("shrunk_candidates needs every video's Selection (None: keep all is not supported here)")
        layout = self.layout(model)
        runs = [~packed_newlines(layout, sel.keep.to(cols.device).bool()) for sel in selections]
        if sum(r.numel() for r in runs) != cols.numel():
            raise ValueError(
                f"the prompt holds {cols.numel()} video tokens but its selections pack "
                f"{sum(r.numel() for r in runs)} (kept tokens + {layout.rows} row newlines per frame): pass the "
                "prompt these selections shrank"
            )
        mask = torch.zeros_like(video)
        mask[cols] = torch.cat(runs)
        return mask
