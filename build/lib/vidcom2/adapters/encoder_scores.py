"""Hook (c): "attention received" scores and key metrics from the vision encoder (VisionZip and relatives).

Recipe: shared/spec/hooks_transformers.md section 6, option B (works under every attention backend,
FlashAttention included): a forward pre-hook on the attention module of the encoder layer that feeds the projector
captures its input, recomputes q/k with the module's own projections (+ the vision rotary embedding on Qwen), and
scores one frame (one attention chunk) at a time in query blocks, so at most ``[heads, block, n]`` probabilities
exist at once. The layer itself runs unchanged with the model's backend (no eager tower, no second forward of the
block); the extra cost is one q/k projection and one ``QK^T`` of that layer.

- score of token ``j`` = mean over heads and over all queries ``i`` of the frame of ``softmax_j(q_i . k_j * scale)``
  (SigLIP has no CLS token, so VisionZip's CLS attention becomes attention received; baselines.md 7.3);
- key metric = the layer's key projection averaged over heads, **before** rotary embedding on Qwen (content only;
  with RoPE the similarity would depend on relative position).

Both are brought to the LLM token grid exactly like the features:

- LLaVA-OneVision: the score map and keys at 27x27 go through the model's own ``apply_pooling`` (bilinear to 14x14);
  requires ``vision_feature_select_strategy="full"`` and an int ``vision_feature_layer``;
- Qwen2-VL / Qwen3-VL: the last vision block, per temporal patch (its ``cu_seqlens`` chunk), mean over each 2x2
  merge group (4 consecutive rows, the merger's grouping);
- Qwen2.5-VL: the last full-attention block (``fullatt_block_indexes``; windowed blocks only see local windows);
  its rows are in window order, so groups are put back with ``argsort(window_index)`` as the model does after the
  merger.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

#: Queries per block when accumulating attention received (memory ``heads * block * n`` floats per frame).
QUERY_BLOCK = 256


@dataclass
class EncoderScores:
    """Filled while the vision encoder runs inside :func:`capture`.

    scores: one ``[F, n]`` float32 tensor per encoder call (LLaVA-OV: per tower call, frames of that call in order;
        Qwen: per video of the call, split by ``grid_thw``), ``n`` = LLM tokens per frame.
    keys: matching ``[F, n, head_dim]`` float32 key metrics (mean over heads).
    layer: index of the encoder block whose attention was scored.
    """

    scores: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    layer: int | None = None


def attention_received(
    q: torch.Tensor, k: torch.Tensor, scale: float, block: int = QUERY_BLOCK
) -> torch.Tensor:
    """Mean over heads and queries of ``softmax(q k^T * scale)``: ``[n]`` float32.

    q, k: ``[heads, n, d]`` of one frame. Query blocks of ``block`` rows bound memory to ``heads * block * n``.
    """
    q, k = q.float(), k.float()
    heads, n = q.shape[0], q.shape[1]
    total = torch.zeros(k.shape[1], dtype=torch.float32, device=k.device)
    kt = k.transpose(-1, -2)
    for start in range(0, n, block):
        probs = torch.softmax((q[:, start : start + block] @ kt) * scale, dim=-1)
        total += probs.sum(dim=(0, 1))
    return total / (heads * n)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def _vision_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Qwen vision RoPE in float32 (as ``apply_rotary_pos_emb_vision``): ``x [S, H, d]``, ``cos/sin [S, d]``."""
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


def _first(args, kwargs, name, index):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


# ----------------------------------------------------------------------------------------------------------------
# LLaVA-OneVision (SigLIP tower)


def _siglip_layers(model):
    tower = model.model.vision_tower
    # 5.x SiglipVisionModel holds the encoder itself (4.x wrapped it in .vision_model)
    return getattr(tower, "vision_model", tower).encoder.layers


def _llava_layer(model) -> int:
    cfg = model.config
    layer = cfg.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"encoder scores need one vision_feature_layer, got {layer!r}")
    if cfg.vision_feature_select_strategy != "full":
        raise ValueError(
            f"encoder scores support vision_feature_select_strategy='full' (SigLIP, no CLS), got "
            f"{cfg.vision_feature_select_strategy!r}"
        )
    n_layers = len(_siglip_layers(model))
    index = layer % (n_layers + 1)  # hidden_states[i] is the output of encoder layer i-1
    if index == 0:
        raise ValueError("vision_feature_layer selects the patch embeddings; there is no attention to score")
    return index - 1


def _llava_hook(model, out: EncoderScores, block: int, adapter=None):
    # an adapter that pools features itself (llava_video: average stride 2) pools the scores the same way
    own = getattr(adapter, "pool_patches", None)
    pool = (lambda x: own(model, x)) if own is not None else model.model.apply_pooling

    def hook(module, args, kwargs):
        hidden = _first(args, kwargs, "hidden_states", 0)  # [frames, 729, D]
        frames, n, _ = hidden.shape
        heads, d = module.num_heads, module.head_dim
        with torch.no_grad():
            q = module.q_proj(hidden).view(frames, n, heads, d).transpose(1, 2)
            k = module.k_proj(hidden).view(frames, n, heads, d).transpose(1, 2)
            scores = torch.stack([attention_received(q[f], k[f], module.scale, block) for f in range(frames)])
            keys = k.float().mean(dim=1)  # [frames, n, d]
            out.scores.append(pool(scores.unsqueeze(-1)).squeeze(-1))
            out.keys.append(pool(keys))
        return None

    return hook


# ----------------------------------------------------------------------------------------------------------------
# Qwen2-VL / Qwen2.5-VL / Qwen3-VL


def _qwen_layer(visual) -> int:
    depth = len(visual.blocks)
    full = getattr(visual, "fullatt_block_indexes", None)
    if full:  # Qwen2.5-VL: windowed blocks see only local windows
        return max(int(i) for i in full)
    return depth - 1


def _qwen_hooks(visual, out: EncoderScores, block: int, layer: int):
    grids: list = []
    unit = visual.spatial_merge_size**2
    windowed = getattr(visual, "fullatt_block_indexes", None) is not None

    def on_tower(module, args, kwargs):
        grids.append(_first(args, kwargs, "grid_thw", 1))
        return None

    def on_attention(module, args, kwargs):
        hidden = _first(args, kwargs, "hidden_states", 0)  # [S, D], window order on Qwen2.5-VL
        cu = _first(args, kwargs, "cu_seqlens", 1)
        cos, sin = kwargs["position_embeddings"]
        grid = grids[-1]
        s = hidden.shape[0]
        heads = module.num_heads
        with torch.no_grad():
            q, k, _ = module.qkv(hidden).reshape(s, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)  # [S, H, d]
            keys = k.float().mean(dim=1)  # pre-RoPE content keys [S, d]
            q, k = _vision_rope(q, cos, sin), _vision_rope(k, cos, sin)
            bounds = cu.tolist()
            scores = torch.cat(
                [
                    attention_received(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), module.scaling, block)
                    for a, b in zip(bounds[:-1], bounds[1:])
                ]
            )
            # merge groups: 4 consecutive rows (spatial_merge_size**2), as the merger concatenates them
            scores = scores.view(-1, unit).mean(dim=1)
            keys = keys.view(-1, unit, keys.shape[-1]).mean(dim=1)
            if windowed:
                from transformers.vision_utils import get_vision_window_index

                window_index, _ = get_vision_window_index(
                    grid, visual.spatial_merge_size, visual.window_size, visual.patch_size
                )
                reverse = torch.argsort(window_index.to(scores.device))
                scores, keys = scores[reverse], keys[reverse]
            start = 0
            for t, h, w in grid.tolist():
                n = (h // visual.spatial_merge_size) * (w // visual.spatial_merge_size)
                out.scores.append(scores[start : start + t * n].view(t, n))
                out.keys.append(keys[start : start + t * n].view(t, n, -1))
                start += t * n
        return None

    handles = [visual.register_forward_pre_hook(on_tower, with_kwargs=True)]
    handles.append(visual.blocks[layer].attn.register_forward_pre_hook(on_attention, with_kwargs=True))
    return handles


@contextmanager
def capture(adapter, model, *, block: int = QUERY_BLOCK) -> Iterator[EncoderScores]:
    """Record encoder scores and keys while the vision encoder runs inside the block; hooks removed on exit.

    ``adapter`` is accepted for the dispatch signature; module paths are resolved from ``model`` (HF classes
    LlavaOnevisionForConditionalGeneration and Qwen2/2.5/3-VL ``*ForConditionalGeneration``).
    """
    base = model.model
    out = EncoderScores()
    handles = []
    try:
        if hasattr(base, "vision_tower"):
            out.layer = _llava_layer(model)
            attn = _siglip_layers(model)[out.layer].self_attn
            handles.append(
                attn.register_forward_pre_hook(_llava_hook(model, out, block, adapter), with_kwargs=True)
            )
        elif hasattr(base, "visual"):
            out.layer = _qwen_layer(base.visual)
            handles.extend(_qwen_hooks(base.visual, out, block, out.layer))
        else:
            raise ValueError(
                f"encoder scores: {type(model).__name__} has neither model.vision_tower (LLaVA-OV) nor model.visual "
                "(Qwen-VL); supported: LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL"
            )
        yield out
    finally:
        for h in handles:
            h.remove()
