"""The vision-encoder stage: "attention received" scores and key metrics captured while the encoder runs
(VisionZip and relatives).

Recipe: shared/spec/hooks_transformers.md section 6, option B (works under every attention backend, FlashAttention
included): a forward pre-hook on the attention module of the encoder layer that feeds the projector captures its
input, recomputes q/k with the module's own projections (+ the vision rotary embedding on Qwen), and scores one frame
(one attention chunk) at a time in query blocks, so at most ``[heads, block, n]`` probabilities exist at once
(:func:`vidcom2.stages.attention.attention_received`). The layer itself runs unchanged with the model's backend (no
eager tower, no second forward of the block); the extra cost is one q/k projection and one ``QK^T`` of that layer.

- score of token ``j`` = mean over heads and over all queries ``i`` of the frame of ``softmax_j(q_i . k_j * scale)``
  (SigLIP has no CLS token, so VisionZip's CLS attention becomes attention received; baselines.md 7.3);
- key metric = the layer's key projection averaged over heads, **before** rotary embedding on Qwen (content only;
  with RoPE the similarity would depend on relative position).

Where to hook and how the scores reach the LLM token grid is the adapter's answer
(``adapter.encoder_score_hooks(model, out, block)``, see ``vidcom2.adapters.base.Adapter``); this module only opens
and closes the scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from vidcom2.stages.attention import QUERY_BLOCK


@dataclass
class EncoderScores:
    """Filled while the vision encoder runs inside :func:`capture`.

    scores: one ``[F, n]`` float32 tensor per encoder call (LLaVA-OV: per tower call, frames of that call in order;
        Qwen: per video of the call, split by ``grid_thw``), ``n`` = LLM tokens per frame.
    keys: matching ``[F, n, head_dim]`` float32 key metrics (mean over heads).
    layer: index of the encoder block whose attention was scored.
    global_features: with ``signal="map_head"``: one ``[F, Dg]`` float32 tensor per encoder call (the head's pooled
        vector per frame); ``scores`` then hold the head's attention on the LLM grid and ``keys`` stay empty.
    """

    scores: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    global_features: list = field(default_factory=list)
    layer: int | None = None


@contextmanager
def capture(adapter, model, *, block: int = QUERY_BLOCK, head=None) -> Iterator[EncoderScores]:
    """Record encoder scores and keys while the vision encoder runs inside the block; hooks removed on exit.

    adapter: the model family's adapter (``vidcom2.adapters.get_adapter(model)``), which registers the hooks.
    head: ``None`` (attention received + keys, ``adapter.encoder_score_hooks``) or the adapter's attention-pooling
        head (``adapter.map_head(model)``): global features + the head's attention (``adapter.map_head_hooks``)."""
    out = EncoderScores()
    handles = []
    try:
        if head is None:
            handles.extend(adapter.encoder_score_hooks(model, out, block))
        else:
            handles.extend(adapter.map_head_hooks(model, out, head))
        yield out
    finally:
        for h in handles:
            h.remove()
