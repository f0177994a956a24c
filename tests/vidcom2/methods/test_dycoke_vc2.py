"""dycoke_vc2: the VidCom2 repository's port of DyCoke's TTM.

Moved from tests/vidcom2/methods/test_baselines.py (one test file per method).
"""

import torch

import vidcom2
from tests.vidcom2 import reference as ref
from tests.vidcom2.methods.test_dycoke_ttm import pruned_frames


def _x(f, n, d=6, seed=0):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_dycoke_vc2_is_the_port():
    f, n, r = 7, 30, 0.3  # odd F: the port drops the unpaired last frame
    x = _x(f, n, seed=4)
    keep = vidcom2.select("dycoke_vc2", x, r)
    k = int((1.0 - (1.0 - r)) * n)
    want, _ = ref.dycoke_ttm(x[: f - 1], lambda _: k)
    assert torch.equal(keep[: f - 1], want)
    assert not keep[f - 1].any()
    assert vidcom2.apply("dycoke_vc2", x, r).order is None  # sorted indices


# the contract's budget rule for this method (tests/vidcom2/test_contract.py), written from the spec, not the code

def expected_counts(x, r):
    """The port's ``int((1 - (1 - r)) * N)`` per pruned frame, anchors whole, an unpaired last frame dropped."""
    f, n = x.shape[:2]
    if f == 1:
        return [n] * f
    k = int((1.0 - (1.0 - r)) * n)
    pruned = pruned_frames(f)
    return [0 if (f % 2 and t == f - 1) else (k if t in pruned else n) for t in range(f)]
