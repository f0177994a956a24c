"""``fastvid_vc2`` — the FastVID port shipped in the VidCom2 repository (a named approximation of FastVID).

Paper of the original method: Shen et al., *FastVID: Dynamic Density Pruning for Fast Video Large Language Models*,
NeurIPS 2025, arXiv 2503.11187 (official code github.com/LunarShen/FastVID). The port:
github.com/xuyang-liu16/VidCom2, branch ``qwen``, ``token_compressor/fastvid/{core.py,fastvid_algo.py}``, called per
video from ``models/qwen3_vl.py`` (spec: baselines.md 10). Never report it as ``fastvid``.

The port, on one video ``[F, n, D]`` (F temporal patches; ``r`` = env ``fastvid_retention_ratio``, default
``R_RATIO``); ``r >= 1`` keeps everything:

1. **DySeg.** ``g_t`` = L2-normalised mean token of frame t; ``c_t = <g_t, g_{t+1}>``; cut after the ``c - 1``
   smallest ``c_t`` and after every ``c_t < tau``.
2. **Budgets** (``int`` truncation): ``frame = max(1, min(n, int(n*r)))``; a segment of ``s`` frames retains
   ``R = frame*s``, of which ``C = max(1, int(R*d))`` contextual (0 if ``R == 1``) and ``R - C`` salient. A one-frame
   segment gives both to its frame. Otherwise the segment is split again after every ``c_t < ignore`` ("inner
   segments" of near-identical frames): only the **last frame of each inner segment** gets tokens; salient tokens
   are shared evenly over the inner segments (first ones +1), contextual ones evenly over ``ceil(V/p)`` anchor
   inner segments, every p-th counted from the segment's end; per frame ``context <= n // 2`` and
   ``salient <= n - context`` (the excess is lost, so realised retention can fall below ``r``).
3. **STPrune.** Salient = the top tokens by the **L2 norm of the feature** (the port's stand-in for the encoder's
   attention). Contextual anchors = DPC-kNN centres (4 neighbours, self included, density noise 1e-6) of the
   frame's non-salient tokens.
4. **DTM.** For each anchor frame, every token of the segment that is neither salient nor one of *this frame's*
   anchors (other frames' anchors included) joins the most cosine-similar anchor; anchor := ``w*anchor +
   (1-w)*mean(members)``, ``w = max(1/(count+1), beta)``.
5. If a segment would keep nothing, it keeps its ``R`` highest-norm tokens instead. Kept tokens keep their own
   positions, in position order.

Computation: norms, similarities and distances in float32 (float64 for float64 input), the frame means in the input
dtype, as the port; merges accumulated in at least float32 then cast (the port merges in the input dtype). Density
noise from ``generator`` (CPU stream, the port's call order and shapes; the port uses the global RNG). Ties (equal
norms or frame similarities) go to the lower index; the port's ``topk`` leaves them to the backend. With float32
input the result equals the port's on CPU under the same seed exactly (checked against the port code itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import keep_highest
from vidcom2.methods.holitom_vc2 import dpc_knn
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection

DENSITY_K = 4  # neighbours (self included) of the DPC density, hard-coded in the port


def sizes_from_cuts(num_frames: int, cuts: list[int]) -> list[int]:
    """Segment lengths when cutting after each frame index in ``cuts`` (out-of-range cuts ignored)."""
    bounds = sorted({c for c in cuts if 0 <= c < num_frames - 1})
    edges = [-1, *bounds, num_frames - 1]
    return [b - a for a, b in zip(edges, edges[1:]) if b > a]


def inner_budgets(sizes, n, salient, context, p, d) -> tuple[list[int], list[int]]:
    """Per-frame ``(salient, context)`` counts of a multi-frame segment split into inner segments of ``sizes``."""
    v = len(sizes)
    sal = [salient // v + (i < salient % v) for i in range(v)]
    anchors = (v + p - 1) // p
    per_anchor = [context // anchors + (i < context % anchors) for i in range(anchors)]
    ctx = [min(per_anchor[i // p], n // 2) if i % p == 0 else 0 for i in range(v)][::-1]
    frame_sal, frame_ctx = [], []
    for i, size in enumerate(sizes):
        frame_sal += [0] * (size - 1) + [min(sal[i], n - ctx[i])]
        frame_ctx += [0] * (size - 1) + [ctx[i]]
    return frame_sal, frame_ctx


@register
@dataclass(frozen=True)
class FastVIDVC2:
    """dyseg_c / dyseg_tau / dyseg_ignore / stprune_d / dtm_p / dtm_beta: the port's env variables
    ``fastvid_DySeg_c``, ``fastvid_DySeg_tau``, ``fastvid_DySeg_ignore``, ``fastvid_STPrune_d``, ``fastvid_DTM_p``,
    ``fastvid_DTM_beta`` with its defaults (the official Qwen2.5-VL script uses tau 0.84, ignore 0.95, d 0.4, beta 0.6)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="fastvid_vc2",
        stage="pre_llm",
        paper="FastVID (NeurIPS 2025, arXiv 2503.11187)",
        code="github.com/xuyang-liu16/VidCom2 (branch qwen) token_compressor/fastvid/",
        approximation="VidCom2 repository's FastVID port: the encoder's frame attention replaced by the feature L2 "
        "norm and the global feature by the mean token, with d=0.5, beta=0.5 and only the last frame of each "
        "near-duplicate run kept",
        stochastic=True,
    )
    dyseg_c: int = 8
    dyseg_tau: float = 0.84
    dyseg_ignore: float = 0.99
    stprune_d: float = 0.5
    dtm_p: int = 4
    dtm_beta: float = 0.5

    def _check(self) -> None:
        for name in ("stprune_d", "dtm_beta"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"fastvid_vc2: {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("dyseg_c", "dtm_p"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"fastvid_vc2: {name} must be >= 1, got {getattr(self, name)}")

    def budgets(self, sim: torch.Tensor, n: int, r: float) -> tuple[list[int], list[int], list[int]]:
        """From adjacent-frame similarities ``sim [F-1]``: segment sizes and per-frame (salient, context) counts.

        Thresholds are compared in ``sim``'s dtype, as the port (float32 against a Python float)."""
        f = sim.shape[0] + 1
        vals, below_tau, below_ignore = (
            sim.tolist(),
            (sim < self.dyseg_tau).tolist(),
            (sim < self.dyseg_ignore).tolist(),
        )
        k = min(int(self.dyseg_c) - 1, f - 1)
        lowest = sorted(range(f - 1), key=lambda i: (vals[i], i))[:k]
        sizes = sizes_from_cuts(f, lowest + [i for i in range(f - 1) if below_tau[i]])
        per_frame = max(1, min(n, int(n * r)))
        sal, ctx, start = [], [], 0
        for s in sizes:
            retain = max(1, min(s * n, per_frame * s))
            c = min(max(1, int(retain * self.stprune_d)) if retain > 1 else 0, retain)
            if s == 1:
                fs, fc = [retain - c], [c]
            else:
                inner = sizes_from_cuts(s, [i for i in range(s - 1) if below_ignore[start + i]])
                fs, fc = inner_budgets(inner, n, retain - c, c, int(self.dtm_p), self.stprune_d)
            for a, b in zip(fs, fc):
                a = min(max(0, a), n)
                sal.append(a)
                ctx.append(min(max(0, b), n - a))
            start += s
        return sizes, sal, ctx

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        self._check()
        x = features
        f, n, d = x.shape
        if retention_ratio >= 1.0:
            return Selection(
                keep=torch.ones((f, n), dtype=torch.bool, device=x.device), stats={"retention_realised": 1.0}
            )
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        acc = torch.promote_types(x.dtype, torch.float32)
        norms = x.to(acc).norm(dim=-1)
        glob = F.normalize(x.mean(dim=1).to(acc), dim=-1)
        sim = (glob[:-1] * glob[1:]).sum(dim=1)
        sizes, sal, ctx = self.budgets(sim, n, float(retention_ratio))
        keep = keep_highest(norms, torch.tensor(sal, dtype=torch.long))
        out = x.clone()
        start = 0
        for s in sizes:
            anchors = self._anchors(x, keep, ctx, start, s, g)
            if not anchors and not keep[start : start + s].any():  # nothing kept: the port's fallback
                retain = max(1, min(s * n, max(1, min(n, int(n * retention_ratio))) * s))
                top = keep_highest(norms[start : start + s].reshape(1, -1), torch.tensor([retain]))
                keep[start : start + s] = top.view(s, n)
            elif anchors:
                self._merge(x, out, keep, anchors, start, s, acc)
            start += s
        stats = {
            "budget_mode": "port",
            "segments": len(sizes),
            "retention_realised": float(keep.sum()) / (f * n),
        }
        return Selection(keep=keep, features=out, stats=stats)

    def _anchors(self, x, keep, ctx, start, s, g) -> list[torch.Tensor]:
        """DPC-kNN anchors (positions in the frame, ascending) of each frame of a segment that gets context; marks
        them kept. Returns ``[(frame, positions)]`` in frame order (the port's noise order)."""
        found = []
        for t in range(start, start + s):
            rest = (~keep[t]).nonzero().squeeze(1)
            if ctx[t] > 0 and rest.numel() > 0:
                m = rest.numel()
                centres, _ = dpc_knn(x[t, rest].unsqueeze(0), min(ctx[t], m), max(1, min(DENSITY_K, m)), g)
                found.append((t, rest[centres[0]]))
        for t, pos in found:
            keep[t, pos] = True
        return found

    def _merge(self, x, out, keep, anchors, start, s, acc) -> None:
        """DTM: merge the segment's non-salient tokens into each anchor frame's anchors (written into ``out``)."""
        n, d = x.shape[1], x.shape[2]
        flat = x[start : start + s].reshape(s * n, d).to(acc)
        unit = F.normalize(flat, dim=-1)
        salient = keep[start : start + s].reshape(-1).clone()
        for t, pos in anchors:
            salient[(t - start) * n + pos] = False  # anchors were marked kept; they are not salient
        for t, pos in anchors:
            own = (t - start) * n + pos
            member = ~salient
            member[own] = False
            idx = member.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            assign = (unit[idx] @ unit[own].T).argmax(dim=1)
            cnt = torch.zeros(own.numel(), dtype=acc, device=x.device).scatter_add_(
                0, assign, torch.ones_like(assign, dtype=acc)
            )
            sums = torch.zeros((own.numel(), d), dtype=acc, device=x.device).index_add_(0, assign, flat[idx])
            w = (1 / (cnt + 1)).clamp(min=self.dtm_beta).unsqueeze(1)
            merged = w * flat[own] + (1 - w) * sums / cnt.clamp(min=1).unsqueeze(1)
            out[t, pos] = merged.to(x.dtype)
