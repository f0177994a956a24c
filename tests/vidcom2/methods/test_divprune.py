"""divprune: against the literal official loop (fp32 and bf16) and its frame scope.

Moved from tests/vidcom2/methods/test_baselines.py (one test file per method).
"""

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref


def _x(f, n, d=6, seed=0):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("f,n,r,seed", [(2, 15, 0.3, 0), (3, 12, 0.5, 1), (1, 30, 0.1, 2), (4, 8, 0.75, 3)])
def test_divprune_matches_the_literal_official_loop(f, n, r, seed):
    x = _x(f, n, seed=seed)
    keep = vidcom2.select("divprune", x, r)
    assert keep.reshape(-1).nonzero().squeeze(1).tolist() == ref.divprune(x, ref.budget(r, f * n))


def test_divprune_frame_scope():
    x = _x(3, 12, seed=5)
    keep = vidcom2.select("divprune", x, 0.25, scope="frame")
    for t in range(3):
        assert keep[t].nonzero().squeeze(1).tolist() == ref.divprune(x[t : t + 1], ref.budget(0.25, 12))


BF16 = torch.bfloat16


def _xbf(f, n, d, seed, dtype=BF16):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def official_divprune(x, k):
    """The official loop, literally, in x's dtype (cosine matrix, min over all selected rows each iteration)."""
    norm = x / x.norm(dim=1, keepdim=True)
    dist = 1.0 - torch.mm(norm, norm.t())
    s = []
    for i in range(k):
        if i == 0:
            scores = torch.topk(dist, 2, dim=0, largest=False).values[1, :]
        else:
            scores = torch.min(dist.index_select(0, torch.tensor(s)), dim=0).values
        s.append(int(torch.argmax(scores)))
    assert len(set(s)) == k  # a regular input: the official loop picks no token twice
    return sorted(s)


@pytest.mark.parametrize("seed", [0, 1])
def test_divprune_bf16_selects_what_the_official_code_selects(seed):
    f, n, d, r = 4, 49, 32, 0.25
    x = _xbf(f, n, d, seed=seed)
    k = round(r * f * n)
    want = official_divprune(x.reshape(f * n, d), k)
    sel = vidcom2.apply("divprune", x, r)
    assert sel.keep.reshape(-1).nonzero().squeeze(1).tolist() == want
    assert sel.stats["compute_dtype"] == "bfloat16"
    up = vidcom2.apply("divprune", x, r, compute_dtype="float32")
    assert up.stats["compute_dtype"] == "float32"
    assert up.keep.reshape(-1).nonzero().squeeze(1).tolist() == official_divprune(x.float().reshape(f * n, d), k)


def test_divprune_fp32_upcast_differs_on_bf16_inputs():
    # the documented difference: the project's former fp32 upcast picks other tokens than the official bf16 code
    f, n, d, r = 4, 49, 32, 0.25
    differs = 0
    for seed in range(4):
        x = _xbf(f, n, d, seed=seed)
        a = vidcom2.select("divprune", x, r)
        b = vidcom2.select("divprune", x, r, compute_dtype="float32")
        differs += int(not torch.equal(a, b))
    assert differs > 0
    with pytest.raises(ValueError, match="compute_dtype"):
        vidcom2.select("divprune", x, r, compute_dtype="fp8")


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """``count(r, F*N)`` over the video (a total)."""
    f, n = x.shape[:2]
    return ref.budget(r, f * n)
