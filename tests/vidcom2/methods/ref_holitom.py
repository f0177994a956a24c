"""Independent HoliTom (outer part) reference, written from the operations of the official code (cokeshao/HoliTom
e9b2972, ``holitom/llava_arch.py``): the cumulative-product saving matrix and the float DP of
``select_static_windows``, ``get_static_dynamic_features``'s boolean masks, ``merge_tokens_by_attention_density``
/ ``merge_tokens_by_density`` / ``cluster_dpc_knn`` / ``merge_tokens_by_clustering`` with their per-cluster loops,
and the LLaVA-OV concatenation. No code from vidcom2/. Returns the emitted tokens and their slots in sequence order.
Noise: ``torch.rand(density.shape, generator=...)`` per DPC call, in the official call order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def windows(sim, f, tau, max_window=1024):
    count = torch.ones((f, f, sim.shape[1]))
    for start in range(f - 1):
        cum = torch.cumprod((sim[start:] > tau).long(), dim=0).float()
        count[start, start + 1 : start + 1 + len(cum)] = cum
    lengths = (torch.arange(f).unsqueeze(0) - torch.arange(f).unsqueeze(1)).clamp(min=0)
    saving = count.sum(dim=-1) * lengths
    dp = torch.zeros(f)
    prev = [0] * f
    for i in range(f):
        best, first = (dp[i - 1] if i > 0 else 0), i
        for size in range(2, min(i + 1, max_window) + 1):
            j = i - size
            val = (dp[j] if j >= 0 else 0) + saving[j + 1, i]
            if val > best:
                best, first = val, j + 1
        dp[i], prev[i] = best, first
    out, i = [], f - 1
    while i >= 0:
        out.append((prev[i], i))
        i = prev[i] - 1
    return out[::-1], float(dp[-1])


def dpc(x, num, k, gen):
    b, m, d = x.shape
    dist = torch.cdist(x.float(), x.float()) / d**0.5
    dens = (-(torch.topk(dist, k, dim=-1, largest=False).values ** 2).mean(dim=-1)).exp()
    dens = dens + torch.rand(dens.shape, generator=gen, dtype=dens.dtype) * 1e-6
    mask = (dens[:, None, :] > dens[:, :, None]).float()
    dmax = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = (dist * mask + dmax * (1 - mask)).min(dim=-1).values
    return torch.sort((delta * dens).topk(num, dim=-1).indices, dim=-1)[0], dist


def cluster_merge(feat, centres, dist, beta):
    out = []
    for bi in range(feat.shape[0]):
        others = [i for i in range(feat.shape[1]) if i not in centres[bi].tolist()]
        to_c = dist[bi][others][:, centres[bi]]
        near = to_c.argmin(dim=-1)
        row = []
        for ci in range(centres.shape[1]):
            members = feat[bi][others][near == ci]
            own = feat[bi][centres[bi][ci]].double()
            row.append(beta * own + (1 - beta) * members.double().mean(dim=0) if len(members) else own)
        out.append(torch.stack(row))
    return torch.stack(out)


def holitom(x, attn, r, gen, tau=0.8, beta=0.6, D=0.0, K=7):
    """-> (tokens [k, D] float64, slots [k] flat indices), in the official LLaVA-OV sequence order."""
    f, n, d = x.shape
    xn = F.normalize(x, p=2, dim=-1)
    sim = F.cosine_similarity(xn[:-1], xn[1:], dim=-1)
    wins, saved = windows(sim, f, tau)
    r2 = min(r / ((f * n - saved) / (f * n)), 1)
    tokens, slots = [], []
    for a, b in wins:
        mask = torch.all(sim[a:b] > tau, dim=0) if b > a else torch.zeros(n, dtype=torch.bool)
        dyn, dyn_attn = x[a : b + 1][:, ~mask], attn[a : b + 1][:, ~mask]
        dyn_pos = torch.arange(n)[~mask]
        nd = dyn.shape[1]
        keep = math.ceil(nd * r2)
        dom = round(keep * (1 - D))
        ctx = keep - dom
        frame_tok, frame_slot = [[] for _ in range(b - a + 1)], [[] for _ in range(b - a + 1)]
        if nd and dom > 0:
            # topk by attention, then a scatter mask: the kept ones come out in position order (ties: lower index)
            idx = torch.stack([torch.tensor(sorted(sorted(range(nd), key=lambda i, t=t: (-float(dyn_attn[t, i]), i))[:dom]))
                               for t in range(b - a + 1)])  # fmt: skip
            for t in range(b - a + 1):
                frame_tok[t].append(dyn[t, idx[t]].double())
                frame_slot[t].append((a + t) * n + dyn_pos[idx[t]])
        if nd and ctx > 0:
            chosen = [set(idx[t].tolist()) if dom > 0 else set() for t in range(b - a + 1)]
            rest = torch.stack([torch.tensor([i for i in range(nd) if i not in chosen[t]]) for t in range(b - a + 1)])
            xr = torch.stack([dyn[t, rest[t]] for t in range(b - a + 1)])
            centres, dist = dpc(xr, ctx, min(K, ctx), gen)
            merged = cluster_merge(xr, centres, dist, beta)
            for t in range(b - a + 1):
                frame_tok[t].append(merged[t])
                frame_slot[t].append((a + t) * n + dyn_pos[rest[t][centres[t]]])
        stat_pos = torch.arange(n)[mask]
        c = round(len(stat_pos) * r2)
        if b > a and len(stat_pos) and c > 0:
            mean = x[a : b + 1][:, mask].mean(dim=0).unsqueeze(0)
            centres, dist = dpc(mean, c, min(K, c), gen)
            tokens.append(cluster_merge(mean, centres, dist, beta)[0])
            slots.append(a * n + stat_pos[centres[0]])
        for t in range(b - a + 1):
            tokens += frame_tok[t]
            slots += frame_slot[t]
    if not tokens:
        return torch.zeros(0, d, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    return torch.cat(tokens), torch.cat(slots)


def kept_count(x, r):
    """Tokens kept (the contract suite's rule): the reference's count, ``F*n`` at ``r = 1`` and at least one."""
    f, n = x.shape[:2]
    if r >= 1.0:
        return f * n
    flat = torch.arange(f * n, dtype=torch.float32).view(f, n)  # counts do not depend on the attention values
    return max(1, holitom(x, flat, r, torch.Generator().manual_seed(0))[1].numel())
