"""VisPruner (video port) against a reference written from the official ``encode_images`` loop (aefa01a), per
frame, with Python lists in float64."""

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref


def reference_frame(x, scores, k, important_ratio=0.5):
    """Official: T_imp = int(T * r) by attention; the rest deduplicated by a/b matching, 8 a-tokens per round."""
    n = x.shape[0]
    important = int(k * important_ratio)
    diverse = k - important
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    residual = order[important:]
    unit = {i: x[i].double() / x[i].double().norm() for i in range(n)}
    while diverse > 0:
        total = len(residual)
        r = min(8, total - diverse)
        if r <= 0:
            break
        a, b = residual[0::2], residual[1::2]
        best = [max(float(unit[i] @ unit[j]) for j in b) for i in a]
        distinct = sorted(range(len(a)), key=lambda m: (-best[m], m))[r:]
        residual = [a[m] for m in distinct] + b
    kept = order[:important] + (residual if diverse > 0 else [])
    return sorted(kept)


@pytest.mark.parametrize("f,n,r,ratio", [(3, 49, 0.25, 0.5), (2, 64, 0.1, 0.5), (2, 36, 0.5, 0.25), (1, 30, 0.3, 1.0)])
def test_vispruner_matches_the_official_loop(f, n, r, ratio):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(f, n, 12, generator=g, dtype=torch.float64)
    scores = torch.rand(f, n, generator=g, dtype=torch.float64)
    sel = vidcom2.apply("vispruner", x, r, scores=scores, important_ratio=ratio)
    k = ref.budget(r, n)
    for t in range(f):
        assert sel.keep[t].nonzero().squeeze(1).tolist() == reference_frame(x[t], scores[t], k, ratio), t
    assert sel.stats["important_ratio"] == ratio


def test_vispruner_drops_duplicates_first():
    # 40 tokens: 8 distinct directions, each repeated 5 times. Kept by attention alone (important_ratio 1) vs by the
    # duplicate removal alone (important_ratio 0): the matching rounds keep more distinct directions (the a/b
    # rounds only compare a-tokens with b-tokens, so they need not end with one token per direction)
    n, d = 40, 8
    dirs = torch.eye(d, dtype=torch.float64)
    x = dirs.repeat(5, 1).unsqueeze(0) * torch.linspace(1, 2, n, dtype=torch.float64).view(1, n, 1)
    scores = torch.rand(1, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keep = vidcom2.select("vispruner", x, 8 / n, scores=scores, important_ratio=0.0)
    attention = vidcom2.select("vispruner", x, 8 / n, scores=scores, important_ratio=1.0)
    kept, top = keep[0].nonzero().squeeze(1), attention[0].nonzero().squeeze(1)
    assert kept.numel() == top.numel() == 8
    assert len(set((kept % d).tolist())) > len(set((top % d).tolist()))
    assert kept.tolist() == reference_frame(x[0], scores[0], 8, 0.0)
    with pytest.raises(ValueError, match="important_ratio"):
        vidcom2.select("vispruner", x, 0.5, scores=scores, important_ratio=1.5)


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """Per-frame ``count(r, N)``."""
    f, n = x.shape[:2]
    return [ref.budget(r, n)] * f
