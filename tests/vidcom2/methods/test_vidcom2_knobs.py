"""VidCom2's ablation knobs (paper Tables 5-8) against an independent float64 loop reference written here.

The reference follows the module docstring's reading of each knob, not the code: Python loops over frames and tokens,
its own channel selection, centres and kernel. At default knobs the masks equal tests/vidcom2/reference.py's.
"""

import math

import pytest
import torch

import vidcom2
from tests.vidcom2 import reference as ref


def _gauss(v, c):
    d2 = float(((v - c) ** 2).sum())
    return sum(math.exp(-d2 / (2 * a)) for a in (1 / 8, 1 / 4, 1 / 2, 1, 2))


def knob_mask(x, r, *, token_score="sum", frame_score="mean", window=None, weights=(1.0, 1.0), budget="fca"):
    """Loop reference of VidCom2 with the four knobs; returns (mask, per-frame counts)."""
    x = x.double()
    f, n, d = x.shape
    flat = x.reshape(f * n, d)
    var = [float(((flat[:, c] - flat[:, c].mean()) ** 2).mean()) for c in range(d)]
    chans = sorted(range(d), key=lambda c: (var[c], c))[: max(1, d // 2)]
    tok = [[flat[t * n + i, chans] / max(float(flat[t * n + i, chans].norm()), 1e-12) for i in range(n)] for t in range(f)]
    w = f if window is None else min(window, f)
    sv, sf = [], []
    for t in range(f):
        lo = min(max(0, t - w // 2), f - w)
        centre = sum(tok[s][i] for s in range(lo, lo + w) for i in range(n)) / (w * n)
        fc = sum(tok[t]) / n
        sv.append([_gauss(tok[t][i], centre) for i in range(n)])
        sf.append([_gauss(tok[t][i], fc) for i in range(n)])
    if budget == "uniform":
        ks = [ref.budget(r, n)] * f
    else:
        u = [-(sum(sv[t]) / n) if frame_score == "mean" else max(-v for v in sv[t]) for t in range(f)]
        e = [math.exp((ut - max(u)) / 0.01) for ut in u]
        p = [ei / sum(e) for ei in e]
        ks = [max(1, ref.round_half_even(min(1.0, r * (1 + p[t] - sum(p) / f)) * n)) for t in range(f)]
    wf, wv = weights
    score = {
        "sum": lambda t, i: wf * sf[t][i] + wv * sv[t][i],
        "s_frame": lambda t, i: -sf[t][i],
        "neg_s_frame": lambda t, i: sf[t][i],
        "s_video": lambda t, i: -sv[t][i],
        "neg_s_video": lambda t, i: sv[t][i],
    }[token_score]
    mask = torch.zeros(f, n, dtype=torch.bool)
    for t in range(f):
        for i in sorted(range(n), key=lambda i: (score(t, i), i))[: ks[t]]:
            mask[t, i] = True
    return mask, ks


def _video(f, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(f, n, d, generator=g, dtype=torch.float64) + torch.randn(1, n, d, generator=g, dtype=torch.float64)
    x[f // 3] += 1.5 * torch.randn(n, d, generator=g, dtype=torch.float64)  # one distinct frame: FCA is not flat
    x[-1] += 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x


KNOBS = [
    {},
    {"token_score": "s_frame"},
    {"token_score": "neg_s_frame"},
    {"token_score": "s_video"},
    {"token_score": "neg_s_video"},
    {"frame_score": "max"},
    {"budget": "uniform"},
    {"window": 1},
    {"window": 2},
    {"window": 3},
    {"window": 4},
    {"score_weights": (1.0, 2.0)},
    {"score_weights": (2.0, 1.0)},
    {"score_weights": (1.0, 0.0)},
    {"score_weights": (0.0, 1.0)},
]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize("seed,r", [(0, 0.25), (1, 0.3)])
def test_knob_matches_reference(knobs, seed, r):
    x = _video(7, 20, 10, seed)
    ref_kw = {("weights" if k == "score_weights" else k): v for k, v in knobs.items()}
    want, ks = knob_mask(x, r, **ref_kw)
    got = vidcom2.select("vidcom2", x, r, **knobs)
    assert got.sum(dim=1).tolist() == ks
    assert torch.equal(got, want)


def test_reference_at_defaults_is_the_spec_reference():
    x = _video(5, 16, 8, seed=3)
    assert torch.equal(knob_mask(x, 0.25)[0], ref.vidcom2_mask(x, 0.25)[0])


def test_defaults_and_equivalent_settings_give_the_official_mask():
    x = _video(6, 30, 12, seed=4)
    official = vidcom2.select("vidcom2", x, 0.25)
    assert torch.equal(official, ref.vidcom2_mask(x, 0.25)[0])
    for same in ({"window": 6}, {"window": 64}, {"score_weights": [1, 1]}, {"token_score": "sum", "frame_score": "mean"}):
        assert torch.equal(vidcom2.select("vidcom2", x, 0.25, **same), official), same
    # one-term weights are the single-score variants (Tables 5 and 8 share rows)
    assert torch.equal(vidcom2.select("vidcom2", x, 0.25, score_weights=(1, 0)), vidcom2.select("vidcom2", x, 0.25, token_score="neg_s_frame"))


def test_knobs_change_the_mask():
    x = _video(6, 30, 12, seed=5)
    official = vidcom2.select("vidcom2", x, 0.25)
    for knobs in KNOBS[1:]:
        assert not torch.equal(vidcom2.select("vidcom2", x, 0.25, **knobs), official), knobs


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"token_score": "u_video"}, "token_score"),
        ({"frame_score": "uniform"}, "budget=uniform"),
        ({"window": 0}, "window"),
        ({"score_weights": (0, 0)}, "score_weights"),
        ({"score_weights": (1, 2), "token_score": "s_video"}, "token_score='sum'"),
    ],
)
def test_bad_knobs_fail_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        vidcom2.get_method("vidcom2", **bad)
