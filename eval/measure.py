"""Efficiency measurements of one run: per-sample split latency, visual token counts, peak memory, analytic FLOPs.

Per sample the model wrapper records one dict (see :func:`sample_row`): the adapter's ``SampleStats`` fields
(visual tokens in / out / layer-averaged, vision encoder, compression, prefill and decode seconds, new tokens,
prompt tokens in / out) plus ``preprocess_s``, the wall time of the request outside ``model.generate`` (video
decode, frame sampling, processor, tokenisation). :func:`summarise` turns the rows into the record's
``efficiency`` block; the first ``warmup`` rows are excluded from every latency mean (they pay one-off costs:
kernel selection, allocator growth, lazy imports).

FLOPs convention (FastV, arXiv 2403.06764, followed by VidCom2's efficiency table): one multiply-accumulate counts
as one FLOP and only the decoder layers count (no embedding, no LM head, no vision tower). Per decoder layer with
``n`` tokens, hidden size ``d``, MLP width ``m``::

    4*n*d^2 + 2*n^2*d + 3*n*d*m

``4*n*d^2`` is the q, k, v, o projections; with grouped-query attention k and v are ``n*d*d_kv`` each
(``d_kv = num_key_value_heads * head_dim``) and q, o are ``n*d*d_q`` (``d_q = num_attention_heads * head_dim``,
which equals ``d`` for every model here), so the term is ``2*n*d*d_q + 2*n*d*d_kv``. ``2*n^2*d`` is
``QK^T`` plus the attention-weighted sum of values (width ``d_q``). ``3*n*d*m`` is the gated MLP (gate, up and down).
One decode step at context length ``c`` costs ``2*d*d_q + 2*d*d_kv + 2*c*d_q + 3*d*m`` per layer.

Sparse-MoE layers (Qwen3-VL-30B-A3B) count the experts a token is routed to: ``m = k * m_e`` (``k`` =
``num_experts_per_tok``, ``m_e`` = ``moe_intermediate_size``), plus the router (``n*d*E`` for ``E`` experts, written
as ``E/3`` of MLP width); dense layers of such a model (``mlp_only_layers``, ``decoder_sparse_step``) keep
``intermediate_size``, the rule of transformers' ``Qwen3VLMoeTextDecoderLayer``.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

LATENCY_KEYS = ("preprocess", "vision_encoder", "compression", "prefill", "decode")


@dataclass(frozen=True)
class LLMShape:
    """The decoder dimensions the FLOPs formula needs, read from a transformers config."""

    layers: int
    hidden: int  # d
    intermediate: int  # m
    q_width: int  # num_attention_heads * head_dim
    kv_width: int  # num_key_value_heads * head_dim
    mlp: tuple[float, ...] = ()  # per-layer MLP width when layers differ (MoE); empty: `intermediate` everywhere

    def mlp_width(self, layer: int | None = None) -> float:
        """The MLP width ``m`` of decoder layer ``layer`` (active experts for a sparse-MoE layer)."""
        if not self.mlp:
            return self.intermediate
        if layer is None:
            raise ValueError("this model's layers have different MLP widths (MoE): pass the layer index")
        return self.mlp[layer]

    @classmethod
    def from_config(cls, config) -> LLMShape:
        """From a VLM config (its ``text_config``) or an LLM config."""
        c = getattr(config, "text_config", None) or config
        heads = c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        layers = c.num_hidden_layers
        experts, top_k = getattr(c, "num_experts", 0) or 0, getattr(c, "num_experts_per_tok", 0) or 0
        mlp: tuple[float, ...] = ()
        if experts > 0 and top_k > 0 and getattr(c, "moe_intermediate_size", None):
            step, dense = getattr(c, "decoder_sparse_step", 1) or 1, set(getattr(c, "mlp_only_layers", None) or ())
            sparse = top_k * c.moe_intermediate_size + experts / 3
            mlp = tuple(
                sparse if (i not in dense and (i + 1) % step == 0) else float(c.intermediate_size) for i in range(layers)
            )
        return cls(layers, c.hidden_size, c.intermediate_size, heads * head_dim, kv_heads * head_dim, mlp)


def layer_prefill_flops(shape: LLMShape, n: int, layer: int | None = None) -> float:
    """FLOPs of decoder layer ``layer`` over ``n`` tokens (module docstring formula)."""
    d, m = shape.hidden, shape.mlp_width(layer)
    return 2 * n * d * shape.q_width + 2 * n * d * shape.kv_width + 2 * n * n * shape.q_width + 3 * n * d * m


def layer_decode_flops(shape: LLMShape, context: float, layer: int | None = None) -> float:
    """FLOPs of decoder layer ``layer`` for one new token attending to ``context`` cached tokens (itself included)."""
    d, m = shape.hidden, shape.mlp_width(layer)
    return 2 * d * shape.q_width + 2 * d * shape.kv_width + 2 * context * shape.q_width + 3 * d * m


def seq_lengths_per_layer(shape: LLMShape, prompt_in: int, visual_in: int, visual_out: int, visual_layer_avg: float) -> list[int]:
    """Sequence length seen by each decoder layer.

    Pre-LLM methods: every layer sees ``prompt_in - visual_in + visual_out``. In-LLM methods (FastV, PDrop) prune
    inside the decoder; with only the layer average known, the schedule is taken as two-level (layers before the
    pruning layer keep ``visual_in``, the rest ``visual_out``) with the number of full layers chosen so the average
    matches: exact for FastV (one pruning layer), an approximation for multi-stage PDrop (the quadratic term is
    then slightly under-counted).
    """
    text = prompt_in - visual_in
    if visual_in <= visual_out or abs(visual_layer_avg - visual_out) < 1e-6:
        return [text + visual_out] * shape.layers
    full = round(shape.layers * (visual_layer_avg - visual_out) / (visual_in - visual_out))
    full = min(max(full, 0), shape.layers)
    return [text + visual_in] * full + [text + visual_out] * (shape.layers - full)


def sample_flops(shape: LLMShape, row: dict) -> tuple[int, int]:
    """(prefill FLOPs, mean decode FLOPs per generated token) of one measured sample row.

    Uses the exact per-layer visual counts when the row carries them (``visual_tokens_per_layer``, one int per decoder
    layer), else the schedule :func:`seq_lengths_per_layer` reconstructs from the layer average.
    """
    per_layer = row.get("visual_tokens_per_layer")
    if per_layer is not None and len(per_layer) == shape.layers:
        text = row["prompt_tokens_in"] - row["visual_tokens_in"]
        lengths = [text + int(v) for v in per_layer]
    else:
        lengths = seq_lengths_per_layer(
            shape, row["prompt_tokens_in"], row["visual_tokens_in"], row["visual_tokens_out"], row["visual_tokens_layer_avg"]
        )
    prefill = sum(layer_prefill_flops(shape, n, i) for i, n in enumerate(lengths))
    steps = max(int(row.get("new_tokens") or 0), 1)
    # new token j (1-based) attends to n + j tokens; the cost is linear in the context, so the mean over the
    # steps is the cost at the mean context n + (steps + 1) / 2
    decode = sum(layer_decode_flops(shape, n + (steps + 1) / 2, i) for i, n in enumerate(lengths))
    return prefill, int(decode)


def peak_memory() -> tuple[int, str]:
    """(bytes, kind): CUDA ``max_memory_allocated`` when CUDA is in use, else the process peak RSS.

    Peak RSS (``ru_maxrss``) is the whole process's high-water mark since it started, so on CPU it includes lmms-eval
    and earlier runs of a sweep in the same process: an upper bound, recorded as kind ``rss``.
    """
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated()), "cuda"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "rss"


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def synchronize() -> None:
    """Wait for queued device work so a wall-clock reading covers it."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def now() -> float:
    synchronize()
    return time.perf_counter()


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def summarise(rows: list[dict], warmup: int, total_wall_s: float, shape: LLMShape | None,
              peak: tuple[int, str] | None = None) -> dict:
    """The record's ``efficiency`` block from per-sample rows (see the module docstring).

    Token counts are means over all samples (they do not depend on warm-up); latencies, throughput and FLOPs are
    means over the measured rows: all but the first ``warmup`` requests of each process (a row's ``rank_index``,
    its position in its process's request order, else its position in ``rows``). When a run has no more samples
    than ``warmup``, the latencies are ``null``: a warm-up sample is never reported as a measurement. ``peak``:
    (bytes, kind) measured elsewhere (data parallel: the largest of the processes), else this process's.
    """
    measured = [r for i, r in enumerate(rows) if r.get("rank_index", i) >= warmup]
    # batched rows carry batch shares of the stage times, not per-sample latencies: latencies are omitted
    batched = any((r.get("batch_size") or 1) > 1 for r in rows)
    timed = [] if batched else measured
    lat = {k: _mean([r.get(f"{k}_s") for r in timed]) if timed else None for k in LATENCY_KEYS}
    lat["decode_per_token"] = (
        _mean([r["decode_s"] / max(r["new_tokens"], 1) if r.get("decode_s") is not None else None for r in timed])
        if timed
        else None
    )
    lat["llm_generation"] = _add(lat["prefill"], lat["decode"])
    lat["model_generation"] = _add(lat["vision_encoder"], lat["compression"], lat["llm_generation"])
    lat["e2e_per_sample"] = _add(lat["preprocess"], lat["model_generation"])
    tin = _mean([r["visual_tokens_in"] for r in rows]) if rows else None
    tout = _mean([r["visual_tokens_out"] for r in rows]) if rows else None
    mem, mem_kind = peak if peak is not None else peak_memory()
    flops = {"prefill": None, "decode_per_token": None}
    if shape is not None and measured:
        per = [sample_flops(shape, r) for r in measured]
        flops = {"prefill": sum(p for p, _ in per) / len(per), "decode_per_token": sum(d for _, d in per) / len(per)}
    model_time = sum((r.get("preprocess_s") or 0.0) + (r.get("generate_s") or 0.0) for r in measured)
    return {
        "visual_tokens_in": tin,
        "visual_tokens_out": tout,
        "retention_realised": (tout / tin) if tin else None,
        "visual_tokens_layer_avg": _mean([r["visual_tokens_layer_avg"] for r in rows]) if rows else None,
        "latency_s": lat,
        "latency_batched": batched,  # true: latencies omitted (batch_size > 1); throughput is the batched one
        "total_wall_s": total_wall_s,
        "peak_memory_bytes": mem,
        "peak_memory_kind": mem_kind,
        "flops": flops,
        "throughput_samples_per_s": (len(measured) / model_time) if measured and model_time > 0 else None,
        "warmup_samples": len(rows) - len(measured),
        "measured_samples": len(measured),
    }


def _add(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else math.fsum(values)
