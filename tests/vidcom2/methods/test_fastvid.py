"""FastVID against the independent reference (tests/vidcom2/methods/ref_fastvid.py, written from the official code's
operations), in float32 and bfloat16, with the MAP-head signal and with the encoder fallback."""

import pytest
import torch
from transformers.models.siglip.configuration_siglip import SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

import vidcom2
from tests.vidcom2.methods import ref_fastvid as ref
from vidcom2.adapters._siglip_head import map_head_signal
from vidcom2.methods import fastvid


def _video(f, n, d, seed, dtype, scenes=3):
    """``f`` frames in ``scenes`` runs of near-identical frames (multi-frame segments), distinct attention values."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(scenes, n, d, generator=g).repeat_interleave(-(-f // scenes), dim=0)[:f]
    x = (base + 0.3 * torch.randn(f, n, d, generator=g)).to(dtype)
    attn = torch.stack([torch.randperm(n, generator=g).float() / n for _ in range(f)])  # no ties
    return x, attn


def _head(dim=32, heads=4, seed=0):
    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(hidden_size=dim, num_attention_heads=heads, intermediate_size=2 * dim)
    return SiglipMultiheadAttentionPoolingHead(cfg).eval()


def test_map_head_signal_matches_the_head_written_out():
    head = _head()
    hidden = torch.randn(3, 49, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        glob, attn = map_head_signal(hidden, head)
        want_glob, want_attn = ref.map_head_reference(hidden, head)
        assert torch.allclose(glob, head(hidden), atol=1e-6)  # transformers' own head: the same pooled output
    assert glob.shape == (3, 32) and attn.shape == (3, 49)
    assert torch.allclose(glob, want_glob, atol=1e-5) and torch.allclose(attn, want_attn, atol=1e-6)
    assert torch.allclose(attn.sum(dim=1), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("f,n,r,p", [(8, 49, 0.25, 4), (12, 36, 0.1, 4), (6, 25, 0.5, 2), (5, 30, 0.3, 1)])
def test_fastvid_equals_the_reference_with_the_map_head_signal(dtype, f, n, r, p):
    x, attn = _video(f, n, 16, seed=f * n, dtype=dtype)
    glob = x.float().mean(dim=1) + 0.01 * torch.randn(f, 16, generator=torch.Generator().manual_seed(5))
    m = vidcom2.get_method("fastvid", signal="map_head", dtm_p=p, dyseg_c=3)
    sel = m(x, r, scores=attn, global_features=glob, generator=torch.Generator().manual_seed(7))
    keep, out = ref.fastvid(x, attn, glob, r, torch.Generator().manual_seed(7), c=3, p=p)
    assert torch.equal(sel.keep, keep)
    # the selection is bit-equal; merged features agree to the dtype's rounding (the CPU kernels' accumulation order
    # differs between a batched and a one-frame bmm in bf16)
    rtol = 2**-7 if dtype == torch.bfloat16 else 1e-6
    assert torch.allclose(sel.features.float(), out.float(), rtol=rtol, atol=rtol)
    assert sel.features.dtype == dtype and sel.stats["segments"] == len(ref.segments(glob, 3, 0.9))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fastvid_fallback_signal_is_the_mean_token_and_the_scores(dtype):
    x, attn = _video(10, 36, 16, seed=3, dtype=dtype)
    sel = vidcom2.apply("fastvid", x, 0.25, scores=attn, seed=4, signal="encoder")
    keep, out = ref.fastvid(x, attn, x.mean(dim=1), 0.25, torch.Generator().manual_seed(4))
    assert torch.equal(sel.keep, keep) and sel.stats["signal"] == "encoder"
    # the same frames with the mean token passed as the MAP-head global feature: the same selection
    same = vidcom2.apply("fastvid", x, 0.25, scores=attn, seed=4, global_features=x.mean(dim=1))
    assert torch.equal(same.keep, keep) and same.stats["signal"] == "map_head"
    assert int(keep.sum()) == ref.kept_count(x, attn, 0.25)


def test_the_default_signal_is_the_map_head_and_the_fallback_is_labelled():
    faithful, fallback = vidcom2.get_method("fastvid"), vidcom2.get_method("fastvid", signal="encoder")
    assert faithful.signal == "map_head" and faithful.info.approximation is None
    assert "global_features" in faithful.info.needs and "global_features" not in fallback.info.needs
    assert "signal='encoder'" in fallback.info.approximation
    assert vidcom2.registry.method_class("fastvid").info.approximation is None  # the class: the default signal


def test_budget_arithmetic_of_the_llava_ov_script():
    # 196 tokens at R = 0.10: retain int(19.6) = 19, context int(7.6) = 7, salient 12
    assert fastvid.anchor_counts([1], 7, 4) == [7]
    # a 6-frame segment, p = 4: anchors on frames 1 and 5 (counted from the end), (6*7) // 2 = 21 each
    assert fastvid.anchor_counts([6], 7, 4) == [0, 21, 0, 0, 0, 21]
    assert fastvid.anchor_counts([3, 1], 1, 2) == [1, 0, 1, 1]  # (3*1)//2 = 1 = context: single-frame rule
    g = torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1], [1, 1]])
    # cosines ~1, 0.01, ~1, 0.71: c = 2 cuts after the smallest (1), tau = 0.9 adds the cut after 3
    assert fastvid.segment_sizes(g, 2, 0.9) == [2, 2, 1]
    assert fastvid.segment_sizes(g[:1], 8, 0.9) == [1]


def test_salient_tokens_are_kept_unchanged_and_anchors_are_merged():
    x, attn = _video(4, 25, 8, seed=11, dtype=torch.float32, scenes=4)
    sel = vidcom2.apply("fastvid", x, 0.4, scores=attn, signal="encoder")
    salient = 10 - int(10 * 0.4)
    top = attn.topk(salient, dim=1).indices
    assert bool(sel.keep.gather(1, top).all())
    assert torch.equal(sel.features.gather(1, top.unsqueeze(-1).expand(-1, -1, 8)),
                       x.gather(1, top.unsqueeze(-1).expand(-1, -1, 8)))  # fmt: skip
    assert not torch.equal(sel.gather(x), x[sel.keep])  # the anchors carry merged features


def test_bad_hyper_parameters_and_a_missing_global_feature_are_refused():
    x, attn = _video(3, 9, 4, seed=1, dtype=torch.float32)
    with pytest.raises(ValueError, match="global_features"):
        vidcom2.apply("fastvid", x, 0.5, scores=attn)
    with pytest.raises(ValueError, match=r"global_features must have shape \[F, Dg\] with F = 3"):
        vidcom2.apply("fastvid", x, 0.5, scores=attn, global_features=torch.ones(2, 4))
    with pytest.raises(ValueError, match="signal must be one of"):
        vidcom2.apply("fastvid", x, 0.5, scores=attn, signal="mean")
    with pytest.raises(ValueError, match="stprune_d"):
        vidcom2.apply("fastvid", x, 0.5, scores=attn, stprune_d=1.5)
    with pytest.raises(ValueError, match="dtm_p"):
        vidcom2.apply("fastvid", x, 0.5, scores=attn, dtm_p=0)


def test_official_run_numbers_name_registered_methods_and_their_source():
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "results" / "paper" / "official_method_runs.csv"
    rows = list(csv.DictReader(path.open()))
    assert rows and {r["method"] for r in rows} <= set(vidcom2.list_methods())
    for r in rows:
        assert 0 < float(r["retention"]) <= 1 and 0 < float(r["value"]) < 100
        assert "a40a109" in r["source"] and r["source"].count(".log") == 1


def expected_counts(x, r):
    """The contract's budget rule: segments are data-dependent, so the official rule is recomputed in the reference."""
    return ref.kept_count(x, None, r)
