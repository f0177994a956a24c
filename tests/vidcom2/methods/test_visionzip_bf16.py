"""VisionZip on bf16 inputs: its one documented difference from the official code.

The official VisionZip (and HoliTom's video port) works in the model dtype: dominant tokens by ``topk`` of the
attention scores, then the contextual targets, the cosine of the L2-normalised keys (``metric / metric.norm``, a
``bmm``), each remaining token assigned to its most similar target (``argmax``), and the merge as a one-hot ``bmm``
divided by the counts and added to the target, every step rounded to bf16. The project takes the same tokens and
computes the similarity and the merge in float32, rounding once at the end (``vidcom2.methods.visionzip.zip_frame``).

Asserted on bf16 frames (196 tokens, budget 49; distinct scores: at a tie the project keeps the lower index, the
official ``topk`` leaves it to the backend):
1. the kept tokens equal the official ones (they depend only on the scores' order and the fixed target positions);
2. the merged features equal the official operations with a float32 upcast, rounded once to bf16;
3. against the official bf16 operations, at least 95% of the assignments agree, the merged features of the targets
   whose groups agree are within bf16 rounding of each other, and some assignment differs (the difference is real).
"""

from __future__ import annotations

import pytest
import torch

from vidcom2.methods.visionzip import split_budget, zip_frame

BF16 = torch.bfloat16
N, D, DK, K = 196, 64, 32, 49
SEEDS = range(5)


def frame(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g).to(BF16)
    scores = ((torch.randperm(N, generator=g) + 1) / N).to(BF16)  # distinct in bf16 (grid finer than 1/N)
    keys = torch.randn(N, DK, generator=g).to(BF16)
    return x, scores, keys


def official(x, scores, keys, k, dtype):
    """VisionZip's operations in ``dtype``: (kept token ids as a set, assignment [others], merged [C, D])."""
    x, scores, keys = x.to(dtype), scores.to(dtype), keys.to(dtype)
    dominant, contextual = split_budget(k)
    dom = scores.topk(dominant).indices
    dominant_ids = set(dom.tolist())
    rest = torch.tensor([i for i in range(x.shape[0]) if i not in dominant_ids])
    step = rest.numel() // contextual
    target_pos = torch.arange(contextual) * step
    is_target = torch.zeros(rest.numel(), dtype=torch.bool)
    is_target[target_pos] = True
    metric = keys[rest]
    metric = metric / metric.norm(dim=-1, keepdim=True)
    sim = torch.bmm(metric[~is_target][None], metric[is_target][None].transpose(1, 2))[0]
    assign = sim.argmax(dim=1)
    one_hot = torch.zeros(assign.numel(), contextual, dtype=dtype).scatter_(1, assign[:, None], 1)
    counts = one_hot.sum(dim=0).clamp(min=1)[:, None]
    aggregated = torch.bmm(one_hot.T[None], x[rest[~is_target]][None])[0] / counts
    merged = x[rest[target_pos]] + aggregated
    return set(dom.tolist()) | set(rest[target_pos].tolist()), assign, merged


def project(x, scores, keys, k):
    dom, targets, merged = zip_frame(x, scores, keys, k)
    return set(dom.tolist()) | set(targets.tolist()), merged


def assert_margin(scores, dominant):
    top2 = scores.float().sort(descending=True).values[dominant - 1 : dominant + 1]
    assert top2[0] > top2[1], f"scores tie at the dominant cut-off: {top2.tolist()}"


@pytest.mark.parametrize("seed", SEEDS)
def test_bf16_tokens_are_official_and_the_merge_is_the_official_operations_in_float32(seed):
    x, scores, keys = frame(seed)
    assert_margin(scores, split_budget(K)[0])
    kept, merged = project(x, scores, keys, K)
    kept_ref, _, merged_ref = official(x, scores, keys, K, torch.float32)
    assert kept == kept_ref and len(kept) == K
    assert merged.dtype == BF16
    assert torch.allclose(merged.float(), merged_ref.to(BF16).float(), rtol=2**-7, atol=1e-6)


def test_against_the_official_bf16_operations_only_rounding_differs():
    differing = 0
    for seed in SEEDS:
        x, scores, keys = frame(seed)
        kept, merged = project(x, scores, keys, K)
        kept_bf, assign_bf, merged_bf = official(x, scores, keys, K, BF16)
        _, assign_32, _ = official(x, scores, keys, K, torch.float32)
        assert kept == kept_bf
        agree = assign_bf == assign_32
        assert agree.float().mean() >= 0.95, f"seed {seed}: {int(agree.sum())}/{agree.numel()} assignments agree"
        differing += int((~agree).sum())
        # targets whose groups are the same under both: merged features within bf16 rounding
        _, contextual = split_budget(K)
        changed = set(assign_bf[~agree].tolist()) | set(assign_32[~agree].tolist())
        same = [c for c in range(contextual) if c not in changed]
        assert same, f"seed {seed}: every group changed"
        assert torch.allclose(merged[same].float(), merged_bf[same].float(), rtol=2**-5, atol=2**-6)
    assert differing > 0, "bf16 assignments never differ here: the documented difference would be stale"
