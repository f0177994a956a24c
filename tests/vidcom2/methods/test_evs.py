"""EVS against a reference written from vLLM's ``vllm/multimodal/evs.py`` (094f117): loops, the same dtype."""

import math

import pytest
import torch

import vidcom2
from vidcom2.methods import evs


def reference(x, r):
    """vLLM's compute_retention_mask, written out: dissimilarity 1 - cos to the previous frame's same position
    (255 for frame 0), a stable descending order over the flattened video, the first ``retained`` kept."""
    f, n = x.shape[:2]
    q = 1.0 - r
    retained = max(n, int(f * n * (1 - q)))
    d = {}
    for t in range(f):
        for i in range(n):
            if t == 0:
                d[(t, i)] = 255.0
            else:
                cos = torch.nn.functional.cosine_similarity(x[t, i], x[t - 1, i], dim=0)
                d[(t, i)] = float(1 - cos)  # in x's dtype, then read out exactly
    order = sorted(d, key=lambda ti: (-d[ti], ti[0] * n + ti[1]))
    keep = torch.zeros(f, n, dtype=torch.bool)
    for t, i in order[:retained]:
        keep[t, i] = True
    return keep, retained


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("f,n,r", [(4, 30, 0.25), (6, 49, 0.1), (3, 12, 0.5), (2, 20, 0.15)])
def test_evs_matches_the_vllm_reference(dtype, f, n, r):
    g = torch.Generator().manual_seed(f * n)
    base = torch.randn(1, n, 16, generator=g)
    x = (2 * base + torch.randn(f, n, 16, generator=g)).to(dtype)  # temporally redundant; bf16 has ties
    want, retained = reference(x, r)
    sel = vidcom2.apply("evs", x, r)
    assert torch.equal(sel.keep, want)
    assert sel.stats["retained"] == retained and bool(sel.keep[0].all())


def test_evs_count_is_vllms_truncation_with_a_one_frame_floor():
    # 8 frames x 196 tokens at 15%: int(1568 * 0.15) = 235 (round would give 235 too); 7 x 10 at 0.25: int(17.5) = 17
    assert evs.retained_count(196, 8, 0.15) == int(1568 * (1 - (1 - 0.15)))
    assert evs.retained_count(10, 7, 0.25) == 17 and evs.retained_count(10, 7, 0.25, "project") == 18
    assert evs.retained_count(10, 2, 0.1) == 10  # never less than the first frame
    assert evs.retained_count(10, 3, 1.0) == 30
    with pytest.raises(ValueError, match="counting"):
        evs.retained_count(10, 3, 0.5, "ceil")
    x = torch.randn(2, 10, 4)
    sel = vidcom2.apply("evs", x, 0.1)
    assert sel.stats["retention_realised"] == pytest.approx(0.5)  # a 2-frame video keeps its first frame whole


def test_evs_keeps_what_moves():
    # a static scene with one moving 2-token object: besides frame 0, exactly the object's old and new places change
    f, n = 5, 36
    x = torch.randn(1, n, 8, generator=torch.Generator().manual_seed(0)).expand(f, n, 8).clone()
    obj = torch.randn(8, generator=torch.Generator().manual_seed(1)) * 5
    for t in range(f):
        x[t, 3 * t : 3 * t + 2] = obj
    changed = {(t, i) for t in range(1, f) for i in (3 * t, 3 * t + 1, 3 * t - 3, 3 * t - 2) if 0 <= i < n}
    k = n + len(changed)
    r = math.ceil(k / (f * n) * 1e6) / 1e6  # smallest ratio whose truncated count is k
    sel = vidcom2.apply("evs", x, r)
    assert sel.stats["retained"] == k
    kept = {(t, i) for t, i in sel.keep.nonzero().tolist() if t > 0}
    assert kept == changed


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """vLLM's compute_retained_tokens_count with q = 1 - r: truncation, one whole frame at least (a total)."""
    f, n = x.shape[:2]
    return min(f * n, max(n, int(f * n * (1 - (1.0 - r)))))
