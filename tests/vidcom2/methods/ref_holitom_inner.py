"""Independent reference of HoliTom's inner merge, written from the official loop (github.com/cokeshao/HoliTom
e9b2972, ``holitom/modeling_qwen2.py:158-181``): top-k of the last token's attention row over the image span (in
top-k order: highest first), the similarity matrix of the other tokens to the kept ones from one bmm and the norms,
``torch.max`` over the kept ones, then a Python loop over the other tokens in sequence order doing
``h[best] = (h[best] + h[token]) / 2`` in place, in the hidden dtype."""

from __future__ import annotations

import torch


def inner_merge(hidden, visual, row, ratio=0.5):
    """hidden ``[n, D]`` (the states entering layer k), visual: list of the candidate indices (ascending), row
    ``[n]`` the attention row of layer k-1. Returns ``(kept indices set, merged hidden [n, D])``; the kept count is
    ``round(len(visual) * (1 - ratio))`` (at least 1), ties in the row broken towards the lower index."""
    n_keep = max(1, round(len(visual) * (1 - ratio)))
    scores = [(-float(row[i]), j, i) for j, i in enumerate(visual)]
    top = [i for _, _, i in sorted(scores)[:n_keep]]  # highest attention first, as topk(sorted=True)
    others = [i for i in visual if i not in set(top)]
    h = hidden.clone().unsqueeze(0)  # [1, n, D], the official batch dimension
    if others:
        non = h[:, others, :]
        kept = h[:, top, :]
        sim = torch.bmm(non, kept.transpose(1, 2)) / (
            torch.norm(non, dim=-1, keepdim=True) * torch.norm(kept, dim=-1, keepdim=True).transpose(1, 2)
        )
        _, best = torch.max(sim, dim=-1)
        for i, token in enumerate(others):
            target = top[int(best[0, i])]
            h[0, target, :] = (h[0, target, :] + h[0, token, :]) / 2
    return set(top), h[0]
