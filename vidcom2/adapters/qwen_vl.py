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

import contextlib
import itertools

import torch
from torch import nn

from vidcom2.adapters._common import (
    attention_mask,
    check_video_inputs,
    decoder_query_key,
    text_positions,
    with_pooler,
)
from vidcom2.adapters.base import TEXT_RULES, Encoded, VideoSlots
from vidcom2.hooks import instance_attr
from vidcom2.stages.attention import attention_received, vision_rope


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
    mrope = True  # 3-D M-RoPE (t, h, w)
    newline_order = None  # no newline tokens in the video span

    def __init__(self, family: str):
        if family not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
            raise ValueError(f"QwenVLAdapter serves qwen2_vl, qwen2_5_vl and qwen3_vl, not {family!r}")
        self.family = family
        # Qwen2/2.5-VL: where text resumes after a video is a choice (module docstring); Qwen3-VL: one rule
        self.uses_text_rule = family in ("qwen2_vl", "qwen2_5_vl")

    def __repr__(self):
        return f"QwenVLAdapter({self.family!r})"

    def text_model(self, model: nn.Module) -> nn.Module:
        return model.model.language_model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.language_model.layers

    def layer_query_key(self, layer: nn.Module, hidden: torch.Tensor) -> tuple:
        """The Qwen2/Qwen3 decoder layer's input norm and q (last token) / k projections, Qwen3 with its q/k norms
        (``decoder_query_key``)."""
        return decoder_query_key(layer, hidden)

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

    # -- answers to the model-agnostic stages ------------------------------------------------------------------
    @contextlib.contextmanager
    def generate_scope(self, model: nn.Module):
        """``generate`` caches ``rope_deltas`` on ``model.model``: the block leaves it as it was."""
        rope_deltas = getattr(model.model, "rope_deltas", None)
        try:
            yield
        finally:
            if hasattr(model.model, "rope_deltas"):
                model.model.rope_deltas = rope_deltas

    def rotary(self, model: nn.Module, hidden: torch.Tensor, positions: torch.Tensor):
        """``(cos, sin)`` of the text model at ``positions [n]`` on all three M-RoPE axes (renumbered tokens)."""
        return self.text_model(model).rotary_emb(hidden, positions.view(1, 1, -1).expand(3, 1, -1))

    def position_ids(self, positions: torch.Tensor, attention_mask: torch.Tensor, *, position_mode: str):
        """``[4, B, L']``: row 0 the 1-D text positions of the shrunk prompt (it only drives mask building), then the
        gathered 3-D M-RoPE ``positions [3, B, L']``."""
        return torch.cat([text_positions(attention_mask)[None], positions])

    def scored_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """Every video token may be dropped (no layout tokens inside a video's run)."""
        return self.visual_token_mask(model, inputs)

    def shrunk_candidates(self, model: nn.Module, inputs: dict, selections: list) -> torch.Tensor:
        """bool ``[L]``: row 0's in-LLM candidates of a prompt shrunk by ``selections``: :meth:`scored_token_mask`
        (no layout tokens in a video's run)."""
        return self.scored_token_mask(model, inputs)[0].clone()

    def prefill_sequence(self, model: nn.Module, current):
        """Qwen3-VL: while the block is open, a prefill whose hidden states were pruned (``current()``: the original
        indices of the sequence a layer processes) gets ``visual_pos_masks`` and the DeepStack rows gathered with
        the kept indices (spec 5.4; recycled tokens, ids past the prompt, get no DeepStack rows). Instance-scoped."""
        text_model = self.text_model(model)
        if not hasattr(text_model, "_deepstack_process"):
            return contextlib.nullcontext()
        original = text_model._deepstack_process

        def wrapped(hidden_states, visual_pos_masks, visual_embeds):
            keep = current()
            if keep is None or hidden_states.shape[1] == visual_pos_masks.shape[1]:
                return original(hidden_states, visual_pos_masks, visual_embeds)
            full = visual_pos_masks.reshape(-1).to(keep.device)
            if int(keep.max()) >= full.numel():
                full = torch.cat([full, full.new_zeros(int(keep.max()) + 1 - full.numel())])
            rows = (full.long().cumsum(0) - 1)[keep][full[keep]]
            return original(hidden_states, full[keep].view(1, -1), visual_embeds[rows.to(visual_embeds.device)])

        return instance_attr(text_model, "_deepstack_process", wrapped)

    def map_head(self, model: nn.Module):
        """Qwen's vision tower has no attention-pooling head: refused (FastVID's official Qwen2.5-VL variant uses
        other signals and is not implemented; ``signal='encoder'`` runs on this adapter's encoder scores)."""
        raise ValueError(
            f"signal='map_head' needs SigLIP's attention-pooling head, which the {self.family} vision tower does not "
            "have; use signal='encoder' (attention received + the frame's mean token) on this model"
        )

    def map_head_hooks(self, model: nn.Module, out, head) -> list:
        return self.map_head(model)

    def encoder_score_hooks(self, model: nn.Module, out, block: int) -> list:
        """Hook the last vision block (Qwen2.5-VL: the last full-attention one, ``fullatt_block_indexes``; windowed
        blocks see only local windows), per temporal patch (its ``cu_seqlens`` chunk), mean over each 2x2 merge
        group (the merger's grouping); Qwen2.5-VL rows come in window order and are put back with
        ``argsort(window_index)`` as the model does after the merger. Fills ``out``; returns the handles."""
        visual = self.vision_tower(model)
        full = getattr(visual, "fullatt_block_indexes", None)
        out.layer = max(int(i) for i in full) if full else len(visual.blocks) - 1
        grids: list = []

        def on_tower(module, args, kwargs):
            grids.append(kwargs["grid_thw"] if "grid_thw" in kwargs else args[1])
            return None

        def on_attention(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # [S, D]
            cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
            with torch.no_grad():
                unit = visual.spatial_merge_size**2
                scores, keys = _frame_scores(module, hidden, cu, kwargs["position_embeddings"], block, unit)
                _split_per_video(visual, grids[-1], scores, keys, full is not None, out)
            return None

        return [
            visual.register_forward_pre_hook(on_tower, with_kwargs=True),
            visual.blocks[out.layer].attn.register_forward_pre_hook(on_attention, with_kwargs=True),
        ]


def _frame_scores(module, hidden: torch.Tensor, cu: torch.Tensor, position_embeddings, block: int, unit: int):
    """Attention received ``[S / unit]`` and pre-RoPE content keys ``[S / unit, d]`` of one Qwen vision block call,
    per ``cu_seqlens`` chunk, averaged over each merge group of ``unit`` (``spatial_merge_size**2``) consecutive rows,
    as the merger concatenates them."""
    cos, sin = position_embeddings
    s, heads = hidden.shape[0], module.num_heads
    q, k, _ = module.qkv(hidden).reshape(s, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)  # [S, H, d]
    keys = k.float().mean(dim=1)  # pre-RoPE content keys [S, d]
    q, k = vision_rope(q, cos, sin), vision_rope(k, cos, sin)
    bounds = cu.tolist()
    scores = torch.cat(
        [
            attention_received(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), module.scaling, block)
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
    )
    return scores.view(-1, unit).mean(dim=1), keys.view(-1, unit, keys.shape[-1]).mean(dim=1)


def _split_per_video(visual, grid: torch.Tensor, scores, keys, windowed: bool, out) -> None:
    """Append one ``[T, n]`` score map and ``[T, n, d]`` keys per video of ``grid`` to ``out`` (window order undone
    on Qwen2.5-VL)."""
    m = visual.spatial_merge_size
    if windowed:
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(grid, m, visual.window_size, visual.patch_size)
        reverse = torch.argsort(window_index.to(scores.device))
        scores, keys = scores[reverse], keys[reverse]
    start = 0
    for t, h, w in grid.tolist():
        n = (h // m) * (w // m)
        out.scores.append(scores[start : start + t * n].view(t, n))
        out.keys.append(keys[start : start + t * n].view(t, n, -1))
        start += t * n
