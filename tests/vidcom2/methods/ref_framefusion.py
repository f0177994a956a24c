"""Independent reference of FrameFusion's merge step and cost formula, written from the official operations
(github.com/thu-nics/FrameFusion fbec1d2, ``framefusion/main.py``) with plain Python loops instead of the library's
tensor code: the patch-major token order of ``torch.where(patch_type == arange(patch_num)[:, None])``, upstream's
``cosine_similarity`` (``sum(a*b) / (norm(a) * norm(b))``), runs of consecutive merged tokens
(``find_contigious_latter_index``) averaged into the token before the run, ``_compute_pruning_ratio``.

Means are accumulated in float64 here (upstream: ``index_add_`` in the hidden dtype), so merged values are compared
with a tolerance; which tokens merge is compared exactly.
"""

from __future__ import annotations

import torch


def pruning_ratio(ratios, cost, num_layers):
    """``_compute_pruning_ratio``; ``None`` where upstream raises "The cost is too small"."""
    s, total = 1.0, 0.0
    for r in ratios:
        s = s * (1 - r)
        total = total + s
    remain = num_layers * cost - total
    if remain < 0:
        return None
    if remain / ((num_layers - len(ratios)) * s) > 1:
        return 0
    return 1 - remain / ((num_layers - len(ratios)) * s)


def _cos(a, b):
    return (torch.sum(a * b, dim=-1) / (torch.norm(a, dim=-1) * torch.norm(b, dim=-1))).item()


def similarities(hidden, patch):
    """``(order, sim)``: token indices in upstream's patch-major order and each one's cosine to the previous token
    of the same patch in that order (-2 for a patch's first)."""
    n = hidden.shape[0]
    order = [i for p in range(max(patch) + 1) for i in range(n) if patch[i] == p]
    sim = [-2.0]
    for j in range(1, len(order)):
        same = patch[order[j]] == patch[order[j - 1]]
        sim.append(_cos(hidden[order[j - 1]], hidden[order[j]]) if same else -2.0)
    return order, sim


def step(hidden, patch, ratios, cost, num_layers, sim_bound=0.6, ratio_bound=0.1):
    """One FrameFusion merge on ``hidden [n, D]`` with in-frame indices ``patch`` (list, -1 = text).

    Returns ``dict(removed=set of sequence indices merged away, hidden=[n, D] float64 with the representatives'
    means, done, prune=None or the kept count, ratio)``; ``ratios`` is appended in place as upstream does."""
    patch = [int(p) for p in patch]
    n_vis = sum(1 for p in patch if p >= 0)
    upper = pruning_ratio(ratios, cost, num_layers)
    order, sim = similarities(hidden, patch)
    flagged = [j for j in range(len(order)) if sim[j] >= sim_bound]
    ratio = len(flagged) / n_vis
    prune = None
    if ratio < upper:
        ratios.append(ratio)
        done = ratio < ratio_bound
        if done:
            p = pruning_ratio(ratios, cost, num_layers)
            prune = max(1, round((n_vis - len(flagged)) * (1 - (1.0 if p is None else p))))
    else:
        k = int(upper * n_vis)
        ranked = sorted(range(len(order)), key=lambda j: (-sim[j], j))  # ties: lower index first
        flagged, done = sorted(ranked[:k]), True
    marked = set(flagged)
    out = hidden.double().clone()
    removed = set()
    j = 0
    while j < len(order):
        if j in marked:
            start = j
            while j < len(order) and j in marked:
                j += 1
            rep, members = start - 1, list(range(start, j))
            total = hidden[order[rep]].double().clone()
            for m in members:
                total += hidden[order[m]].double()
                removed.add(order[m])
            out[order[rep]] = total / (len(members) + 1)
        else:
            j += 1
    return {"removed": removed, "hidden": out, "done": done, "prune": prune, "ratio": ratio}


def tensor_keep_count(features, retention_ratio, num_layers=28, sim_bound=0.6, ratio_bound=0.1):
    """Kept tokens of ``select`` on tensors: merge 0 on the features, then (unless merging met the budget) the
    prune to ``round(n (1 - p))`` (at least 1) of the survivors; ``None`` below the floor ``1 / num_layers``."""
    if retention_ratio * num_layers < 1:
        return None
    f, n, d = features.shape
    ratios = []
    out = step(features.reshape(f * n, d), [i for _ in range(f) for i in range(n)], ratios, retention_ratio,
               num_layers, sim_bound, ratio_bound)  # fmt: skip
    left = f * n - len(out["removed"])
    if out["done"] and out["prune"] is None:
        return left
    p = pruning_ratio(ratios, retention_ratio, num_layers)
    return max(1, round(left * (1 - (1.0 if p is None else p))))
