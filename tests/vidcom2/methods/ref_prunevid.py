"""Independent PruneVid reference (the pre-LLM part; the LLM stage's ``attention_wo_pos`` and ``process_attention``), written from the operations of the official code (Visual-AI/PruneVid
b12600c, ``models/pllava/modeling_pllava.py``): ``cluster_dpc_knn`` with a batch dimension and ``index_points``,
``refine_clusters`` as its three steps (runs per cluster, keep the longest, re-label from the neighbours),
``segment_lengths`` from change points, ``merge_frames_dynamic``'s einsum similarity and masked_select, and
``compute_cluster_vectors``'s one-hot bmm. No code from vidcom2/. Floors as the project documents (k <= F, at least
one cluster). Returns the emitted tokens and their slots in the official sequence order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpc(x, num, k, gen):
    b, m, c = x.shape
    dist = torch.cdist(x.float(), x.float()) / c**0.5
    dens = (-(torch.topk(dist, k=k, dim=-1, largest=False)[0] ** 2).mean(dim=-1)).exp()
    dens = dens + torch.rand(dens.shape, generator=gen, dtype=dens.dtype) * 1e-6
    mask = (dens[:, None, :] > dens[:, :, None]).type(x.dtype)
    dmax = dist.flatten(1).max(dim=-1)[0][:, None, None]
    delta = (dist * mask + dmax * (1 - mask)).min(dim=-1)[0]
    down = torch.topk(delta * dens, k=num, dim=-1)[1]
    to_centre = dist[torch.arange(b)[:, None], down]  # index_points: [B, num, m]
    idx = to_centre.argmin(dim=1)
    idx[torch.arange(b)[:, None].expand(b, num).reshape(-1), down.reshape(-1)] = torch.arange(num).repeat(b)
    return idx, down


def refine(idx):
    n = len(idx)
    out = idx.clone()
    for lab in torch.unique(idx):
        where = (idx == lab).nonzero(as_tuple=True)[0].tolist()
        segs, s, p = [], where[0], where[0]
        for i in where[1:]:
            if i == p + 1:
                p = i
            else:
                segs.append((s, p))
                s = p = i
        segs.append((s, p))
        longest = max(e - s + 1 for s, e in segs)
        for s, e in segs:
            if longest == 1 or e - s + 1 < longest:
                out[s : e + 1] = -1
    i = 0
    while i < n:
        if out[i] != -1:
            i += 1
            continue
        s = i
        while i < n and out[i] == -1:
            i += 1
        e = i - 1
        ll = rl = 0
        lc = rc = None
        if s > 0:
            lc = int(out[s - 1])
            j = s - 1
            while j >= 0 and out[j] == lc:
                j -= 1
            ll = s - j - 1
        if e < n - 1:
            rc = int(out[e + 1])
            j = e + 1
            while j < n and out[j] == rc:
                j += 1
            rl = j - e - 1
        new = lc if ll > rl else (rc if rl > ll else (lc if lc is not None else rc))
        out[s : e + 1] = 0 if new is None else new
    return out


def merge_group(feat, slots, ratio, gen):
    """``feat [1, S, C]``; groups of more than 14 become int(S*ratio) cluster means (centres' slots, score order)."""
    s = feat.shape[1]
    if s <= 14:
        return feat[0], slots
    num = min(s, max(1, int(s * ratio)))
    idx, down = dpc(feat, num, min(7, s), gen)
    onehot = F.one_hot(idx, num_classes=num).to(feat.dtype)
    sums = torch.bmm(onehot.permute(0, 2, 1), feat)
    return (sums / onehot.sum(dim=1).unsqueeze(-1))[0], slots[down[0]]


def prunevid(x, r, gen, tau=0.8, seg_ratio=0.25, ratio=None, sizes=None):
    """``sizes``: a list that receives ``(static_size, dynamic_size, window_size)`` per window (the official
    ``merge_frames_dynamic`` outputs the LLM stage reads)."""
    f, n, c = x.shape
    ratio = r if ratio is None else ratio
    idx, _ = dpc(x.mean(dim=1).unsqueeze(0), max(1, int(f * seg_ratio)), min(7, f), gen)
    lab = refine(idx[0])
    change = torch.where(lab[1:] != lab[:-1])[0] + 1
    bounds = torch.cat([torch.tensor([0]), change, torch.tensor([f])])
    tokens, slots, start = [], [], 0
    for w in (bounds[1:] - bounds[:-1]).tolist():
        cur = x[start : start + w].unsqueeze(0)  # B W L C
        unit = F.normalize(cur, p=2, dim=-1)
        sim = torch.einsum("bwlc,btlc->bwtl", unit, unit)
        sim = (sim.sum(dim=-2) - 1).sum(dim=-2) / (w * (w - 1)) if w > 1 else torch.full((1, n), float("nan"))
        mask = (sim > tau)[0]
        stat = torch.masked_select(cur, mask.view(1, 1, n, 1).expand(1, w, n, c)).view(1, w, -1, c).mean(dim=1)
        t, s = merge_group(stat, start * n + torch.arange(n)[mask], ratio, gen)
        tokens.append(t)
        slots.append(s)
        dyn = torch.masked_select(cur, ~mask.view(1, 1, n, 1).expand(1, w, n, c)).view(1, w, -1, c)
        static_size, dynamic_size = t.shape[0], 0
        for i in range(w):
            t, s = merge_group(dyn[:, i], (start + i) * n + torch.arange(n)[~mask], ratio, gen)
            tokens.append(t)
            slots.append(s)
            dynamic_size += t.shape[0]
        if sizes is not None:
            sizes.append((static_size, dynamic_size, w))
        start += w
    return torch.cat(tokens), torch.cat(slots)


def kept_count(x, r):
    """The contract suite's rule: the reference's count, ``F*n`` at ``r = 1``."""
    if r >= 1.0:
        return x.shape[0] * x.shape[1]
    return prunevid(x, r, torch.Generator().manual_seed(0))[1].numel()


def attention_wo_pos(layer, hidden):
    """``attn_weights_wo_pos`` of ``LlamaAttention.forward`` (``models/pllava/llama.py``) for the layer's input
    ``hidden [1, L, D]``: ``softmax(q k^T / sqrt(head_dim))`` before RoPE and without a mask, ``[1, H, L, L]``
    (kv heads repeated as ``repeat_kv``; Qwen3's ``q_norm`` / ``k_norm`` before it, as its attention does)."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    b, length, _ = x.shape
    d = attn.head_dim
    q = attn.q_proj(x).view(b, length, -1, d)
    k = attn.k_proj(x).view(b, length, -1, d)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    w = torch.matmul(q.float(), k.float().transpose(2, 3)) / d**0.5
    return F.softmax(w, dim=-1, dtype=torch.float32)


def process_attention(text_to_image, static_sizes, dynamic_sizes, window_sizes, alpha=0.4):
    """``VTPWindowCache.process_attention`` (``models/pllava/elastic_cache.py``): ``text_to_image [1, H, q, img]``;
    max over heads, then over queries; per window the static tokens' top ``int(size * alpha)`` and each frame's
    dynamic tokens' top ``int(per_frame * alpha)``. Returns indices into the image span."""
    att = text_to_image[0].max(dim=0)[0].max(dim=0)[0]
    start, out = 0, []
    for static_size, dynamic_size, window_size in zip(static_sizes, dynamic_sizes, window_sizes):
        end = start + static_size + dynamic_size
        window = att[start:end]
        out.append(torch.topk(window[:static_size], k=int(static_size * alpha), dim=-1)[1] + start)
        dyn = window[static_size:].view(window_size, -1)
        top = torch.topk(dyn, k=int(dyn.shape[-1] * alpha), dim=-1)[1] + start + static_size
        out += [top[i] + dyn.shape[-1] * i for i in range(window_size)]
        start = end
    return torch.cat(out)
