"""dycoke (TTM + stage 2): bf16 parity of TTM with the official code and the recorded stage-2 settings.

Moved from tests/vidcom2/methods/test_parity_bf16.py (one test file per method).
"""

import pytest
import torch
import torch.nn.functional as F

import vidcom2
from tests.vidcom2.methods.test_dycoke_ttm import expected_counts as ttm_counts

BF16 = torch.bfloat16


def _x(f, n, d, seed, dtype=BF16):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _lowest(sims, k):
    """The k smallest entries of a 1-D tensor, ties -> lower index (the project's documented tie rule; the official
    ``topk`` leaves ties to the backend)."""
    return sorted(range(sims.numel()), key=lambda j: (float(sims[j]), j))[:k]


def official_ttm(x, k_ratio):
    """The official two passes in x's dtype: pass 1 normalises both frames, then cosine; pass 2 plain cosine.
    Returns {pruned frame: kept indices in ascending-similarity order}."""
    f, n = x.shape[:2]
    k = int((1 - k_ratio) * n)
    kept = {}
    for i in range(0, f - 1, 2):
        a, b = F.normalize(x[i], p=2, dim=1), F.normalize(x[i + 1], p=2, dim=1)
        kept[i + 1] = _lowest(F.cosine_similarity(a, b, dim=1), k)
    for i in range(0, f - 4, 4):
        kept[i + 2] = _lowest(F.cosine_similarity(x[i], x[i + 2], dim=1), k)
    return kept


def _ttm_frames(sel, f, n):
    order = sel.flat_indices().tolist()
    return {t: [j % n for j in order if j // n == t] for t in range(f)}


@pytest.mark.parametrize("name", ["dycoke_ttm", "dycoke"])
def test_dycoke_bf16_selects_what_the_official_code_selects(name):
    f, n = 8, 196
    # temporally redundant frames (a shared component), as in real videos: bf16 cosines close to 1, many ties
    x = (3 * _x(1, n, 64, seed=1, dtype=torch.float32) + _x(f, n, 64, seed=0, dtype=torch.float32)).to(BF16)
    want = official_ttm(x, 0.7)
    sel = vidcom2.apply(name, x, 0.5, merge_ratio=0.7)
    got = _ttm_frames(sel, f, n)
    for t in range(f):
        assert got[t] == (want[t] if t in want else list(range(n))), t
    assert sel.stats["pass1_normalise"] is True
    # the documented difference: plain cosine in pass 1 (the earlier project behaviour) selects other tokens in bf16
    plain = _ttm_frames(vidcom2.apply(name, x, 0.5, merge_ratio=0.7, pass1_normalise=False), f, n)
    differ = sum(len(set(plain[t]) ^ set(want[t])) for t in want) // 2
    assert differ > 0
    assert all(plain[t] == want[t] for t in want if t % 2 == 0)  # pass-2 frames: plain cosine in both


def test_dycoke_records_stage2_and_takes_the_scripts_p():
    x = _x(4, 20, 8, seed=1, dtype=torch.float32)
    st = vidcom2.apply("dycoke", x, 0.8, stage2_prune=0.8).stats
    assert (st["stage2_prune"], st["stage2_layer"], st["stage2_threshold"]) == (0.8, 3, 0.9)
    assert vidcom2.apply("dycoke", x, 0.8).stats["stage2_prune"] == 0.7  # README default


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """On tensors only TTM applies: as ``dycoke_ttm``."""
    return ttm_counts(x, r)
