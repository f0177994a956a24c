"""DyCoke — temporal token merging (TTM, stage 1) and the full DyCoke (TTM + decode-time KV pruning, stage 2).

Paper: Tao et al., *DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models*, CVPR 2025,
arXiv 2411.15024. Official code: github.com/KD-TAO/DyCoke ``llava/model/llava_arch.py::dycole_ttm``.

TTM (per the official code): pass 1 walks frame pairs ``(i, i+1)``, ``i = 0, 2, 4, ...``: frame i is kept whole, frame
i+1 keeps the tokens least cosine-similar to the same position in frame i. Pass 2 walks ``(i, i+2)``,
``i = 0, 4, 8, ... < F-4``: frame i+2 is re-pruned against frame i (replacing its whole pass-1 result). Frames
never pruned ("anchors") stay whole, so TTM's real retention is far above ``1 - K`` (spec: baselines.md 1.4). Kept
tokens of a pruned frame are emitted in ascending-similarity order, as the official ``topk(largest=False)``.

Three registered names; only ``dycoke`` is the full DyCoke (TTM + the decode-time dynamic KV pruning, stage 2):

- ``dycoke_ttm``: the official TTM pass structure and token order. Budget: by default *budget-matched*: the pruned
  frames share exactly ``count(r, F*N) - W*N`` tokens (W anchor frames), so the run keeps the requested ratio; a
  ratio below the anchor floor ``W/F`` is an error. ``merge_ratio=K`` instead gives the official per-frame count
  ``int((1-K)*N)`` and the realised retention is recorded. Deviations from the official code, recorded in stats:
  odd F keeps the last (unpaired) frame whole (the official code drops it); F <= 4 skips pass 2 (the official code
  crashes on an empty ``torch.stack``). Pass 1 L2-normalises both frames before the cosine, as the official code
  (``pass1_normalise=True``, default; the same in fp32, different roundings in bf16).
- ``dycoke``: TTM as ``dycoke_ttm`` plus stage 2 while decoding (its plan's decode stage, run by
  ``vidcom2.stages.decode``; the step rule is :class:`CosinePolicy`; defaults ``L_d = 3``, ``P = 0.7``, cosine
  threshold 0.9, official full-cache read when stable).
- ``dycoke_vc2``: the port in the VidCom2 repository (branch qwen, ``token_compressor/dycoke/core.py``): TTM with
  ``K = 1 - r``, kept indices sorted ascending, an unpaired last frame dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.budget import count
from vidcom2.registry import register
from vidcom2.types import DecodeStage, MethodInfo, Plan, Selection

_PAPER = "DyCoke (CVPR 2025, arXiv 2411.15024)"


def ttm_plan(num_frames: int) -> dict[int, int]:
    """Pruned frame -> its reference frame, after both TTM passes (pass 2 overrides pass 1)."""
    plan = {i + 1: i for i in range(0, num_frames - 1, 2)}
    for i in range(0, num_frames - 4, 4):
        plan[i + 2] = i
    return plan


def _similarities(
    features: torch.Tensor, plan: dict[int, int], pass1_normalise: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pruned frame, the cosine of each token to the same position in its reference frame, in the input dtype.

    Pass-1 pairs ``(i, i+1)`` L2-normalise both frames first (``F.normalize(p=2, dim=1)``, then
    ``cosine_similarity``), as the official ``dycole_ttm`` does (llava_arch.py:47-49 at dd74634; the VidCom2 port
    too); pass-2 pairs ``(i, i+2)`` take the plain cosine (official). In fp32 both give the same numbers; in bf16 /
    fp16 the extra normalisation rounds differently, so it is kept (``pass1_normalise=False``: the pre-0.x project
    behaviour, plain cosine in both passes)."""
    order = sorted(plan)
    pruned = torch.tensor(order, dtype=torch.long, device=features.device)
    refs = torch.tensor([plan[p] for p in order], dtype=torch.long, device=features.device)
    a, b = features.index_select(0, refs), features.index_select(0, pruned)
    if pass1_normalise:
        first = torch.tensor([plan[p] == p - 1 for p in order], device=features.device)
        if bool(first.any()):
            a, b = a.clone(), b.clone()
            a[first] = F.normalize(a[first], p=2, dim=-1)
            b[first] = F.normalize(b[first], p=2, dim=-1)
    return pruned, F.cosine_similarity(a, b, dim=-1)


def _assemble(
    f: int, n: int, device, pruned: torch.Tensor, sims: torch.Tensor, k: torch.Tensor, whole: list[int]
):
    """Keep-mask and sequence order: whole frames in position order, pruned frames' kept tokens by ascending sim."""
    keep = torch.zeros((f, n), dtype=torch.bool, device=device)
    keep[whole] = True
    order_in_frame = torch.argsort(sims, dim=1, stable=True)  # ascending similarity, ties -> lower index
    pieces: dict[int, torch.Tensor] = {w: torch.arange(n, device=device) for w in whole}
    for row, p in enumerate(pruned.tolist()):
        idx = order_in_frame[row, : int(k[row])]
        keep[p, idx] = True
        pieces[p] = idx
    order = (
        torch.cat([pieces[t] + t * n for t in sorted(pieces)]) if pieces else torch.empty(0, dtype=torch.long)
    )
    return keep, order


@register
@dataclass(frozen=True)
class DyCokeTTM:
    """merge_ratio: ``None`` (budget-matched to ``retention_ratio``) or the official K (tokens pruned per frame).
    pass1_normalise: L2-normalise before pass 1's cosine (official; matters in bf16/fp16 only)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="dycoke_ttm",
        stage="pre_llm",
        paper=_PAPER,
        code="github.com/KD-TAO/DyCoke llava/model/llava_arch.py::dycole_ttm",
        approximation="DyCoke stage 1 (TTM) only: the decode-time dynamic KV pruning (stage 2) is not applied",
    )
    merge_ratio: float | None = None
    pass1_normalise: bool = True

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        return _ttm("dycoke_ttm", self.merge_ratio, features, retention_ratio, self.pass1_normalise)


def _ttm(
    name: str, merge_ratio: float | None, features: torch.Tensor, retention_ratio: float, pass1_normalise: bool = True
) -> Selection:
    """TTM of ``dycoke_ttm`` / ``dycoke`` (``name`` for messages): budget-matched or the official K."""
    f, n = features.shape[:2]
    plan = ttm_plan(f)
    whole = [t for t in range(f) if t not in plan]
    stats = {
        "anchor_frames": len(whole),
        "odd_last_frame_kept": f % 2 == 1 and f > 1,
        "pass2": f > 4,
        "pass1_normalise": bool(pass1_normalise),
    }
    if not plan:  # one frame: nothing to prune against; every ratio < 1 is below the floor (W/F = 1)
        if retention_ratio < 1.0:
            raise ValueError(
                f"{name}: a single frame has no temporal redundancy to remove (TTM floor 1/1), cannot keep "
                f"{retention_ratio}; use more frames or another method"
            )
        keep = torch.ones((f, n), dtype=torch.bool, device=features.device)
        return Selection(keep=keep, stats={**stats, "budget_mode": "matched", "retention_realised": 1.0})
    pruned, sims = _similarities(features, plan, pass1_normalise)
    p = len(plan)
    if merge_ratio is None:
        remaining = count(retention_ratio, f * n) - len(whole) * n
        if remaining < 0:
            raise ValueError(
                f"{name}: retention_ratio={retention_ratio} is below the TTM floor {len(whole)}/{f} = "
                f"{len(whole) / f:.4f} at F={f} ({len(whole)} anchor frames are kept whole); use a larger ratio, "
                f"more frames, or dycoke_vc2 / merge_ratio=K for the official nominal setting"
            )
        base, extra = divmod(remaining, p)
        k = torch.full((p,), base, dtype=torch.long)
        k[:extra] += 1
        stats["budget_mode"] = "matched"
    else:
        if not 0.0 <= float(merge_ratio) <= 1.0:
            raise ValueError(f"{name}: merge_ratio (K) must be in [0, 1], got {merge_ratio}")
        k = torch.full((p,), int((1 - float(merge_ratio)) * n), dtype=torch.long)
        stats["budget_mode"] = "official_k"
    keep, order = _assemble(f, n, features.device, pruned, sims, k, whole)
    stats["retention_realised"] = float(keep.sum()) / (f * n)
    return Selection(keep=keep, order=order, stats=stats)


@register
@dataclass(frozen=True)
class DyCokeVC2:
    info: ClassVar[MethodInfo] = MethodInfo(
        name="dycoke_vc2",
        stage="pre_llm",
        paper=_PAPER,
        code="github.com/xuyang-liu16/VidCom2 (branch qwen) token_compressor/dycoke/core.py",
        approximation="VidCom2 repository's port of DyCoke: TTM only with K = 1 - r, sorted indices, "
        "unpaired last frame dropped; not the full DyCoke",
    )

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        f, n = features.shape[:2]
        if f == 1:
            return Selection(keep=torch.ones((f, n), dtype=torch.bool, device=features.device))
        plan = ttm_plan(f)
        whole = [t for t in range(f) if t not in plan and not (f % 2 == 1 and t == f - 1)]
        pruned, sims = _similarities(features, plan)
        keep_ratio = 1.0 - float(1.0 - retention_ratio)  # the port's float arithmetic, kept for parity
        k = torch.full((len(plan),), int(keep_ratio * n), dtype=torch.long)
        keep, _ = _assemble(f, n, features.device, pruned, sims, k, whole)
        if not keep.any():
            keep.view(-1)[0] = True  # the port keeps token 0 when nothing survives
        return Selection(keep=keep, stats={"retention_realised": float(keep.sum()) / (f * n)})


@register
@dataclass(frozen=True)
class DyCoke:
    """The full DyCoke: TTM (as ``dycoke_ttm``: budget-matched, or ``merge_ratio=K``) before the LLM, then stage 2
    while decoding (:meth:`plan`, run by ``vidcom2.stages.decode``; baselines.md 8.2): at each decode step layer
    ``stage2_layer - 1``'s attention row of the new token over the visual span is compared with the previous step's
    (cosine); below ``stage2_threshold`` layers ``>= stage2_layer`` read only the top ``int(n*(1-stage2_prune))``
    visual cache entries (plus all others) for that step; above it they read the full cache (official code) or the
    last selection (``stage2_reuse=True``, the paper's description). ``span_off_by_one``: the official span leaves
    out the last TTM token. Defaults: README ``dycoke_l=3, dycoke_p=0.7``; the official ``eval.sh`` passes no
    ``dycoke_p`` and so runs the lmms-eval wrapper's default ``dycoke_p=0.8`` (``lmms_eval/models/llava_onevision.py:90``
    at dd74634): ``stage2_prune=0.8`` reproduces that script. P, L and the threshold are recorded in the stats.
    On tensors only TTM applies.
    Stage 2 needs batch size 1 (``stage2=False`` turns it off)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="dycoke",
        stage="pre_llm",
        paper=_PAPER,
        code="github.com/KD-TAO/DyCoke llava/model/llava_arch.py::dycole_ttm, "
        "llava/model/language_model/modeling_qwen2.py::PrunableDynamicCache",
        decode=True,
    )
    merge_ratio: float | None = None
    stage2: bool = True
    stage2_layer: int = 3
    stage2_prune: float = 0.7
    stage2_threshold: float = 0.9
    stage2_reuse: bool = False
    span_off_by_one: bool = True
    pass1_normalise: bool = True

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if not 0.0 <= float(self.stage2_prune) < 1.0:
            raise ValueError(f"dycoke: stage2_prune (P) must be in [0, 1), got {self.stage2_prune}")
        sel = _ttm("dycoke", self.merge_ratio, features, retention_ratio, self.pass1_normalise)
        sel.stats.update(
            stage2=bool(self.stage2),
            stage2_reuse=bool(self.stage2_reuse),
            stage2_layer=int(self.stage2_layer),
            stage2_prune=float(self.stage2_prune),
            stage2_threshold=float(self.stage2_threshold),
        )
        return sel

    def plan(self, retention_ratio: float, num_layers: int, num_visual: int | None, *, mrope: bool) -> Plan:
        """Stage 2 as a decode stage at ``L_d = stage2_layer`` with :class:`CosinePolicy` (nothing when ``stage2``
        is off); the span leaves out the last TTM token when ``span_off_by_one`` (official)."""
        if not self.stage2:
            return Plan("dycoke")
        if not 1 <= int(self.stage2_layer) < num_layers:
            raise ValueError(f"dycoke: stage2_layer must be in [1, {num_layers - 1}], got {self.stage2_layer}")
        if not 0.0 <= float(self.stage2_prune) < 1.0:
            raise ValueError(f"dycoke: stage2_prune (P) must be in [0, 1), got {self.stage2_prune}")
        policy = CosinePolicy(float(self.stage2_prune), float(self.stage2_threshold), bool(self.stage2_reuse))
        stage = DecodeStage(int(self.stage2_layer), policy, span_excludes_last=bool(self.span_off_by_one))
        return Plan("dycoke", decode=stage, hparams={"stage2_layer": stage.layer, "stage2_prune": policy.prune})


@dataclass(frozen=True)
class CosinePolicy:
    """DyCoke stage 2's step rule (official ``PrunableDynamicCache.dycoke_pruning`` / ``update_cache``):
    ``s = cos(a_t, a_{t-1})`` of this step's row ``a_t`` over the span and the previous step's (first step: 0). If
    ``s < threshold`` the top ``int(n_span * (1 - prune))`` span positions are selected (official ``int()``
    truncation); else the official code leaves the selection unset, so the full cache is read (``reuse=False``), or
    the last selection is read again (``reuse=True``, the paper's description). Every prompt starts afresh; the
    official ``DycokeConfigs`` object is never reset, so there a sample's first step is compared with the previous
    sample's last row."""

    prune: float
    threshold: float
    reuse: bool = False

    def step(self, row: torch.Tensor, state) -> tuple[torch.Tensor | None, float]:
        """row ``[n_span]`` float32; state: ``vidcom2.stages.decode.DecodeState`` (``rows`` of the earlier steps,
        ``span``, ``last_selection``). Returns (sorted prompt positions or ``None``, the cosine)."""
        previous = state.rows[-1] if state.rows else None
        sim = 0.0 if previous is None else float(F.cosine_similarity(row, previous, dim=0))
        if sim >= self.threshold:
            return (state.last_selection if self.reuse else None), sim
        keep = int(row.numel() * (1 - self.prune))
        top = torch.topk(row, keep, sorted=False).indices if keep else row.new_zeros(0).long()
        return torch.sort(state.span.to(row.device)[top]).values, sim
