"""FLOPs formula, per-layer schedule and the efficiency summary (golden values computed by hand here)."""

from __future__ import annotations

import pytest

from eval.measure import (
    LLMShape,
    layer_decode_flops,
    layer_prefill_flops,
    sample_flops,
    seq_lengths_per_layer,
    summarise,
)


class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_shape_reads_text_config_and_gqa_width():
    text = Cfg(num_hidden_layers=28, hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4)
    s = LLMShape.from_config(Cfg(text_config=text))
    assert s == LLMShape(layers=28, hidden=3584, intermediate=18944, q_width=3584, kv_width=4 * 128)


def test_prefill_formula_without_gqa_is_the_papers():
    # no GQA: 4*n*d^2 + 2*n^2*d + 3*n*d*m, by hand for n=10, d=8, m=32
    s = LLMShape(layers=1, hidden=8, intermediate=32, q_width=8, kv_width=8)
    assert layer_prefill_flops(s, 10) == 4 * 10 * 64 + 2 * 100 * 8 + 3 * 10 * 8 * 32 == 2560 + 1600 + 7680


def test_prefill_counts_kv_projections_at_their_true_width():
    s = LLMShape(layers=1, hidden=8, intermediate=32, q_width=8, kv_width=2)
    # q,o: 2*10*8*8 = 1280; k,v: 2*10*8*2 = 320; attention 2*100*8 = 1600; mlp 3*10*8*32 = 7680
    assert layer_prefill_flops(s, 10) == 1280 + 320 + 1600 + 7680


def test_decode_step():
    s = LLMShape(layers=1, hidden=8, intermediate=32, q_width=8, kv_width=2)
    # 2*8*8 + 2*8*2 + 2*c*8 + 3*8*32 at c = 11
    assert layer_decode_flops(s, 11) == 128 + 32 + 176 + 768


def test_layer_schedule_pre_llm_and_fastv():
    s = LLMShape(layers=4, hidden=8, intermediate=8, q_width=8, kv_width=8)
    assert seq_lengths_per_layer(s, prompt_in=300, visual_in=200, visual_out=50, visual_layer_avg=50.0) == [150] * 4
    # FastV K=2 on 4 layers: two layers see 200 visual tokens, two see 50 -> average 125
    assert seq_lengths_per_layer(s, 300, 200, 50, 125.0) == [300, 300, 150, 150]


def test_sample_flops_sums_layers():
    s = LLMShape(layers=2, hidden=4, intermediate=4, q_width=4, kv_width=4)
    row = dict(prompt_tokens_in=10, visual_tokens_in=6, visual_tokens_out=2, visual_tokens_layer_avg=2.0, new_tokens=3)
    pre, dec = sample_flops(s, row)
    n = 6  # 10 - 6 + 2 tokens in both layers
    assert pre == 2 * (4 * n * 16 + 2 * n * n * 4 + 3 * n * 16)
    # mean context over 3 steps: n + 2
    assert dec == int(2 * (2 * 16 + 2 * 16 + 2 * (n + 2) * 4 + 3 * 16))


def _row(i, **kw):
    base = dict(
        visual_tokens_in=100, visual_tokens_out=25, visual_tokens_layer_avg=25.0, vision_encoder_s=1.0 + i,
        compression_s=0.5, prefill_s=2.0, decode_s=4.0, new_tokens=4, prompt_tokens_in=150, prompt_tokens_out=75,
        preprocess_s=0.25, generate_s=7.0,
    )
    base.update(kw)
    return base


def test_summary_excludes_warmup_from_latency_only():
    rows = [_row(0, vision_encoder_s=100.0, visual_tokens_in=200), _row(1), _row(2)]
    e = summarise(rows, warmup=1, total_wall_s=30.0, shape=None)
    assert e["visual_tokens_in"] == pytest.approx(400 / 3)  # tokens: every sample
    assert e["latency_s"]["vision_encoder"] == pytest.approx(2.5)  # (2 + 3) / 2, warm-up excluded
    assert e["latency_s"]["decode_per_token"] == pytest.approx(1.0)
    assert e["latency_s"]["llm_generation"] == pytest.approx(6.0)
    assert e["latency_s"]["model_generation"] == pytest.approx(2.5 + 0.5 + 6.0)
    assert e["latency_s"]["e2e_per_sample"] == pytest.approx(0.25 + 9.0)
    assert e["throughput_samples_per_s"] == pytest.approx(2 / (2 * 7.25))
    assert e["warmup_samples"] == 1 and e["measured_samples"] == 2
    assert e["flops"] == {"prefill": None, "decode_per_token": None}


def test_summary_without_measured_samples_reports_no_latency():
    e = summarise([_row(0)], warmup=1, total_wall_s=1.0, shape=None)
    assert e["latency_s"]["prefill"] is None and e["measured_samples"] == 0
    assert e["visual_tokens_out"] == 25


def test_summary_unmeasured_stage_is_null_not_zero():
    rows = [_row(0), _row(1, prefill_s=None)]
    assert summarise(rows, warmup=0, total_wall_s=1.0, shape=None)["latency_s"]["prefill"] is None


def test_exact_per_layer_counts_take_precedence():
    s = LLMShape(layers=3, hidden=4, intermediate=4, q_width=4, kv_width=4)
    row = dict(prompt_tokens_in=10, visual_tokens_in=6, visual_tokens_out=1, visual_tokens_layer_avg=3.0, new_tokens=1,
               visual_tokens_per_layer=[6, 2, 1])  # a PDrop-like 3-stage schedule
    pre, _ = sample_flops(s, row)
    assert pre == sum(layer_prefill_flops(s, 4 + v) for v in (6, 2, 1))


def test_moe_shape_follows_the_sparse_layer_rule():
    # transformers' Qwen3VLMoeTextDecoderLayer: sparse iff layer not in mlp_only_layers and (layer + 1) % step == 0
    text = Cfg(num_hidden_layers=4, hidden_size=8, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
               head_dim=4, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=5, decoder_sparse_step=2,
               mlp_only_layers=[3])
    s = LLMShape.from_config(Cfg(text_config=text))
    assert s.mlp == (32, 2 * 5 + 6 / 3, 32, 32)  # only layer 1 is sparse (layer 3 is listed as dense)
    # a sparse layer over n = 10 tokens: q,o 2*10*8*8, k,v 2*10*8*4, attention 2*100*8, experts 3*10*8*(2*5),
    # router 10*8*6
    assert layer_prefill_flops(s, 10, 1) == pytest.approx(1280 + 640 + 1600 + 2400 + 480)
    with pytest.raises(ValueError, match="layer index"):
        layer_prefill_flops(s, 10)


def test_moe_mlp_flops_equal_torchs_count_on_the_tiny_qwen3_vl_moe():
    """Independent count: torch's FlopCounterMode over every MLP block of the tiny MoE model (experts run eagerly:
    the grouped-GEMM kernel is invisible to the counter). One multiply-accumulate = 2 of its FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vidcom2.testing import tiny

    model, _ = tiny.build("qwen3_vl_moe")
    model.set_experts_implementation("eager")
    shape = LLMShape.from_config(model.config)
    layers = model.model.language_model.layers
    assert len(set(shape.mlp)) == 2  # the tiny config has a dense first layer and sparse others
    n = 10
    x = torch.randn(1, n, shape.hidden)
    for i, layer in enumerate(layers):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            layer.mlp(x)
        assert counter.get_total_flops() / 2 == pytest.approx(3 * n * shape.hidden * shape.mlp_width(i)), i
