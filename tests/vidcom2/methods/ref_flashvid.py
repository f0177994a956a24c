"""Independent FlashVID reference (the vision-side part, and the in-LLM ``fastv_prune`` selection: ``llm_keep``),
written from the operations of the official code (Fanziyang-v/FlashVID 1d37422, ``flashvid/utils.py`` and
``flashvid/token_selection.py``): the gather-based max-min loop with its index tensor, ``F.pad``-ed similarity maps and the in-place backward loop of
``spatiotemporal_compression``, ``dpc_knn`` with ``scatter_`` and the final ``argsort`` by global index. No code from
vidcom2/. Where the project documents a difference it is followed: a one-frame segment clusters only its non-selected
tokens, a v2 pick is never repeated, complementary cuts never repeat a cut, and the budget is capped at ``n``.
Returns ``(global indices ascending, tokens)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def segment(means, thr, min_num):
    unit = means / means.norm(p=2, dim=-1, keepdim=True)
    sims = torch.sum(unit[:-1] * unit[1:], dim=-1)
    cuts = torch.where(sims < thr)[0]
    f = means.shape[0]
    if cuts.numel() + 1 < min_num:
        rem = min(min_num - cuts.numel() - 1, f - 1 - cuts.numel())
        sims = sims.clone()
        sims[sims < thr] = 1.0
        order = sorted(range(f - 1), key=lambda i: (float(sims[i]), i))
        extra = [i for i in order if i not in cuts.tolist()][:rem]
        cuts = torch.cat([cuts, torch.tensor(extra, dtype=torch.long)]).sort().values
    padded = F.pad(cuts, (1, 1), value=0)
    padded[0], padded[-1] = -1, f - 1
    return torch.diff(padded).tolist()


def select(feats, attn, k, v2):
    x = feats.float()
    unit = x / x.norm(p=2, dim=-1, keepdim=True)
    dist = 1.0 - torch.bmm(unit, unit.transpose(-1, -2))
    dist = dist * (attn.float() * 1e6).unsqueeze(1)
    if v2:
        dist = dist * torch.einsum("b n d, c d -> b c n", x, x.mean(1)).mean(1).unsqueeze(1)
    b, n = attn.shape
    idx = torch.zeros(b, k, dtype=torch.long)
    idx[:, 0] = torch.argmax(torch.topk(dist, k=min(2, n), dim=1, largest=False).values[:, -1, :], dim=-1)  # n=1: self
    for i in range(1, k):
        sub = torch.gather(dist, 1, idx[:, :i].unsqueeze(-1).expand(-1, -1, n))
        md = torch.min(sub, dim=1).values
        md.scatter_(1, idx[:, :i], float("-inf"))
        idx[:, i] = torch.argmax(md, dim=-1)
    return idx.sort().values


def stc(feats, thr, token_mask, lower):
    w, n, d = feats.shape
    feats = feats.clone()
    unit = feats / feats.norm(p=2, dim=-1, keepdim=True)
    cs = torch.einsum("b n d, b m d -> b n m", unit[1:], unit[:-1])
    cs[~token_mask[1:].unsqueeze(-1).expand(-1, -1, n)] = -1.0
    cs[~token_mask[:-1].unsqueeze(1).expand(-1, n, -1)] = -1.0
    ms, mi = torch.max(cs, dim=-1)
    ms, mi = F.pad(ms, (0, 0, 1, 0), value=-1), F.pad(mi, (0, 0, 1, 0), value=-1)
    counts = torch.ones(w, n).to(feats)
    mask = ms > thr
    if (~mask).int().sum() < lower and w * n > lower:
        soft = ms.view(-1).topk(k=w * n - lower).values[-1]
        mask = ms > max(soft, -1.0 + 1e-6)
    for t in range(w - 1, -1, -1):
        fr, fc = feats[t], counts[t]
        free = ~mask[t]
        if fr[free].numel() > 0:
            feats[t][free] = fr[free] / fc[free].unsqueeze(-1).to(fr.dtype)
            counts[t][free] = 1
        if fr[mask[t]].numel() > 0:
            oh = F.one_hot(mi[t][mask[t]], num_classes=n).to(feats.dtype)
            feats[t - 1] += torch.einsum("m n, m d -> n d", oh, fr[mask[t]])
            counts[t - 1] += oh.sum(dim=0)
            counts[t][mask[t]] = 0
    keep = ~mask & token_mask
    return [feats[t][keep[t]] for t in range(w)], [torch.where(keep[t])[0] for t in range(w)]


def dpc_means(tokens, num, gen):
    x = tokens.unsqueeze(0)
    b, m, d = x.shape
    dists = torch.cdist(x.float(), x.float()) / math.sqrt(d)
    dens = torch.mean(-(torch.topk(dists, k=min(num, 7), dim=-1, largest=False).values ** 2), dim=-1).exp()
    dens = dens + torch.rand(dens.shape, generator=gen, dtype=dens.dtype) * 1e-6
    delta = torch.min(torch.where(dens[:, None, :] > dens[:, :, None], dists, dists.view(b, -1).max(-1)[0].view(-1, 1, 1)), dim=-1)[0]
    centres = torch.topk(delta * dens, k=num, dim=-1).indices
    ci = torch.argmin(torch.gather(dists, -1, centres.unsqueeze(1).expand(-1, m, -1)), dim=-1)
    ci.scatter_(-1, centres, torch.arange(num).unsqueeze(0))
    oh = F.one_hot(ci[0], num_classes=num).to(tokens.dtype)
    return centres[0], torch.einsum("n c, n d -> c d", oh, tokens) / oh.sum(dim=0).unsqueeze(-1)


def flashvid(x, attn, r, gen, alpha=0.7, tthr=0.8, sthr=0.9, min_seg=8, v2=True, expansion=1.25):
    f, n, d = x.shape
    budget = min(n, math.ceil(n * r * expansion))
    na = math.ceil(budget * alpha)
    ns = budget - na
    gidx = torch.arange(f * n).view(f, n)
    toks, idxs, off = [], [], 0
    for s in segment(x.mean(1), sthr, min_seg):
        seg, sg = x[off : off + s], gidx[off : off + s]
        sel = select(seg, attn[off : off + s], na, v2)
        toks.append(torch.gather(seg, 1, sel.unsqueeze(-1).expand(-1, -1, d)).reshape(-1, d))
        idxs.append(sg.gather(1, sel).reshape(-1))
        mask = torch.ones(s, n, dtype=torch.bool)
        mask.scatter_(1, sel, False)
        if ns > 0 and tthr < 1.0:
            if s > 1:
                tl, il = stc(seg, tthr, mask, budget * s)
            else:
                tl, il = [seg[0][mask[0]]], [torch.where(mask[0])[0]]
            ratio = ns * s / max(sum(len(t) for t in tl), 1)
            for t, (tk, ik) in enumerate(zip(tl, il)):
                c = math.ceil(len(tk) * ratio)
                if c > 0 and ratio < 1.0:
                    centres, means = dpc_means(tk, c, gen)
                    toks.append(means)
                    idxs.append(sg[t][ik][centres])
                else:
                    toks.append(tk)
                    idxs.append(sg[t][ik])
        off += s
    tokens, index = torch.cat(toks), torch.cat(idxs)
    order = index.argsort()
    return index[order], tokens[order]


def kept_count(x, attn, r):
    """The contract suite's rule: the reference's count (it depends on the attention through the ADTS picks)."""
    f, n = x.shape[:2]
    if r >= 1.0:
        return f * n
    return flashvid(x, attn, r, torch.Generator().manual_seed(0))[0].numel()


def llm_keep(attentions, visual_cols, ratio=0.3):
    """``fastv_prune`` (``flashvid/utils.py``) on one layer's attention weights ``attentions [1, H, q, kv]`` (the
    layer before ``pruning_layer``): the last query's row, mean over heads, at the visual columns ``visual_cols [n]``
    (prompt order), ``torch.topk`` of ``math.ceil(n * ratio)``, sorted; returns the kept prompt columns."""
    attn = torch.mean(attentions[:, :, -1, :], dim=1)[0, visual_cols]
    k = math.ceil(visual_cols.numel() * ratio)
    top = torch.topk(attn.unsqueeze(0), k=k, dim=-1).indices.sort().values[0]
    return visual_cols[top]
