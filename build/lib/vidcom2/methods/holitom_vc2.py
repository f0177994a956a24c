"""``holitom_vc2`` — the HoliTom port shipped in the VidCom2 repository (a named approximation of HoliTom).

Paper of the original method: Shao et al., *HoliTom: Holistic Token Merging for Fast Video Large Language Models*,
NeurIPS 2025, arXiv 2505.21334 (official code github.com/cokeshao/HoliTom). The port: github.com/xuyang-liu16/VidCom2,
branch ``qwen``, ``token_compressor/holitom/{core.py,holitom.py}``, called per video from ``models/qwen3_vl.py``
(spec: baselines.md 11). Never report it as ``holitom``.

The port, on one video ``[F, n, D]`` (F temporal patches, ``r`` = ``R_RATIO``):

1. ``s_t[p] = cos(x_t[p], x_{t+1}[p])`` (float32); a position is static on pair t if ``s_t[p] > tau``.
2. Static windows by dynamic programming: window ``[a, b]`` saves ``(#positions static on every pair a..b-1) *
   (b - a)`` tokens; frames are partitioned to maximise the total saving (a longer window must save strictly more;
   windows at most ``max_window_size`` frames).
3. ``r' = min(r / ((F*n - saved) / (F*n)), 1)``.
4. Per window: static positions are averaged over its frames and reduced to ``round(S * r')`` DPC-kNN centres
   (``k = min(K, centres)``, density noise 1e-6); every frame's dynamic positions keep ``ceil(n_d * r')`` tokens:
   ``round(keep * (1 - D))`` by the **feature L2 norm** (the port's stand-in for attention), the rest as DPC-kNN
   centres of the others. Members join their nearest centre (Euclidean); centre := ``beta*centre +
   (1-beta)*mean(members)``. With the port's default ``D = 0`` every dynamic token is chosen by norm, none merged.
   The dynamic part is computed before the static part (this fixes the order of the noise draws).
5. Emission order: windows in time order; in a window the static centres (by position), then per frame the norm-
   chosen tokens then the centres (by position).
6. **Slots:** the port does not keep the tokens' own positions: it writes the K emitted tokens into the K slots
   ``torch.linspace(0, F*n - 1, K).long()`` of the video (``holitom.py`` calls them "approximate keep indices"), so
   each token takes the M-RoPE position and the DeepStack features of an unrelated slot. ``slots="linspace"``
   (default) reproduces that; ``slots="representative"`` puts each token at its own position (a static centre at
   its window's first frame) instead — not the port, offered for ablation.

Deviations from the port (recorded in stats): ``r = 1`` keeps every token unchanged (the port still averages the
static positions of static windows at ``r = 1``; the project's contract is that ``r = 1`` is lossless); if the
port would emit no token at all (only possible when every frame is static and ``round(S * r') = 0``) the port
crashes, here slot 0 is kept unchanged. The density noise comes from ``generator`` (a CPU stream drawn in the
port's call order and shapes, so a CPU run of the port under ``torch.manual_seed(s)`` draws the same numbers); the
port uses the global RNG. Distances in float32 (float64 for float64 input), as the port; norms in at least float32
(the port's bf16 norms tie often and ``topk`` picks among tied tokens as the backend likes; ranking by the unrounded
norm is one of its possible choices, made deterministic); merges accumulated in at least float32 then cast (the port
computes them in the input dtype). Remaining ties go to the lower index. With float32 input the result equals the
port's on CPU under the same seed exactly (checked against the port code itself, including D > 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import keep_highest
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection

NOISE = 1e-6  # DPC-kNN density tie-breaking noise, as the official HoliTom / FastVID code


def dpc_knn(
    x: torch.Tensor, cluster_num: int, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN centres of each row of ``x [B, m, D]`` -> ``(centres [B, cluster_num] ascending, distances [B, m, m])``.

    ``dist = cdist / sqrt(D)`` (at least float32); density ``rho = exp(-mean of the k smallest squared distances,
    self included) + U[0,1) * 1e-6``; ``delta`` = distance to the nearest denser token (the row's largest distance if
    none); centres = the ``cluster_num`` largest ``delta * rho``. Noise: one ``[B, m]`` float32 draw from ``generator``.
    """
    b, m, d = x.shape
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    dist = torch.cdist(xf, xf) / (d**0.5)
    rho = (-(dist.topk(k, dim=-1, largest=False).values ** 2).mean(dim=-1)).exp()
    rho = rho + torch.rand((b, m), generator=generator, dtype=torch.float32).to(rho) * NOISE
    denser = rho.unsqueeze(1) > rho.unsqueeze(2)  # [B, i, j]: j denser than i
    dmax = dist.flatten(1).max(dim=1).values.view(b, 1, 1)
    delta = torch.where(denser, dist, dmax).min(dim=-1).values
    centres = (delta * rho).topk(cluster_num, dim=-1).indices.sort(dim=-1).values
    return centres, dist


def merge_into_centres(
    x: torch.Tensor, centres: torch.Tensor, dist: torch.Tensor, beta: float
) -> torch.Tensor:
    """HoliTom's cluster merge: ``x [B, m, D]``, ``centres [B, C]`` -> merged centres ``[B, C, D]`` (x's dtype).

    Every non-centre joins the centre at the smallest distance (first on ties); a centre with members becomes
    ``beta * centre + (1 - beta) * mean(members)``, one without stays itself.
    """
    b, m, d = x.shape
    c = centres.shape[1]
    acc = torch.promote_types(x.dtype, torch.float32)
    own = x.gather(1, centres.unsqueeze(-1).expand(b, c, d)).to(acc)
    if c == m:
        return own.to(x.dtype)
    member = torch.ones((b, m), dtype=torch.bool, device=x.device).scatter_(1, centres, False)
    idx = member.nonzero()[:, 1].view(b, m - c)
    to_c = dist.gather(1, idx.unsqueeze(-1).expand(b, m - c, m)).gather(
        2, centres.unsqueeze(1).expand(b, m - c, c)
    )
    assign = to_c.argmin(dim=-1)  # [B, m - c]
    sums = torch.zeros((b, c, d), dtype=acc, device=x.device)
    sums.scatter_add_(
        1,
        assign.unsqueeze(-1).expand(b, m - c, d),
        x.gather(1, idx.unsqueeze(-1).expand(b, m - c, d)).to(acc),
    )
    cnt = torch.zeros((b, c), dtype=acc, device=x.device).scatter_add_(
        1, assign, torch.ones_like(assign, dtype=acc)
    )
    merged = beta * own + (1 - beta) * sums / cnt.clamp(min=1).unsqueeze(-1)
    return torch.where(cnt.unsqueeze(-1) > 0, merged, own).to(x.dtype)


def static_windows(static: torch.Tensor, max_window_size: int) -> tuple[list[tuple[int, int]], int]:
    """Optimal partition of the frames into windows, from ``static [F-1, n]`` (position p static on pair t).

    Returns ``([(first, last), ...], tokens saved)``. ``run[a, p]`` = consecutive static pairs from pair ``a``; the
    saving of window ``[a, b]`` is ``#{p: run[a, p] >= b - a} * (b - a)``; the DP (Python ints, exact) prefers the
    shortest window on equal savings and a single frame unless a window saves strictly more, as the port.
    """
    f = static.shape[0] + 1
    n = static.shape[1]
    run = torch.zeros((f, n), dtype=torch.long)
    st = static.cpu().long()
    for a in range(f - 2, -1, -1):
        run[a] = st[a] * (run[a + 1] + 1)
    hist = torch.zeros((f, f + 1), dtype=torch.long).scatter_add_(1, run, torch.ones_like(run))
    at_least = hist.flip(1).cumsum(1).flip(1).tolist()  # at_least[a][L] = #{p: run[a, p] >= L}
    dp, prev = [0] * f, [0] * f
    for i in range(f):
        best, first = (dp[i - 1] if i > 0 else 0), i
        for size in range(2, min(i + 1, max_window_size) + 1):
            a = i - size + 1
            cur = (dp[a - 1] if a > 0 else 0) + at_least[a][size - 1] * (size - 1)
            if cur > best:
                best, first = cur, a
        dp[i], prev[i] = best, first
    windows, i = [], f - 1
    while i >= 0:
        windows.append((prev[i], i))
        i = prev[i] - 1
    return windows[::-1], dp[-1]


@register
@dataclass(frozen=True)
class HoliTomVC2:
    """tau: static threshold (port env ``HOLITOM_T``). beta: centre weight in merges (``HOLITOM_BETA``). D: share of
    the dynamic budget given to DPC centres instead of the norm (``HOLITOM_D``). K: DPC neighbours, capped at the
    centre count (``HOLITOM_K``, floored at 1). max_window_size: longest static window (``HOLITOM_MAX_WINDOW_SIZE``).
    slots: ``linspace`` (the port) or ``representative`` (each token at its own position; ablation)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="holitom_vc2",
        stage="pre_llm",
        paper="HoliTom (NeurIPS 2025, arXiv 2505.21334)",
        code="github.com/xuyang-liu16/VidCom2 (branch qwen) token_compressor/holitom/",
        approximation="VidCom2 repository's HoliTom port: attention replaced by the feature L2 norm, no in-LLM "
        "merge, and the merged tokens written into evenly spaced (linspace) slots instead of their own positions",
        stochastic=True,
    )
    tau: float = 0.8
    beta: float = 0.6
    D: float = 0.0
    K: int = 7
    max_window_size: int = 1024
    slots: str = "linspace"

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if self.slots not in ("linspace", "representative"):
            raise ValueError(f"holitom_vc2: slots must be 'linspace' or 'representative', got {self.slots!r}")
        x = features
        f, n, d = x.shape
        total = f * n
        if retention_ratio >= 1.0:
            keep = torch.ones((f, n), dtype=torch.bool, device=x.device)
            return Selection(keep=keep, stats={"retention_realised": 1.0, "full_ratio_lossless": True})
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        xn = F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1)
        static = F.cosine_similarity(xn[:-1], xn[1:], dim=-1) > self.tau  # [F-1, n]
        windows, saved = static_windows(static, max(1, int(self.max_window_size)))
        r2 = min(retention_ratio / ((total - float(saved)) / total), 1.0)
        norms = x.to(torch.promote_types(x.dtype, torch.float32)).norm(dim=-1)  # refines the port's bf16 ties
        feats, slots = [], []  # emitted tokens [k, D] and their representative flat slot, in the port's order
        for a, b in windows:
            is_static = static[a:b].all(dim=0) if b > a else torch.zeros(n, dtype=torch.bool, device=x.device)
            pos_s, pos_d = is_static.nonzero().squeeze(1), (~is_static).nonzero().squeeze(1)
            # the port merges the dynamic part first (noise order), but emits the static tokens first
            dyn = self._dynamic(x[a : b + 1, pos_d], norms[a : b + 1, pos_d], pos_d, a, n, r2, g)
            c = round(pos_s.numel() * r2)
            if pos_s.numel() > 0 and c > 0:
                acc = torch.promote_types(x.dtype, torch.float32)
                mean = x[a : b + 1, pos_s].to(acc).mean(dim=0).to(x.dtype).unsqueeze(0)  # [1, S, D]
                centres, dist = dpc_knn(mean, c, min(max(1, int(self.K)), c), g)
                feats.append(merge_into_centres(mean, centres, dist, self.beta)[0])
                slots.append(a * n + pos_s[centres[0]])
            feats.append(dyn[0])
            slots.append(dyn[1])
        return self._select(
            x,
            feats,
            slots,
            {"budget_mode": "port", "windows": len(windows), "saved": int(saved), "ratio_adjusted": r2},
        )

    def _dynamic(self, xd, sd, pos, a, n, r2, g) -> tuple[torch.Tensor, torch.Tensor]:
        """Norm tokens + DPC centres of each frame of one window: ``xd [w, n_d, D]``, norms ``sd [w, n_d]``,
        positions ``pos [n_d]`` -> (tokens ``[k, D]``, their flat slots ``[k]``), frame-major."""
        w, nd, d = xd.shape
        keep_n = math.ceil(nd * r2)
        dominant = round(keep_n * (1 - self.D))
        contextual = keep_n - dominant
        top = keep_highest(sd, torch.full((w,), dominant, dtype=torch.long))
        dom = top.nonzero()[:, 1].view(w, dominant)
        frames = torch.arange(a, a + w, device=xd.device).unsqueeze(1) * n
        parts = [(xd.gather(1, dom.unsqueeze(-1).expand(w, dominant, d)), frames + pos[dom])]
        if contextual > 0:
            rest = (~top).nonzero()[:, 1].view(w, nd - dominant)
            xr = xd.gather(1, rest.unsqueeze(-1).expand(w, nd - dominant, d))
            centres, dist = dpc_knn(xr, contextual, min(max(1, int(self.K)), contextual), g)
            parts.append(
                (merge_into_centres(xr, centres, dist, self.beta), frames + pos[rest.gather(1, centres)])
            )
        return torch.cat([p[0] for p in parts], dim=1).reshape(-1, d), torch.cat(
            [p[1] for p in parts], dim=1
        ).reshape(-1)

    def _select(self, x, feats, slots, stats) -> Selection:
        f, n, d = x.shape
        tokens = torch.cat(feats) if feats else x.new_empty((0, d))
        k = tokens.shape[0]
        keep = torch.zeros(f * n, dtype=torch.bool, device=x.device)
        out = x.reshape(f * n, d).clone()
        if k == 0:  # the port crashes here (indexes an empty tensor); keep slot 0 as it is
            keep[0] = True
            stats["empty_fallback"] = True
        else:
            if self.slots == "linspace":  # the port's literal call, on the features' device like the port
                where = torch.linspace(0, f * n - 1, k, dtype=torch.long, device=x.device)
            else:  # every token at its own (representative) position; sequence order = position order
                where = torch.cat(slots)
            if where.unique().numel() != k:
                raise RuntimeError(
                    f"holitom_vc2: {k} tokens map to repeated slots of a {f}x{n} video; use slots='representative'"
                )
            keep[where] = True
            out[where] = tokens
        stats.update(slots=self.slots, retention_realised=float(keep.sum()) / (f * n))
        return Selection(keep=keep.view(f, n), features=out.view(f, n, d), stats=stats)
