"""Independent FastVID reference, written from the operations of the official code (LunarShen/FastVID a40a109,
``fastvid_llavaonevision/.../modeling_qwen2.py``, the FastVID block; ``siglip_encoder.py`` for the head): the
official batched layout (one topk over all frames, a scatter mask of the salient tokens, one cdist per frame batch,
one-hot assignment matrices and ``bmm``), in the input dtype, no code from vidcom2/. Where the official code is
undefined the project's documented rule is used (retain floored at 1, anchor counts capped at the frame's tokens).

The density noise is one ``torch.rand((F, m), generator)`` float32 draw, the official shape.
"""

from __future__ import annotations

import math

import torch


def map_head_reference(hidden, head):
    """The MAP head by hand: probe attention (in_proj split into q/k/v, per-head softmax, mean over heads), out_proj,
    then ``x + mlp(layernorm(x))``. ``hidden [F, P, D]`` post-layernorm -> (global [F, D], attention [F, P])."""
    att = head.attention
    f, p, d = hidden.shape
    h = att.num_heads
    hd = d // h
    wq, wk, wv = att.in_proj_weight.chunk(3)
    bq, bk, bv = att.in_proj_bias.chunk(3)
    q = (head.probe.reshape(1, d) @ wq.T + bq).reshape(1, h, hd)  # one probe, shared by all frames
    k = (hidden @ wk.T + bk).reshape(f, p, h, hd)
    v = (hidden @ wv.T + bv).reshape(f, p, h, hd)
    logits = torch.einsum("qhe,fphe->fhp", q, k) / math.sqrt(hd)
    probs = torch.softmax(logits, dim=-1)  # [F, H, P]
    ctx = torch.einsum("fhp,fphe->fhe", probs, v).reshape(f, d)
    out = ctx @ att.out_proj.weight.T + att.out_proj.bias
    ln = torch.nn.functional.layer_norm(out, (d,), head.layernorm.weight, head.layernorm.bias, head.layernorm.eps)
    mlp = head.mlp.fc2(head.mlp.activation_fn(head.mlp.fc1(ln)))
    return out + mlp, probs.mean(dim=1)


def segments(glob, c, tau):
    f = glob.shape[0]
    g = glob / glob.norm(dim=1, keepdim=True)
    sim = (g[:-1] * g[1:]).sum(dim=1)
    k = min(c - 1, f - 1)
    cut_top = torch.topk(sim, k, largest=False).indices
    cut_cos = torch.nonzero(sim < tau, as_tuple=False).squeeze(1)
    cuts = torch.unique(torch.cat([cut_top, cut_cos])).sort().values
    padded = torch.nn.functional.pad(cuts, (1, 1), value=-1)
    padded[-1] = f - 1
    return padded.diff().tolist()


def fastvid(x, attn, glob, r, generator, c=8, tau=0.9, d=0.4, p=4, beta=0.6):
    """-> (keep [F, n] bool, features [F, n, D] with merged anchors written in place)."""
    f, n, dim = x.shape
    if r >= 1.0:
        return torch.ones(f, n, dtype=torch.bool), x.clone()
    sizes = segments(glob, c, tau)
    retain = max(1, int(n * r))
    salient = retain - int(retain * d)
    context = retain - salient
    ctx = torch.zeros(f, dtype=torch.long)
    off = 0
    for s in sizes:
        per = (context * s) // ((s + p - 1) // p)
        back = torch.arange(s - 1, -1, -1)
        ctx[off : off + s][back % p == 0] = per
        off += s
    keep = torch.zeros(f, n, dtype=torch.bool)
    out = x.clone()
    sal = torch.topk(attn, salient, dim=1).indices
    keep.scatter_(1, sal, True)
    if context == 0:
        return keep, out
    mask = torch.ones(f, n, dtype=torch.bool)
    mask.scatter_(1, sal, False)
    m = n - salient
    pos = torch.arange(n).expand(f, n)[mask].view(f, m)
    tok = x[torch.arange(f).unsqueeze(1), pos]  # [F, m, D]
    dist = torch.cdist(tok.float(), tok.float()) / dim**0.5
    near = torch.topk(dist, k=min(4, m), dim=-1, largest=False).values
    dens = (-(near**2).mean(dim=-1)).exp()
    dens = dens + torch.rand(dens.shape, generator=generator, dtype=dens.dtype) * 1e-6
    dm = (dens[:, None, :] > dens[:, :, None]).to(tok.dtype)
    dmax = dist.flatten(1).max(dim=-1)[0][:, None, None]
    score = (dist * dm + dmax * (1 - dm)).min(dim=-1)[0] * dens

    def dtm(anchors, members):  # anchors [B, a, D], members [B, M, D]
        um = members / members.norm(dim=-1, keepdim=True)
        ua = anchors / anchors.norm(dim=-1, keepdim=True)
        onehot = torch.zeros(members.shape[0], members.shape[1], anchors.shape[1], dtype=members.dtype)
        onehot.scatter_(2, torch.bmm(um, ua.transpose(1, 2)).argmax(dim=2).unsqueeze(-1), 1)
        w = (1 / (onehot.sum(dim=1).unsqueeze(-1) + 1)).clamp(min=beta)
        agg = torch.bmm(onehot.transpose(1, 2), members) / onehot.sum(dim=1).clamp(min=1).unsqueeze(-1)
        return w * anchors + (1 - w) * agg

    single = (ctx == context).nonzero().squeeze(1)
    if single.numel():
        idx = torch.topk(score[single], context, dim=-1).indices
        anchors = tok[single.unsqueeze(1), idx]
        merged = dtm(anchors, tok[single])
        where = pos[single.unsqueeze(1), idx]
        out[single.unsqueeze(1), where] = merged
        keep[single.unsqueeze(1), where] = True
    off = 0
    for s in sizes:
        frames = torch.arange(off, off + s)
        target = frames[ctx[off : off + s] > context]
        if s > 1 and target.numel():
            k = min(int(ctx[target[0]]), m)
            idx = torch.topk(score[target], k, dim=-1).indices
            anchors = tok[target.unsqueeze(1), idx]
            members = tok[off : off + s].reshape(1, -1, dim).expand(target.numel(), -1, -1)
            merged = dtm(anchors, members)
            where = pos[target.unsqueeze(1), idx]
            out[target.unsqueeze(1), where] = merged
            keep[target.unsqueeze(1), where] = True
        off += s
    return keep, out


def kept_count(x, attn, r, c=8, tau=0.9, d=0.4, p=4):
    """Total kept tokens (the contract suite's rule; the global feature is the frame's mean token, what the contract
    passes as ``global_features`` and the fallback signal uses)."""
    f, n = x.shape[:2]
    if r >= 1.0:
        return f * n
    sizes = segments(x.mean(dim=1), c, tau)
    retain = max(1, int(n * r))
    context = int(retain * d)
    m = n - (retain - context)
    total = f * (retain - context)
    for s in sizes:
        per = (context * s) // ((s + p - 1) // p)
        total += ((s + p - 1) // p) * min(per, m)
    return total
