"""HoliTom (outer part) against the independent reference written from the official operations
(tests/vidcom2/methods/ref_holitom.py), in float32 and bfloat16."""

import pytest
import torch

import vidcom2
from tests.vidcom2.methods import ref_holitom as ref


def _video(f, n, d, seed, dtype, scenes=3):
    """Runs of near-identical frames (static windows) with some moving positions; attention without ties."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(scenes, n, d, generator=g).repeat_interleave(-(-f // scenes), dim=0)[:f]
    noise = torch.randn(f, n, d, generator=g) * (torch.rand(1, n, 1, generator=g) < 0.4)  # 40% of positions move
    x = (base + 0.8 * noise + 0.05 * torch.randn(f, n, d, generator=g)).to(dtype)
    attn = torch.stack([torch.randperm(n, generator=g).float() / n for _ in range(f)])
    return x, attn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("f,n,r,D", [(8, 36, 0.15, 0.0), (9, 25, 0.25, 0.4), (6, 49, 0.1, 1.0), (4, 16, 0.5, 0.5)])
def test_holitom_equals_the_official_reference(dtype, f, n, r, D):
    x, attn = _video(f, n, 12, seed=f + n, dtype=dtype)
    sel = vidcom2.apply("holitom", x, r, scores=attn, D=D, seed=3)
    tokens, slots = ref.holitom(x, attn, r, torch.Generator().manual_seed(3), D=D)
    assert torch.equal(sel.flat_indices(), slots)  # the same tokens, in the official sequence order
    tol = 1e-5 if dtype == torch.float32 else 2**-7
    assert torch.allclose(sel.gather(x).double(), tokens, rtol=tol, atol=tol)
    assert sel.stats["stage"] == "outer" and sel.stats["windows"] < f  # static windows were found


def test_ratio_is_rescaled_by_the_static_saving():
    x, attn = _video(8, 36, 12, seed=1, dtype=torch.float32)
    sel = vidcom2.apply("holitom", x, 0.15, scores=attn)
    total = 8 * 36
    assert sel.stats["saved"] > 0
    assert sel.stats["ratio_adjusted"] == pytest.approx(min(0.15 / ((total - sel.stats["saved"]) / total), 1))
    assert abs(int(sel.keep.sum()) - 0.15 * total) <= 8 + 3  # lands near R (ceil per frame, round per window)


def test_sorted_order_and_bad_options():
    x, attn = _video(6, 16, 8, seed=2, dtype=torch.float32)
    a = vidcom2.apply("holitom", x, 0.25, scores=attn)
    b = vidcom2.apply("holitom", x, 0.25, scores=attn, order="sorted")
    assert torch.equal(a.keep, b.keep) and b.order is None
    assert torch.equal(b.flat_indices(), a.flat_indices().sort().values)
    with pytest.raises(ValueError, match="order must be one of"):
        vidcom2.apply("holitom", x, 0.25, scores=attn, order="time")
    with pytest.raises(ValueError, match="beta"):
        vidcom2.apply("holitom", x, 0.25, scores=attn, beta=2.0)


def expected_counts(x, r):
    """The contract's budget rule: static windows are data-dependent; the official rule, recomputed in the reference."""
    return ref.kept_count(x, r)
