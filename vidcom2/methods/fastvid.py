"""FastVID — dynamic segmentation, then density-based spatio-temporal pruning and merging (faithful, LLaVA-OV recipe).

Paper: Shen et al., *FastVID: Dynamic Density Pruning for Fast Video Large Language Models*, NeurIPS 2025,
arXiv 2503.11187. Official code: github.com/LunarShen/FastVID at a40a109, ``fastvid_llavaonevision/LLaVA-NeXT/llava/
model/language_model/modeling_qwen2.py`` (the ``FastVID`` block of ``Qwen2Model.forward``) with its side signals from
``multimodal_encoder/siglip_encoder.py::SigLipVisionAbstract`` and ``llava_arch.py::encode_images / get_attn_2dPool``.
Defaults: ``fastvid_llavaonevision/scripts/eval.sh`` (R=0.10, c=8, tau=0.9, d=0.4, p=4, beta=0.6, 32 frames).

Signals (per frame, ``signal="map_head"``, the default): the encoder output that feeds the projector goes through
SigLIP's ``post_layernorm`` and its attention-pooling (MAP) head, loaded from the original SigLIP checkpoint
(``google/siglip-so400m-patch14-384``) when the model's checkpoint lacks them, as the official code does; the head's
pooled vector is the frame's **global feature**, its single-probe attention over the patches (mean over heads) pooled
to the LLM grid like the features is the **frame attention** (LLaVA-OV: bilinear to ``ceil(27/2) = 14``, the official
``get_attn_2dPool``; LLaVA-Video: ``avg_pool2d`` stride 2, the official ``fastvid_llavavideo`` one). The LLaVA
adapters capture both (``map_head_hooks``, ``vidcom2/adapters/_siglip_head.py``) and ``vidcom2.compress`` passes them
as ``global_features`` / ``scores``.

Algorithm on the projected, pooled features ``x [F, n, D]`` (``r`` = retention_ratio):

1. **DySeg.** ``c_t = cos(g_t, g_{t+1})``; cut after the ``c - 1`` smallest ``c_t`` and after every ``c_t < tau``.
2. **Budgets** (``int`` truncation): ``retain = int(n*r)``, ``context = int(retain*d)``, ``salient = retain -
   context`` per frame. In a segment of ``s`` frames the ``s*context`` anchors go to every ``p``-th frame counted from
   the segment end, ``(s*context) // ceil(s/p)`` each.
3. **ATS.** Per frame the ``salient`` tokens of highest frame attention are kept as they are.
4. **Density** of each frame's other tokens: ``dist = cdist / sqrt(D)`` (float32), ``rho = exp(-mean of the 4 smallest
   squared distances, self included) + U[0,1)*1e-6``, ``delta`` = distance to the nearest denser token (the frame's
   largest distance if none), score ``delta * rho``.
5. **DTM.** A frame whose anchor count equals ``context`` (a one-frame segment) takes its top-score tokens as anchors
   and merges its own non-salient tokens into them; an anchor frame of a longer segment (count > ``context``) takes
   its top-score tokens and merges **all** non-salient tokens of the segment into them. Each member joins its most
   cosine-similar anchor (the anchor itself included); ``a := w*a + (1-w)*mean(members)``, ``w = max(1/(count+1),
   beta)``; computed in the features' dtype, as the official code.
6. Kept tokens keep their original positions (run with ``position_mode=original`` on LLaVA-OV), in position order.

Deliberate differences (none changes a selection the official code makes on valid input): ``retain`` is floored at
1 (the official code keeps no video token when ``int(n*r) = 0``); an anchor count above a frame's non-salient tokens
is capped (the official ``topk`` raises); ``r = 1`` keeps every token unchanged; fewer than ``c`` frames cut after
every gap; ties (equal attention or equal segment similarities) go to the lower index (the official ``topk`` leaves
them to the backend); the density noise comes from ``generator`` (one ``[F, m]`` float32 draw, the official shape;
the official code draws from the global RNG on the device).

Other models: the official Qwen2.5-VL variant (``fastvid_qwen25vl``: a mean-query attention at the last vision
block, ``seg_context_num = max(int(seg_retain*d), 1)`` per segment, ``tau=0.84``) is not implemented. Qwen towers have
no MAP head, so ``signal="map_head"`` is refused there (the adapter's ``map_head`` raises before anything runs);
``signal="encoder"`` runs the algorithm above on the adapter's encoder scores (attention received at the last
full-attention block) with the frame's mean projected token as global feature (the official Qwen variant's global
feature). ``signal="encoder"`` is labelled an approximation (``FastVID(signal="encoder").info.approximation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidcom2.budget import keep_highest, keep_lowest
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Selection

DENSITY_K = 4  # neighbours of the DPC density, self included (official constant)
NOISE = 1e-6  # density tie-breaking noise (official constant)
SIGNALS = ("encoder", "map_head")


def segment_sizes(global_features: torch.Tensor, c: int, tau: float) -> list[int]:
    """DySeg: segment lengths from ``global_features [F, Dg]`` (cosine in their dtype, as the official code)."""
    g = global_features / global_features.norm(dim=1, keepdim=True)
    sim = (g[:-1] * g[1:]).sum(dim=1)
    f = global_features.shape[0]
    k = min(max(0, int(c) - 1), f - 1)
    lowest = keep_lowest(sim.unsqueeze(0), torch.tensor([k]))[0]
    cuts = (lowest | (sim < tau)).nonzero().squeeze(1).tolist()
    edges = [-1, *cuts, f - 1]
    return [b - a for a, b in zip(edges, edges[1:])]


def anchor_counts(sizes: list[int], context: int, p: int) -> list[int]:
    """Anchors per frame: in a segment of ``s`` frames, ``(s*context) // ceil(s/p)`` on every p-th frame from its end."""
    out = []
    for s in sizes:
        each = (s * context) // ((s + p - 1) // p)
        out += [each if (s - 1 - j) % p == 0 else 0 for j in range(s)]
    return out


def density_scores(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``delta * rho`` of each row of ``tokens [F, m, D]`` -> ``[F, m]`` float32 (at least)."""
    f, m, d = tokens.shape
    x = tokens.to(torch.promote_types(tokens.dtype, torch.float32))
    dist = torch.cdist(x, x) / (d**0.5)
    near = dist.topk(min(DENSITY_K, m), dim=-1, largest=False).values
    rho = (-(near**2).mean(dim=-1)).exp()
    rho = rho + torch.rand((f, m), generator=generator, dtype=torch.float32).to(rho) * NOISE
    denser = rho.unsqueeze(1) > rho.unsqueeze(2)  # [F, i, j]: token j denser than token i
    dmax = dist.flatten(1).max(dim=1).values.view(f, 1, 1)
    return torch.where(denser, dist, dmax).min(dim=-1).values * rho


def merge(anchors: torch.Tensor, members: torch.Tensor, beta: float) -> torch.Tensor:
    """DTM update of ``anchors [a, D]`` with ``members [M, D]`` (each joins its most cosine-similar anchor)."""
    unit_m = members / members.norm(dim=-1, keepdim=True)
    unit_a = anchors / anchors.norm(dim=-1, keepdim=True)
    assign = torch.bmm(unit_m.unsqueeze(0), unit_a.T.unsqueeze(0))[0].argmax(dim=1)  # bmm: the official kernel
    onehot = torch.zeros((members.shape[0], anchors.shape[0]), dtype=members.dtype, device=members.device)
    onehot[torch.arange(members.shape[0], device=members.device), assign] = 1
    cnt = onehot.sum(dim=0).unsqueeze(1)
    w = (1 / (cnt + 1)).clamp(min=beta)
    summed = torch.bmm(onehot.T.unsqueeze(0), members.unsqueeze(0))[0]
    return w * anchors + (1 - w) * summed / cnt.clamp(min=1)


_BASE = dict(
    name="fastvid",
    stage="vision_encoder",
    paper="FastVID (NeurIPS 2025, arXiv 2503.11187)",
    code="github.com/LunarShen/FastVID fastvid_llavaonevision (a40a109)",
    stochastic=True,
)
#: signal="map_head" (default): the official signal; the record is that of a faithful method
FAITHFUL = MethodInfo(**_BASE, needs=("scores", "global_features"))
#: signal="encoder": the fallback signal, labelled
FALLBACK = MethodInfo(
    **_BASE,
    needs=("scores",),
    approximation="fastvid with signal='encoder': the frame attention is the encoder's attention received and the "
    "global feature the mean projected token, not SigLIP's MAP-head signal",
)


class _Info:
    """``FastVID.info``: :data:`FAITHFUL` on the class and for ``signal="map_head"``, :data:`FALLBACK` for
    ``signal="encoder"`` (what it needs and its label depend on the instance's signal)."""

    def __get__(self, obj, cls=None) -> MethodInfo:
        return FALLBACK if obj is not None and obj.signal == "encoder" else FAITHFUL


@register
@dataclass(frozen=True)
class FastVID:
    """dyseg_c / dyseg_tau / stprune_d / dtm_p / dtm_beta: the official ``fastvid_DySeg_c``, ``fastvid_DySeg_tau``,
    ``fastvid_STPrune_d``, ``fastvid_DTM_p``, ``fastvid_DTM_beta`` (LLaVA-OV script defaults). signal: ``map_head``
    (the official signal, ``global_features`` required; ``vidcom2.compress`` captures it on the LLaVA families) or
    ``encoder`` (the labelled fallback: encoder attention received + the mean token)."""

    info: ClassVar[MethodInfo] = _Info()
    dyseg_c: int = 8
    dyseg_tau: float = 0.9
    stprune_d: float = 0.4
    dtm_p: int = 4
    dtm_beta: float = 0.6
    signal: str = "map_head"

    def __post_init__(self) -> None:
        for name in ("stprune_d", "dtm_beta"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"fastvid: {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("dyseg_c", "dtm_p"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"fastvid: {name} must be >= 1, got {getattr(self, name)}")
        if self.signal not in SIGNALS:
            raise ValueError(f"fastvid: signal must be one of {SIGNALS}, got {self.signal!r}")

    def _check(self, global_features, f) -> None:
        if self.signal == "map_head" and (global_features is None or global_features.shape[0] != f):
            raise ValueError(
                "fastvid: signal='map_head' needs global_features [F, Dg] (the MAP head's pooled output per frame, "
                "captured by vidcom2.compress on LLaVA models); use signal='encoder' for the fallback"
            )

    def __call__(
        self, features, retention_ratio, *, scores=None, keys=None, generator=None, global_features=None
    ) -> Selection:
        x = features
        f, n, d = x.shape
        self._check(global_features, f)
        stats = {"signal": self.signal}
        if retention_ratio >= 1.0:
            return Selection(keep=torch.ones((f, n), dtype=torch.bool, device=x.device), stats=stats)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        glob = global_features if self.signal == "map_head" else x.mean(dim=1)
        sizes = segment_sizes(glob.to(x.device), self.dyseg_c, self.dyseg_tau)
        retain = max(1, int(n * retention_ratio))
        context = int(retain * self.stprune_d)
        salient = retain - context
        counts = anchor_counts(sizes, context, int(self.dtm_p))
        keep = keep_highest(scores.to(x.device), torch.full((f,), salient, dtype=torch.long))
        rest = (~keep).nonzero()[:, 1].view(f, n - salient)  # non-salient positions per frame, ascending
        out = x.clone()
        if context > 0:
            tokens = x.gather(1, rest.unsqueeze(-1).expand(f, n - salient, d))
            score = density_scores(tokens, g)
            self._dtm(tokens, score, rest, sizes, counts, context, keep, out)
        stats.update(segments=len(sizes), retention_realised=float(keep.sum()) / (f * n))
        return Selection(keep=keep, features=out, stats=stats)

    def _dtm(self, tokens, score, rest, sizes, counts, context, keep, out) -> None:
        """Anchors and merges of every frame (written into ``keep`` / ``out``)."""
        m = tokens.shape[1]
        start = 0
        for s in sizes:
            for t in range(start, start + s):
                k = min(counts[t], m)
                if counts[t] == 0:
                    continue
                top = score[t].topk(k).indices
                members = tokens[t] if counts[t] == context else tokens[start : start + s].reshape(-1, tokens.shape[2])
                pos = rest[t, top]
                out[t, pos] = merge(tokens[t, top], members, self.dtm_beta)
                keep[t, pos] = True
            start += s
