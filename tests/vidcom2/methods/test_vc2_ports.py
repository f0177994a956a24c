"""The three baseline ports of the VidCom2 repository (visionzip_vc2, holitom_vc2, fastvid_vc2).

Golden values come from slow references below, written from a reading of the port code (github.com/xuyang-liu16/
VidCom2 branch qwen, token_compressor/{visionzip,holitom,fastvid}/): Python loops, float64, no code from vidcom2/.
Ties are broken by lower index (the library's documented rule). Density noise is drawn from a seeded generator in
the port's call order and shapes, so a reference and the method see the same numbers. The budget helpers
(``holitom_count``, ``fastvid_counts``) are also the contract suite's rules (tests/vidcom2/test_contract.py).
"""

from __future__ import annotations

import math
from itertools import product

import pytest
import torch

import vidcom2

# ---------------------------------------------------------------------------------------------------- helpers


def _norm(v):
    return math.sqrt(sum(float(a) * float(a) for a in v))


def _dot(u, v):
    return sum(float(a) * float(b) for a, b in zip(u, v))


def _unit(v):
    nv = max(_norm(v), 1e-12)
    return [float(a) / nv for a in v]


def _top(values, k):
    """Indices of the k largest values, ties to the lower index."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


def _mean(rows):
    return [sum(c) / len(rows) for c in zip(*rows)]


def _dpc(vectors, cluster_num, k, noise_row):
    """DPC-kNN (HoliTom / FastVID): centres ascending and the distance matrix (both ports' formula)."""
    m, d = len(vectors), len(vectors[0])
    dist = [
        [
            math.sqrt(sum((a - b) ** 2 for a, b in zip(vectors[i], vectors[j]))) / math.sqrt(d)
            for j in range(m)
        ]
        for i in range(m)
    ]
    rho = [
        math.exp(-sum(v * v for v in sorted(dist[i])[:k]) / k) + float(noise_row[i]) * 1e-6 for i in range(m)
    ]
    dmax = max(max(r) for r in dist)
    delta = [min([dist[i][j] for j in range(m) if rho[j] > rho[i]], default=dmax) for i in range(m)]
    return sorted(_top([delta[i] * rho[i] for i in range(m)], cluster_num)), dist


def _cluster_merge(vectors, centres, dist, beta):
    """HoliTom merge: non-centres to the nearest centre (first minimum), centre = beta*c + (1-beta)*mean."""
    members = {c: [] for c in centres}
    for i in range(len(vectors)):
        if i in members:
            continue
        best = min(centres, key=lambda c: (dist[i][c], centres.index(c)))
        members[best].append(vectors[i])
    out = []
    for c in centres:
        if members[c]:
            mu = _mean(members[c])
            out.append([beta * a + (1 - beta) * b for a, b in zip(vectors[c], mu)])
        else:
            out.append(list(vectors[c]))
    return out


def _as_lists(x):
    return x.double().tolist()


# ---------------------------------------------------------------------------------------------------- visionzip


def ref_visionzip(x, r, dominant_ratio=0.6, k_neighbors=5):
    """token_compressor/visionzip: per frame, int() budget, norm-dominant, kNN-density anchors, plain mean."""
    f, n, _ = x.shape
    xs = _as_lists(x)
    keep = torch.zeros(f, n, dtype=torch.bool)
    out = x.double().clone()
    num_keep = max(1, int(n * r))
    dom_n = max(1, int(num_keep * dominant_ratio))
    ctx = num_keep - dom_n
    for t in range(f):
        dom = _top([_norm(v) for v in xs[t]], dom_n)
        for i in dom:
            keep[t, i] = True
        rest = [i for i in range(n) if i not in dom]
        if ctx == 0 or not rest:
            continue
        units = [_unit(xs[t][i]) for i in rest]
        m = len(rest)
        sim = [[_dot(units[a], units[b]) for b in range(m)] for a in range(m)]
        kk = min(k_neighbors + 1, m)
        dens = [sum(sorted(sim[a], reverse=True)[1:kk]) / (kk - 1) if kk > 1 else math.nan for a in range(m)]
        anchors = sorted(_top(dens, ctx)) if m > 1 else [0]
        for a in anchors:
            keep[t, rest[a]] = True
        if len(anchors) == m:
            continue
        members = {a: [] for a in anchors}
        for a in range(m):
            best = anchors[0]
            for c in anchors[1:]:
                if sim[a][c] > sim[a][best]:
                    best = c
            members[best].append(xs[t][rest[a]])
        for a in anchors:
            if members[a]:
                out[t, rest[a]] = torch.tensor(_mean(members[a]), dtype=torch.float64)
    return keep, out


# ---------------------------------------------------------------------------------------------------- holitom


def _static_pairs(xs, tau):
    """static[t][p]: cos(x_t[p], x_{t+1}[p]) > tau."""
    return [[_dot(_unit(a), _unit(b)) > tau for a, b in zip(xs[t], xs[t + 1])] for t in range(len(xs) - 1)]


def _saving(static, a, b):
    n = len(static[0]) if static else 0
    return sum(all(static[t][p] for t in range(a, b)) for p in range(n)) * (b - a)


def holitom_windows(static, f, max_window=1024):
    """The port's DP over frame partitions (a longer window must save strictly more), as a list of windows."""
    dp, prev = [0] * f, [0] * f
    for i in range(f):
        best, first = (dp[i - 1] if i else 0), i
        for size in range(2, min(i + 1, max_window) + 1):
            j = i - size
            cur = (dp[j] if j >= 0 else 0) + _saving(static, j + 1, i)
            if cur > best:
                best, first = cur, j + 1
        dp[i], prev[i] = best, first
    wins, i = [], f - 1
    while i >= 0:
        wins.append((prev[i], i))
        i = prev[i] - 1
    return wins[::-1], dp[-1]


def _holitom_plan(xs, r, tau, max_window):
    f, n = len(xs), len(xs[0])
    static = _static_pairs(xs, tau)
    wins, saved = holitom_windows(static, f, max_window)
    r2 = min(r / ((f * n - float(saved)) / (f * n)), 1.0)
    plan = []
    for a, b in wins:
        st = [p for p in range(n) if b > a and all(static[t][p] for t in range(a, b))]
        plan.append((a, b, st, [p for p in range(n) if p not in st]))
    return plan, r2


def holitom_count(x, r, tau=0.8, D=0.0, max_window=1024):
    """Tokens the port emits for one video (its budget rule; r = 1 keeps everything here)."""
    f, n, _ = x.shape
    if r >= 1.0:
        return f * n
    plan, r2 = _holitom_plan(_as_lists(x), r, tau, max_window)
    total = 0
    for a, b, st, dyn in plan:
        total += round(len(st) * r2) + (b - a + 1) * math.ceil(len(dyn) * r2)
    return max(total, 1)


def ref_holitom(x, r, g, tau=0.8, beta=0.6, D=0.0, K=7, max_window=1024):
    """token_compressor/holitom: windows, static means + DPC merge, norm (+DPC) per frame, linspace slots.
    Returns (keep, features, emitted tokens in the port's order, representative flat slots)."""
    f, n, d = x.shape
    xs = _as_lists(x)
    plan, r2 = _holitom_plan(xs, r, tau, max_window)
    tokens, reps = [], []
    for a, b, st, dyn in plan:
        # holitom_segment_compression merges the dynamic tokens first (noise order), then the static ones, and
        # emits [static, dynamic]
        nd = len(dyn)
        keep_n = math.ceil(nd * r2)
        dom_n = round(keep_n * (1 - D))
        ctx = keep_n - dom_n
        per_frame = []
        for t in range(a, b + 1):
            dom = sorted(_top([_norm(xs[t][p]) for p in dyn], dom_n))
            per_frame.append(([xs[t][dyn[i]] for i in dom], [t * n + dyn[i] for i in dom], dom))
        if ctx > 0:
            noise = torch.rand((b - a + 1, nd - dom_n), generator=g, dtype=torch.float32).tolist()
            for w, t in enumerate(range(a, b + 1)):
                rest = [i for i in range(nd) if i not in per_frame[w][2]]
                vecs = [xs[t][dyn[i]] for i in rest]
                centres, dist = _dpc(vecs, ctx, min(K, ctx), noise[w])
                per_frame[w][0].extend(_cluster_merge(vecs, centres, dist, beta))
                per_frame[w][1].extend(t * n + dyn[rest[c_]] for c_ in centres)
        if st:
            mean = [_mean([xs[t][p] for t in range(a, b + 1)]) for p in st]
            c = round(len(st) * r2)
            if c > 0:
                noise = torch.rand((1, len(st)), generator=g, dtype=torch.float32)[0].tolist()
                centres, dist = _dpc(mean, c, min(K, c), noise)
                tokens += _cluster_merge(mean, centres, dist, beta)
                reps += [a * n + st[c_] for c_ in centres]
        for feats, slots, _ in per_frame:
            tokens += feats
            reps += slots
    keep = torch.zeros(f * n, dtype=torch.bool)
    out = x.double().reshape(f * n, d).clone()
    slots = torch.linspace(0, f * n - 1, len(tokens), dtype=torch.long).tolist()  # the port's literal call
    for s, v in zip(slots, tokens):
        keep[s] = True
        out[s] = torch.tensor(v, dtype=torch.float64)
    return keep.view(f, n), out.view(f, n, d), tokens, reps


# ---------------------------------------------------------------------------------------------------- fastvid


def _cut_sizes(f, cuts):
    sizes, start = [], 0
    for i in range(f):
        if i in cuts or i == f - 1:
            sizes.append(i - start + 1)
            start = i + 1
    return sizes


def _fastvid_plan(xs, r, c=8, tau=0.84, ignore=0.99, d=0.5, p=4):
    """Segments and per-frame (salient, context) counts, written from fastvid_algo.py."""
    f, n = len(xs), len(xs[0])
    glob = [_unit(_mean(frame)) for frame in xs]
    sim = [_dot(glob[t], glob[t + 1]) for t in range(f - 1)]
    k = min(c - 1, f - 1)
    cuts = set(sorted(range(f - 1), key=lambda i: (sim[i], i))[:k]) | {
        i for i in range(f - 1) if sim[i] < tau
    }
    sizes = _cut_sizes(f, cuts)
    frame_retain = max(1, min(n, int(n * r)))
    sal, ctx, start = [], [], 0
    for s in sizes:
        retain = max(1, min(s * n, frame_retain * s))
        cn = min(max(1, int(retain * d)) if retain > 1 else 0, retain)
        sn = retain - cn
        if s == 1:
            fs, fc = [sn], [cn]
        else:
            inner = _cut_sizes(s, {i for i in range(s - 1) if sim[start + i] < ignore})
            v = len(inner)
            inner_sal = [sn // v + (1 if i < sn % v else 0) for i in range(v)]
            groups = -(-v // p)
            temp = [cn // groups + (1 if i < cn % groups else 0) for i in range(groups)]
            by_inner, used = [], 0
            for i in range(v):
                if i % p == 0 and used < len(temp):
                    by_inner.append(min(temp[used], n // 2))
                    used += 1
                else:
                    by_inner.append(0)
            by_inner.reverse()
            fs, fc = [], []
            for i, size in enumerate(inner):
                fs += [0] * (size - 1)
                fc += [0] * (size - 1)
                if by_inner[i] == 0:
                    fs.append(min(inner_sal[i], n))
                    fc.append(0)
                else:
                    fc.append(min(by_inner[i], n // 2))
                    fs.append(min(inner_sal[i], n - fc[-1]))
        for a, b in zip(fs, fc):
            sal.append(min(max(0, a), n))
            ctx.append(min(max(0, b), n - sal[-1]))
        start += s
    return sizes, sal, ctx, frame_retain


def fastvid_counts(x, r, **kw):
    """Per-frame kept counts of the port (its budget rule; r >= 1 keeps everything), or the total (int) when a
    segment falls back to its best tokens over all its frames (the per-frame split then depends on the norms)."""
    f, n, _ = x.shape
    if r >= 1.0:
        return [n] * f
    sizes, sal, ctx, frame_retain = _fastvid_plan(_as_lists(x), r, **kw)
    counts, start, fallback = [], 0, False
    for s in sizes:
        seg = [sal[t] + (ctx[t] if sal[t] < n else 0) for t in range(start, start + s)]
        if sum(seg) == 0:
            fallback = True
            seg = [max(1, min(s * n, frame_retain * s))] + [0] * (s - 1)
        counts += seg
        start += s
    return sum(counts) if fallback else counts


def ref_fastvid(x, r, g, c=8, tau=0.84, ignore=0.99, d=0.5, p=4, beta=0.5):
    f, n, dim = x.shape
    xs = _as_lists(x)
    keep = torch.zeros(f, n, dtype=torch.bool)
    out = x.double().clone()
    if r >= 1.0:
        return keep | True, out
    sizes, sal, ctx, frame_retain = _fastvid_plan(xs, r, c, tau, ignore, d, p)
    norms = [[_norm(v) for v in frame] for frame in xs]
    start = 0
    for s in sizes:
        salient, anchors = set(), []
        for t in range(start, start + s):
            top = _top(norms[t], sal[t])
            salient |= {(t, i) for i in top}
            rest = [i for i in range(n) if i not in top]
            if ctx[t] > 0 and rest:
                noise = torch.rand((1, len(rest)), generator=g, dtype=torch.float32)[0].tolist()
                centres, _ = _dpc(
                    [xs[t][i] for i in rest], min(ctx[t], len(rest)), max(1, min(4, len(rest))), noise
                )
                anchors.append([(t, rest[c_]) for c_ in centres])
        if not salient and not anchors:
            retain = max(1, min(s * n, frame_retain * s))
            flat = [norms[t][i] for t in range(start, start + s) for i in range(n)]
            for j in _top(flat, retain):
                keep[start + j // n, j % n] = True
            start += s
            continue
        for t, i in salient:
            keep[t, i] = True
        for group in anchors:
            for t, i in group:
                keep[t, i] = True
            members = [
                (t, i)
                for t in range(start, start + s)
                for i in range(n)
                if (t, i) not in salient and (t, i) not in group
            ]
            if not members:
                continue
            units = {ti: _unit(xs[ti[0]][ti[1]]) for ti in members + group}
            assigned = {a: [] for a in group}
            for m_ in members:
                best = group[0]
                for a in group[1:]:
                    if _dot(units[m_], units[a]) > _dot(units[m_], units[best]):
                        best = a
                assigned[best].append(xs[m_[0]][m_[1]])
            for a in group:
                cnt = len(assigned[a])
                w = max(1 / (cnt + 1), beta)
                mu = _mean(assigned[a]) if cnt else [0.0] * dim
                out[a] = torch.tensor(
                    [w * u + (1 - w) * v for u, v in zip(xs[a[0]][a[1]], mu)], dtype=torch.float64
                )
        start += s
    return keep, out


# ---------------------------------------------------------------------------------------------------- inputs


def _random(f, n, d=6, seed=0):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _static_video(f, n, d=6, seed=0, cut=None, moving=0.3):
    """Frames = a fixed scene + small jitter; a share ``moving`` of positions changes each frame; a scene cut at
    frame ``cut`` (so HoliTom finds static windows and FastVID near-duplicate runs and segments)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    frames = []
    for t in range(f):
        if cut is not None and t == cut:
            base = torch.randn(n, d, generator=g, dtype=torch.float64)
        fr = base + 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)
        mov = torch.rand(n, generator=g) < moving
        fr[mov] = torch.randn(int(mov.sum()), d, generator=g, dtype=torch.float64)
        frames.append(fr)
    return torch.stack(frames)


def _run(name, x, r, seed=0, **hp):
    m = vidcom2.get_method(name, **hp)
    return m(x, r, generator=torch.Generator().manual_seed(seed))


def _check_same(sel, x, keep, out):
    """Same kept slots, positional order, and the same feature in every kept slot (the input's where unmerged)."""
    assert torch.equal(sel.keep, keep), (sel.keep.sum(1).tolist(), keep.sum(1).tolist())
    assert sel.order is None
    feats = sel.features if sel.features is not None else x
    assert torch.allclose(feats[keep].double(), out[keep], atol=1e-10, rtol=1e-10)


SHAPES = [(1, 1), (1, 9), (2, 5), (3, 13), (5, 8), (9, 6)]
RATIOS = [0.1, 0.25, 0.5, 0.77]


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("f,n", SHAPES)
def test_visionzip_vc2_matches_reference_random(f, n):
    x = _random(f, n, seed=f * 7 + n)
    for r in RATIOS + [1.0]:
        keep, out = ref_visionzip(x, r)
        sel = _run("visionzip_vc2", x, r)
        assert torch.equal(sel.keep, keep), r
        if sel.features is not None:
            assert torch.allclose(sel.features[keep], out[keep], atol=1e-12)
        else:
            assert torch.equal(out[keep], x[keep])


def test_visionzip_vc2_structured_and_hparams():
    # clustered tokens (5 directions + 2% jitter, random scales): dense neighbourhoods, uneven clusters. Exact
    # density ties are not constructed: float64 rounding would decide them differently here and in the reference
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(5, 6, generator=g, dtype=torch.float64)
    x = centres[torch.randint(0, 5, (3, 20), generator=g)] * (
        1 + torch.rand(3, 20, 1, generator=g, dtype=torch.float64)
    )
    x = x + 0.02 * torch.randn(3, 20, 6, generator=g, dtype=torch.float64)
    for r, dr, k in product([0.2, 0.45, 0.9], [0.6, 0.0, 1.0], [1, 5, 30]):
        keep, out = ref_visionzip(x, r, dr, k)
        sel = _run("visionzip_vc2", x, r, dominant_ratio=dr, k_neighbors=k)
        assert torch.equal(sel.keep, keep), (r, dr, k)
        feats = sel.features if sel.features is not None else x
        assert torch.allclose(feats[keep], out[keep], atol=1e-12)


def test_visionzip_vc2_budget_is_the_ports_int_rule():
    x = _random(2, 29)
    for r, kept, dom in [(0.29, 8, 4), (0.1, 2, 1), (0.01, 1, 1), (0.5, 14, 8), (1.0, 29, 17)]:
        # 29 * 0.29 = 8.41 -> 8; 29 * 0.5 = 14.5 -> 14 (count() gives 14 by half-even too); 0.01 -> max(1, 0)
        sel = _run("visionzip_vc2", x, r)
        assert sel.keep.sum(1).tolist() == [kept, kept] and sel.stats["dominant"] == dom
    sel = _run("visionzip_vc2", _random(1, 10), 0.3)  # 10 * 0.3 = 3.0000000000000004 -> 3; 0.6 * 3 = 1.8 -> 1
    assert sel.stats["dominant"] == 1 and sel.stats["contextual"] == 2


def test_visionzip_vc2_full_ratio_is_lossless_like_the_port():
    x = _random(3, 11)
    sel = _run("visionzip_vc2", x, 1.0)
    assert bool(sel.keep.all()) and torch.equal(sel.gather(x), x.reshape(-1, 6))


@pytest.mark.parametrize("f,n", SHAPES)
def test_holitom_vc2_matches_reference_random(f, n):
    x = _random(f, n, seed=f * 11 + n)
    for r in RATIOS:
        g = torch.Generator().manual_seed(5)
        keep, out, _, _ = ref_holitom(x, r, g)
        sel = _run("holitom_vc2", x, r, seed=5)
        _check_same(sel, x, keep, out)
        assert int(sel.keep.sum()) == holitom_count(x, r)


@pytest.mark.parametrize("f,cut,moving", [(4, None, 0.0), (5, 2, 0.3), (7, 3, 0.2), (9, None, 0.4)])
def test_holitom_vc2_matches_reference_static(f, cut, moving):
    x = _static_video(f, 12, seed=f, cut=cut, moving=moving)
    for r, hp in product([0.1, 0.3, 0.6], [{}, {"D": 0.5, "K": 3}, {"beta": 0.2, "max_window_size": 2}]):
        g = torch.Generator().manual_seed(3)
        ref_hp = {k: v for k, v in hp.items() if k != "max_window_size"}
        keep, out, _, _ = ref_holitom(x, r, g, max_window=hp.get("max_window_size", 1024), **ref_hp)
        sel = _run("holitom_vc2", x, r, seed=3, **hp)
        _check_same(sel, x, keep, out)
        assert sel.stats["saved"] > 0 or moving > 0.3  # the inputs do produce static windows


def test_holitom_vc2_hand_example_fully_static():
    # 4 identical frames of 10 tokens: one window saving 30; r' = min(0.1 * 40 / 10, 1) = 0.4; 4 static centres;
    # no dynamic token; the port writes them into linspace(0, 39, 4) = [0, 13, 26, 39]
    x = _random(1, 10).expand(4, 10, 6).clone()
    sel = _run("holitom_vc2", x, 0.1)
    assert sel.keep.reshape(-1).nonzero().squeeze(1).tolist() == [0, 13, 26, 39]
    assert sel.stats["saved"] == 30 and sel.stats["ratio_adjusted"] == pytest.approx(0.4)
    rep = _run("holitom_vc2", x, 0.1, slots="representative")
    assert int(rep.keep.sum()) == 4 and rep.keep[0].sum() == 4  # centres at their own positions in frame 0
    assert torch.allclose(sel.gather(x), rep.gather(x))  # same tokens, in the same (position) order


def test_holitom_vc2_windows_are_optimal():
    # the DP maximises the saving over all partitions (brute force over the 2^(F-1) cut sets)
    for seed in range(4):
        x = _static_video(6, 8, seed=seed, cut=3, moving=0.4)
        static = _static_pairs(_as_lists(x), 0.8)
        _, best = holitom_windows(static, 6)
        brute = 0
        for mask in range(2**5):
            edges = [-1] + [i for i in range(5) if mask >> i & 1] + [5]
            brute = max(brute, sum(_saving(static, a + 1, b) for a, b in zip(edges, edges[1:])))
        assert best == brute
        assert _run("holitom_vc2", x, 0.2).stats["saved"] == best


def test_holitom_vc2_full_ratio_deviates_from_port_by_keeping_all():
    x = _static_video(4, 10, seed=2, moving=0.0)
    _, _, tokens, _ = ref_holitom(x, 1.0, torch.Generator().manual_seed(0))
    assert len(tokens) < 40  # the port still averages the static positions at r = 1 ...
    sel = _run("holitom_vc2", x, 1.0)
    # ... this does not
    assert bool(sel.keep.all()) and sel.features is None and sel.stats["full_ratio_lossless"]


def test_holitom_vc2_representative_slots_hold_the_same_tokens():
    x = _static_video(5, 12, seed=4, cut=2, moving=0.3)
    g = torch.Generator().manual_seed(1)
    _, _, tokens, reps = ref_holitom(x, 0.3, g)
    sel = _run("holitom_vc2", x, 0.3, seed=1, slots="representative")
    assert sorted(reps) == sel.keep.reshape(-1).nonzero().squeeze(1).tolist()
    got = sel.features.reshape(-1, 6)
    for s, v in zip(reps, tokens):
        assert torch.allclose(got[s], torch.tensor(v, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("f,n", SHAPES)
def test_fastvid_vc2_matches_reference_random(f, n):
    x = _random(f, n, seed=f * 13 + n)
    for r in RATIOS:
        keep, out = ref_fastvid(x, r, torch.Generator().manual_seed(2))
        sel = _run("fastvid_vc2", x, r, seed=2)
        _check_same(sel, x, keep, out)
        assert sel.keep.sum(1).tolist() == fastvid_counts(x, r)


def test_fastvid_vc2_fallback_when_a_segment_would_keep_nothing():
    # n = 1 and d = 1: a multi-frame segment's budget is all contextual, capped at n // 2 = 0 -> the port keeps the
    # segment's `retain` highest-norm tokens instead
    x = _random(1, 1, seed=2).expand(4, 1, 6).clone() * torch.tensor(
        [1.0, 3.0, 2.0, 4.0], dtype=torch.float64
    ).view(4, 1, 1)
    keep, out = ref_fastvid(x, 0.5, torch.Generator(), c=1, d=1.0)
    sel = _run("fastvid_vc2", x, 0.5, dyseg_c=1, stprune_d=1.0)
    _check_same(sel, x, keep, out)
    # one segment of 4 frames (same direction), retain = 4 * max(1, int(1 * 0.5)) = 4: all 4 tokens, unmerged
    assert bool(sel.keep.all()) and torch.equal(sel.features, x)
    # a total: the fallback's per-frame split depends on the norms
    assert fastvid_counts(x, 0.5, c=1, d=1.0) == 4


@pytest.mark.parametrize(
    "f,cut,hp",
    [
        (10, 5, {}),
        (12, None, {"dyseg_c": 2}),
        (9, 4, {"dyseg_c": 1, "dtm_p": 1, "stprune_d": 0.3, "dtm_beta": 0.2}),
        (11, 6, {"dyseg_c": 3, "dyseg_ignore": 0.9999, "dtm_p": 2}),
    ],
)
def test_fastvid_vc2_matches_reference_segments(f, cut, hp):
    x = _static_video(f, 10, seed=f, cut=cut, moving=0.05)
    x[1] = x[0]  # an exact duplicate frame: an inner segment of length >= 2
    kw = {
        "c": hp.get("dyseg_c", 8),
        "ignore": hp.get("dyseg_ignore", 0.99),
        "d": hp.get("stprune_d", 0.5),
        "p": hp.get("dtm_p", 4),
        "beta": hp.get("dtm_beta", 0.5),
    }
    for r in [0.1, 0.3, 0.7]:
        keep, out = ref_fastvid(x, r, torch.Generator().manual_seed(9), **kw)
        sel = _run("fastvid_vc2", x, r, seed=9, **hp)
        _check_same(sel, x, keep, out)
        sizes = _fastvid_plan(_as_lists(x), r, kw["c"], 0.84, kw["ignore"], kw["d"], kw["p"])[0]
        assert sel.stats["segments"] == len(sizes)
    assert max(sizes) > 1  # the inputs do produce multi-frame segments


def test_fastvid_vc2_hand_example_single_frame():
    # one frame of 20 tokens at r = 0.3: 6 kept, int(6 * 0.5) = 3 contextual anchors, 3 salient (largest norms)
    x = _random(1, 20, seed=3)
    sel = _run("fastvid_vc2", x, 0.3)
    assert int(sel.keep.sum()) == 6
    top3 = x[0].norm(dim=-1).topk(3).indices
    assert bool(sel.keep[0, top3].all())
    assert torch.equal(sel.features[0, top3], x[0, top3])  # salient tokens are not merged


def test_fastvid_vc2_keeps_only_the_last_of_duplicate_frames():
    # 3 identical frames, no forced cut (dyseg_c = 1; with the default 8 every frame of a video of <= 8 temporal
    # patches is its own segment): one segment, one inner segment, only its last frame gets tokens
    x = _random(1, 12, seed=8).expand(3, 12, 6).clone()
    assert _run("fastvid_vc2", x, 0.25).keep.sum(1).tolist() == [3, 3, 3]
    sel = _run("fastvid_vc2", x, 0.25, dyseg_c=1)
    # 3 * 3 = 9 retained: 4 contextual (<= 12 // 2) + 5 salient, all in the last frame
    assert sel.keep.sum(1).tolist() == [0, 0, 9]
    assert sel.stats["retention_realised"] == pytest.approx(9 / 36)


def test_fastvid_vc2_full_ratio_keeps_everything_like_the_port():
    x = _random(3, 7)
    sel = _run("fastvid_vc2", x, 1.0)
    assert bool(sel.keep.all()) and sel.features is None


@pytest.mark.parametrize("name", ["holitom_vc2", "fastvid_vc2"])
def test_noise_comes_from_the_generator_only(name):
    x = _static_video(10, 12, seed=1, cut=5, moving=0.2)
    torch.manual_seed(0)
    a = vidcom2.apply(name, x, 0.3, seed=4, **({"D": 0.5} if name == "holitom_vc2" else {}))
    torch.manual_seed(99)
    b = vidcom2.apply(name, x, 0.3, seed=4, **({"D": 0.5} if name == "holitom_vc2" else {}))
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features)
    assert vidcom2.get_method(name).info.stochastic


def test_ports_are_named_approximations_on_post_projector_features():
    for name in ("visionzip_vc2", "holitom_vc2", "fastvid_vc2"):
        info = vidcom2.get_method(name).info
        assert info.stage == "pre_llm" and info.needs == () and info.approximation
        assert "VidCom2" in info.code and "qwen" in info.code
    with pytest.raises(ValueError, match="slots"):
        _run("holitom_vc2", _random(2, 4), 0.5, slots="sorted")
    with pytest.raises(ValueError, match="stprune_d"):
        _run("fastvid_vc2", _random(2, 4), 0.5, stprune_d=1.5)
    with pytest.raises(ValueError, match="dominant_ratio"):
        _run("visionzip_vc2", _random(2, 4), 0.5, dominant_ratio=-0.1)


@pytest.mark.parametrize("name", ["visionzip_vc2", "holitom_vc2", "fastvid_vc2"])
def test_low_precision_runs_and_keeps_the_float32_budget(name):
    x = _static_video(6, 16, seed=2, cut=3, moving=0.3).float()
    a = vidcom2.apply(name, x, 0.25)
    b = vidcom2.apply(name, x.bfloat16(), 0.25)
    assert b.gather(x.bfloat16()).dtype == torch.bfloat16
    if name != "fastvid_vc2":  # fastvid's segmentation may move with bf16 frame means; its count with it
        assert int(a.keep.sum()) == int(b.keep.sum())
