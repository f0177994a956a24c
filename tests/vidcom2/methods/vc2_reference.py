"""Slow references of the three baseline ports of the VidCom2 repository (visionzip_vc2, holitom_vc2, fastvid_vc2),
shared by their test files (test_visionzip_vc2.py, test_holitom_vc2.py, test_fastvid_vc2.py, test_vc2_ports.py).

Golden values come from slow references below, written from a reading of the port code (github.com/xuyang-liu16/
VidCom2 branch qwen, token_compressor/{visionzip,holitom,fastvid}/): Python loops, float64, no code from vidcom2/.
Ties are broken by lower index (the library's documented rule). Density noise is drawn from a seeded generator in
the port's call order and shapes, so a reference and the method see the same numbers. The budget helpers
(``holitom_count``, ``fastvid_counts``) are also the contract suite's rules (tests/vidcom2/test_contract.py).
"""

from __future__ import annotations

import math

import torch

import vidcom2


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
