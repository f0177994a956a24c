"""PruneVid (pre-LLM part) against the independent reference written from the official operations
(tests/vidcom2/methods/ref_prunevid.py), in float32 and bfloat16, and its helpers on hand-made cases."""

import pytest
import torch

import vidcom2
from tests.vidcom2.methods import ref_prunevid as ref
from vidcom2.methods import prunevid


def _video(f, n, d, seed, dtype, scenes=4):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(scenes, n, d, generator=g).repeat_interleave(-(-f // scenes), dim=0)[:f]
    moving = torch.rand(1, n, 1, generator=g) < 0.5
    return (base + 0.6 * torch.randn(f, n, d, generator=g) * moving + 0.05 * torch.randn(f, n, d, generator=g)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("f,n,r,ratio", [(16, 49, 0.5, None), (16, 36, 0.3, 0.5), (8, 64, 0.25, None), (5, 30, 0.6, None)])
def test_prunevid_equals_the_official_reference(dtype, f, n, r, ratio):
    x = _video(f, n, 12, seed=f * n, dtype=dtype)
    sel = vidcom2.apply("prunevid", x, r, cluster_ratio=ratio, seed=2)
    tokens, slots = ref.prunevid(x, r, torch.Generator().manual_seed(2), ratio=ratio)
    assert torch.equal(sel.flat_indices(), slots)
    tol = 1e-6 if dtype == torch.float32 else 2**-7
    assert torch.allclose(sel.gather(x).float(), tokens.float(), rtol=tol, atol=tol)
    assert sel.stats["retention_realised"] <= (r if ratio is None else ratio)  # static averaging removes more


def test_refine_keeps_the_longest_run_and_relabels_from_the_longer_neighbour():
    # cluster 1 has runs of 2 and 1 (the single one is relabelled), cluster 2 only single frames (removed)
    assert prunevid.refine([0, 0, 0, 1, 1, 2, 1, 0, 0]) == [0, 0, 0, 1, 1, 1, 1, 1, 1]  # the shorter 0-run too
    assert prunevid.refine([2, 0, 0, 0, 1, 1]) == [0, 0, 0, 0, 1, 1]  # no left neighbour: the right one
    assert prunevid.refine([0, 1, 1, 3, 2, 2]) == [1, 1, 1, 1, 2, 2]  # singles 0 and 3 take the longer neighbour
    assert prunevid.runs_of([0, 0, 1, 1, 1, 0]) == [2, 3, 1]
    labels = [0, 0, 2, 1, 1, 0, 3, 3]
    assert prunevid.refine(labels) == ref.refine(torch.tensor(labels)).tolist()


def test_official_cluster_ratio_ignores_the_ratio_and_full_ratio_is_lossless():
    x = _video(8, 36, 8, seed=3, dtype=torch.float32)
    a = vidcom2.apply("prunevid", x, 0.2, cluster_ratio=0.5)
    b = vidcom2.apply("prunevid", x, 0.7, cluster_ratio=0.5)
    assert torch.equal(a.keep, b.keep) and a.stats["cluster_ratio"] == 0.5
    assert bool(vidcom2.select("prunevid", x, 1.0).all())
    with pytest.raises(ValueError, match="cluster_ratio"):
        vidcom2.apply("prunevid", x, 0.5, cluster_ratio=0.0)
    with pytest.raises(ValueError, match="order must be one of"):
        vidcom2.apply("prunevid", x, 0.5, order="random")


def expected_counts(x, r):
    """The contract's budget rule: segments and static positions are data-dependent; recomputed in the reference."""
    return ref.kept_count(x, r)
