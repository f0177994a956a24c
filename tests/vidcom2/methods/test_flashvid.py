"""FlashVID's vision-side part (its in-LLM stage: test_flashvid_llm.py) against the independent reference written from the official operations
(tests/vidcom2/methods/ref_flashvid.py), in float32 and bfloat16, and its parts on hand-made cases."""

import pytest
import torch

import vidcom2
from tests.vidcom2.methods import ref_flashvid as ref
from vidcom2.methods import flashvid


def _video(f, n, d, seed, dtype, scenes=3):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(scenes, n, d, generator=g).repeat_interleave(-(-f // scenes), dim=0)[:f]
    moving = torch.rand(1, n, 1, generator=g) < 0.5
    x = base + 0.7 * torch.randn(f, n, d, generator=g) * moving + 0.1 * torch.randn(f, n, d, generator=g)
    attn = torch.stack([torch.randperm(n, generator=g).float() / n + 0.01 for _ in range(f)])
    return x.to(dtype), attn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sel", ["attn_div_v2", "attn_div"])
@pytest.mark.parametrize("f,n,r,min_seg", [(12, 36, 0.25, 4), (9, 49, 0.15, 8), (6, 25, 0.5, 2)])
def test_flashvid_equals_the_official_reference(dtype, sel, f, n, r, min_seg):
    x, attn = _video(f, n, 12, seed=f * n, dtype=dtype)
    out = vidcom2.apply("flashvid", x, r, scores=attn, selection=sel, min_segments=min_seg, seed=5)
    index, tokens = ref.flashvid(x, attn, r, torch.Generator().manual_seed(5), min_seg=min_seg, v2=sel.endswith("v2"))
    assert torch.equal(out.flat_indices(), index)
    tol = 1e-5 if dtype == torch.float32 else 2**-6
    assert torch.allclose(out.gather(x).float(), tokens.float(), rtol=tol, atol=tol)


def test_vision_side_alone_without_the_expansion_equals_the_reference():
    # expansion=1.0 (with llm_retention_ratio=1.0: the vision-side part alone): per-frame budget ceil(n * r)
    x, attn = _video(9, 49, 12, seed=7, dtype=torch.float32)
    out = vidcom2.apply("flashvid", x, 0.2, scores=attn, expansion=1.0, llm_retention_ratio=1.0, seed=5)
    index, _ = ref.flashvid(x, attn, 0.2, torch.Generator().manual_seed(5), expansion=1.0)
    assert torch.equal(out.flat_indices(), index)
    wide = vidcom2.apply("flashvid", x, 0.2, scores=attn, seed=5)  # the scripts' 1.25 keeps more before the LLM
    assert int(wide.keep.sum()) > int(out.keep.sum())


def test_segments_add_complementary_cuts_at_the_lowest_similarities():
    g = torch.tensor([[1.0, 0], [1, 0.05], [1, 0.1], [0, 1], [0.1, 1], [0.2, 1]])
    assert flashvid.segments(g, 0.9, 1) == [3, 3]  # one cut below the threshold
    # one more cut needed: the lowest similarity left is frames 3-4 (0.9950 < 0.9952 < 0.9988)
    assert flashvid.segments(g, 0.9, 3) == [3, 1, 2] == ref.segment(g, 0.9, 3)
    assert flashvid.segments(g, 0.9, 10) == [1] * 6  # never more cuts than gaps


def test_tree_merge_sums_a_chain_into_its_root():
    # three frames, one position identical over time: frame 2 -> frame 1 -> frame 0
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [-1.0, 1.0]]])
    other = torch.ones(3, 2, dtype=torch.bool)
    remain, feats = flashvid.tree_merge(x, other, 0.8, floor=0)
    assert remain.tolist() == [[True, True], [False, True], [False, True]]
    # frame 1's token holds x1 + x2 when it joins frame 0: the root becomes (x0 + x1 + x2) / 2 (count 1 per child)
    assert torch.allclose(feats[0, 0], torch.tensor([1.5, 0.0]))


def test_full_ratio_keeps_everything_and_bad_options_are_refused():
    x, attn = _video(4, 16, 8, seed=1, dtype=torch.float32)
    assert bool(vidcom2.select("flashvid", x, 1.0, scores=attn).all())
    with pytest.raises(ValueError, match="selection must be one of"):
        vidcom2.apply("flashvid", x, 0.5, scores=attn, selection="div")
    with pytest.raises(ValueError, match="alpha"):
        vidcom2.apply("flashvid", x, 0.5, scores=attn, alpha=0.0)


def expected_counts(x, r):
    """The contract's budget rule: segments and tree merges are data-dependent; recomputed in the reference on the
    scores the contract test feeds (its ``_aux``)."""
    from tests.vidcom2.test_contract import _aux

    f, n = x.shape[:2]
    return ref.kept_count(x, _aux("flashvid", f, n)["scores"], r)
