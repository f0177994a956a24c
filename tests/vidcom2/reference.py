"""Slow, independent references written straight from the specs (loops, float64, no code from vidcom2/).

Used only as golden values by the tests. Each function documents the spec section it follows.
"""

from __future__ import annotations

import math

import torch


def round_half_even(x: float) -> int:
    f = math.floor(x)
    d = x - f
    if d > 0.5 or (d == 0.5 and f % 2 == 1):
        return f + 1
    return f


def budget(r: float, n: int) -> int:
    """The project's one rounding rule, recomputed: clamp(round_half_even(r*n), 1, n)."""
    return min(n, max(1, round_half_even(r * n)))


def vidcom2_mask(features: torch.Tensor, r: float) -> tuple[torch.Tensor, list[int]]:
    """spec/vidcom2.md steps 1-7, float64, Python loops. Ties broken by lower index.

    r = 1 keeps everything (project rule; the official code would still drop ~N/F tokens per frame, see
    vidcom2/methods/vidcom2.py)."""
    mask, ks, _ = vidcom2_mask_and_margin(features, r)
    return mask, ks


def vidcom2_mask_and_margin(features: torch.Tensor, r: float) -> tuple[torch.Tensor, list[int], float]:
    """``vidcom2_mask`` plus the input's distance to a decision boundary: the smallest of (a) the gap between the
    last kept and the first dropped channel variance, (b) the distance of each r_t * n from a .5 rounding point,
    (c) per frame, the gap between the last kept and the first dropped token score. Two float computations of
    the same mask may differ only on inputs whose margin is within rounding error of zero."""
    x = features.double()
    if r >= 1.0:
        return torch.ones(features.shape[:2], dtype=torch.bool), [features.shape[1]] * features.shape[0], math.inf
    f, n, d = x.shape
    flat = x.reshape(f * n, d)
    # 1. per-channel population variance, keep floor(D/2) lowest
    variances = []
    for c in range(d):
        col = flat[:, c]
        mu = sum(col.tolist()) / len(col)
        variances.append(sum((v - mu) ** 2 for v in col.tolist()) / len(col))
    by_var = sorted(range(d), key=lambda c: (variances[c], c))
    keep_c = by_var[: max(1, d // 2)]
    margins = [_gap([variances[c] for c in by_var], len(keep_c))]
    sel = flat[:, keep_c]
    # 2. L2-normalise each token
    tokens = [[None] * n for _ in range(f)]
    for t in range(f):
        for i in range(n):
            v = sel[t * n + i]
            norm = math.sqrt(float((v * v).sum()))
            tokens[t][i] = v / max(norm, 1e-12)
    # 3. centres
    all_tok = torch.stack([tokens[t][i] for t in range(f) for i in range(n)])
    cv = all_tok.mean(dim=0)
    cf = [torch.stack(tokens[t]).mean(dim=0) for t in range(f)]

    def gauss(v, c):
        d2 = float(((v - c) ** 2).sum())
        return sum(math.exp(-d2 / (2 * a)) for a in (1 / 8, 1 / 4, 1 / 2, 1, 2))

    sv = [[gauss(tokens[t][i], cv) for i in range(n)] for t in range(f)]
    sf = [[gauss(tokens[t][i], cf[t]) for i in range(n)] for t in range(f)]
    # 5. frame uniqueness -> per-frame ratio
    u = [-sum(sv[t]) / n for t in range(f)]
    m = max(u)
    e = [math.exp((ut - m) / 0.01) for ut in u]
    p = [ei / sum(e) for ei in e]
    pm = sum(p) / f
    rt = [min(1.0, r * (1 + p[t] - pm)) for t in range(f)]
    # 6. per-frame budget
    ks = [max(1, round_half_even(rt[t] * n)) for t in range(f)]
    margins += [abs((rt[t] * n) % 1.0 - 0.5) for t in range(f)]
    # 7. keep the k_t smallest sv + sf
    mask = torch.zeros(f, n, dtype=torch.bool)
    for t in range(f):
        order = sorted(range(n), key=lambda i: (sv[t][i] + sf[t][i], i))
        for i in order[: ks[t]]:
            mask[t, i] = True
        margins.append(_gap([sv[t][i] + sf[t][i] for i in order], ks[t]))
    return mask, ks, min(margins)


def _gap(ascending: list[float], k: int) -> float:
    """Gap between the k-th and (k+1)-th smallest values (inf when all or none are kept)."""
    return ascending[k] - ascending[k - 1] if 0 < k < len(ascending) else math.inf


def uniform_indices(n: int, k: int) -> list[int]:
    """baselines.md 3: idx_j = floor((j + 0.5) * n / k)."""
    return [math.floor((j + 0.5) * n / k) for j in range(k)]


def dycoke_ttm(features: torch.Tensor, k_per_pruned) -> tuple[torch.Tensor, list[int]]:
    """baselines.md 8.1 pass structure, float64. Returns (mask, flat order)."""
    x = features.double()
    f, n, _ = x.shape

    def cos(a, b):
        return float((a * b).sum() / (max(math.sqrt(float((a * a).sum())), 1e-8) * max(math.sqrt(float((b * b).sum())), 1e-8)))

    ref = {}
    i = 0
    while i + 1 < f:
        ref[i + 1] = i
        i += 2
    i = 0
    while i < f - 4:
        ref[i + 2] = i
        i += 4
    mask = torch.zeros(f, n, dtype=torch.bool)
    order = []
    pruned_rank = 0
    for t in range(f):
        if t not in ref:
            mask[t] = True
            order += [t * n + j for j in range(n)]
        else:
            sims = [cos(x[ref[t], j], x[t, j]) for j in range(n)]
            k = k_per_pruned(pruned_rank)
            pruned_rank += 1
            chosen = sorted(range(n), key=lambda j: (sims[j], j))[:k]
            for j in chosen:
                mask[t, j] = True
            order += [t * n + j for j in chosen]
    return mask, order


def divprune(features: torch.Tensor, k: int) -> list[int]:
    """baselines.md 9, literal official loop: min over all selected rows each iteration (O(k^2 N))."""
    x = features.double().reshape(-1, features.shape[-1])
    xn = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    dist = 1 - xn @ xn.T
    m = x.shape[0]
    nearest = [sorted(dist[:, j].tolist())[1] for j in range(m)]
    first = max(range(m), key=lambda j: (nearest[j], -j))
    selected = [first]
    while len(selected) < k:
        best, best_v = None, -float("inf")
        for j in range(m):
            if j in selected:
                continue
            v = min(float(dist[s, j]) for s in selected)
            if v > best_v:
                best, best_v = j, v
        selected.append(best)
    return sorted(selected)
