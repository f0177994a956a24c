"""visionzip: against the loop reference of baselines.md 7.1/7.3 and HoliTom's VisionZip table (bf16).

Moved from tests/vidcom2/methods/test_baselines.py (one test file per method).
"""

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref
from vidcom2.methods import visionzip


def _visionzip_reference(x, scores, keys, k):
    """baselines.md 7.1/7.3 written out with loops, float64: one frame."""
    n = x.shape[0]
    dominant = int(k * 54 / 64)
    contextual = k - dominant
    dom = sorted(range(n), key=lambda i: (-float(scores[i]), i))[:dominant]
    rest = [i for i in range(n) if i not in dom]
    out = {i: x[i].double() for i in dom}
    if contextual:
        step = len(rest) // contextual
        targets = [rest[j * step] for j in range(contextual)]
        others = [i for i in rest if i not in targets]
        unit = {i: keys[i].double() / keys[i].double().norm() for i in rest}
        groups = {t: [] for t in targets}
        for o in others:
            best = max(targets, key=lambda t: (float(unit[o] @ unit[t]), -targets.index(t)))
            groups[best].append(o)
        for t in targets:
            members = groups[t]
            out[t] = x[t].double() + (torch.stack([x[m].double() for m in members]).mean(0) if members else 0)
    return out


def test_visionzip_matches_reference():
    f, n, d = 3, 49, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(f, n, d, generator=g, dtype=torch.float64)
    scores = torch.rand(f, n, generator=g, dtype=torch.float64)
    keys = torch.randn(f, n, 4, generator=g, dtype=torch.float64)
    for r in (0.25, 0.5, 0.1):
        sel = vidcom2.apply("visionzip", x, r, scores=scores, keys=keys)
        k = ref.budget(r, n)
        for t in range(f):
            want = _visionzip_reference(x[t], scores[t], keys[t], k)
            assert sel.keep[t].nonzero().squeeze(1).tolist() == sorted(want)
            for i, v in want.items():
                assert torch.allclose(sel.features[t, i], v, atol=1e-12)
        # unkept slots are untouched copies; the input is not modified
        assert torch.equal(sel.features[~sel.keep], x[~sel.keep])




def holitom_visionzip(x, scores, keys, spatial_tokens):
    """One frame as HoliTom's visionzip(): dominant int(T*54/64) by attention, the rest merged into uniformly
    spaced targets; returns (flat order dominant-first, {slot: feature}) in float64."""
    n = x.shape[0]
    dominant = int(spatial_tokens * 54 / 64)
    contextual = spatial_tokens - dominant
    dom = sorted(sorted(range(n), key=lambda i: -float(scores[i]))[:dominant])  # masked_select: position order
    rest = [i for i in range(n) if i not in dom]
    step = max(1, len(rest) // contextual)
    targets = [rest[j] for j in range(0, len(rest), step)][:contextual]
    metric = {i: keys[i].double() / keys[i].double().norm() for i in rest}
    groups = {t: [] for t in targets}
    for o in (i for i in rest if i not in targets):
        groups[max(targets, key=lambda t: (float(metric[o] @ metric[t]), -targets.index(t)))].append(o)
    feats = {i: x[i].double() for i in dom}
    for t in targets:
        extra = torch.stack([x[m].double() for m in groups[t]]).mean(0) if groups[t] else 0
        feats[t] = x[t].double() + extra
    return dom + targets, feats


@pytest.mark.parametrize("r,tokens", [(0.10, 20), (0.15, 30), (0.20, 40), (0.25, 50)])
def test_visionzip_holitom_budget_table_and_dominant_first_order(r, tokens):
    f, n = 2, 196
    g = torch.Generator().manual_seed(3)
    x = torch.randn(f, n, 6, generator=g, dtype=torch.float64)
    scores = torch.rand(f, n, generator=g, dtype=torch.float64)
    keys = torch.randn(f, n, 4, generator=g, dtype=torch.float64)
    sel = vidcom2.apply("visionzip", x, r, scores=scores, keys=keys, budget="holitom", order="dominant_first")
    assert sel.keep.sum(1).tolist() == [tokens] * f
    order = []
    for t in range(f):
        want_order, feats = holitom_visionzip(x[t], scores[t], keys[t], tokens)
        order += [t * n + i for i in want_order]
        for i, v in feats.items():
            assert torch.allclose(sel.features[t, i], v, atol=1e-12)
    assert sel.flat_indices().tolist() == order
    # the project's own rule: round(r * 196) = 20/29/39/49, positions ascending
    plain = vidcom2.apply("visionzip", x, r, scores=scores, keys=keys)
    assert plain.keep.sum(1).tolist() == [round(r * n)] * f and plain.order is None


def test_visionzip_holitom_table_refuses_what_it_does_not_cover():
    x, s, k = torch.randn(1, 196, 4), torch.rand(1, 196), torch.randn(1, 196, 3)
    with pytest.raises(ValueError, match="SPATIAL_TOKENS.*0.3"):
        vidcom2.select("visionzip", x, 0.3, scores=s, keys=k, budget="holitom")
    with pytest.raises(ValueError, match="169 tokens per frame"):
        vidcom2.select("visionzip", x[:, :169], 0.25, scores=s[:, :169], keys=k[:, :169], budget="holitom")
    assert visionzip.HOLITOM_SPATIAL_TOKENS == {0.10: 20, 0.15: 30, 0.20: 40, 0.25: 50}


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """Per-frame ``count(r, N)`` (dominant + contextual)."""
    f, n = x.shape[:2]
    return [ref.budget(r, n)] * f
