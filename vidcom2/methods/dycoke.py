"""DyCoke — temporal token merging (TTM), stage 1 of DyCoke.

Paper: Tao et al., *DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models*, CVPR 2025,
arXiv 2411.15024. Official code: github.com/KD-TAO/DyCoke ``llava/model/llava_arch.py::dycole_ttm``.

TTM (per the official code): pass 1 walks frame pairs ``(i, i+1)``, ``i = 0, 2, 4, ...``: frame i is kept whole, frame
i+1 keeps the tokens least cosine-similar to the same position in frame i. Pass 2 walks ``(i, i+2)``,
``i = 0, 4, 8, ... < F-4``: frame i+2 is re-pruned against frame i (replacing its whole pass-1 result). Frames
never pruned ("anchors") stay whole, so TTM's real retention is far above ``1 - K`` (spec: baselines.md 1.4). Kept
tokens of a pruned frame are emitted in ascending-similarity order, as the official ``topk(largest=False)``.

Two registered names, neither is the full DyCoke (the decode-time dynamic KV pruning, stage 2, is not applied):

- ``dycoke_ttm``: the official TTM pass structure and token order. Budget: by default *budget-matched*: the pruned
  frames share exactly ``count(r, F*N) - W*N`` tokens (W anchor frames), so the run keeps the requested ratio; a
  ratio below the anchor floor ``W/F`` is an error. ``merge_ratio=K`` instead gives the official per-frame count
  ``int((1-K)*N)`` and the realised retention is recorded. Deviations from the official code, recorded in stats:
  odd F keeps the last (unpaired) frame whole (the official code drops it); F <= 4 skips pass 2 (the official code
  crashes on an empty ``torch.stack``).
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
from vidcom2.types import MethodInfo, Selection

_PAPER = "DyCoke (CVPR 2025, arXiv 2411.15024)"


def ttm_plan(num_frames: int) -> dict[int, int]:
    """Pruned frame -> its reference frame, after both TTM passes (pass 2 overrides pass 1)."""
    plan = {i + 1: i for i in range(0, num_frames - 1, 2)}
    for i in range(0, num_frames - 4, 4):
        plan[i + 2] = i
    return plan


def _similarities(features: torch.Tensor, plan: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    pruned = torch.tensor(sorted(plan), dtype=torch.long, device=features.device)
    refs = torch.tensor([plan[p] for p in sorted(plan)], dtype=torch.long, device=features.device)
    sims = F.cosine_similarity(features.index_select(0, refs), features.index_select(0, pruned), dim=-1)
    return pruned, sims


def _assemble(f: int, n: int, device, pruned: torch.Tensor, sims: torch.Tensor, k: torch.Tensor, whole: list[int]):
    """Keep-mask and sequence order: whole frames in position order, pruned frames' kept tokens by ascending sim."""
    keep = torch.zeros((f, n), dtype=torch.bool, device=device)
    keep[whole] = True
    order_in_frame = torch.argsort(sims, dim=1, stable=True)  # ascending similarity, ties -> lower index
    pieces: dict[int, torch.Tensor] = {w: torch.arange(n, device=device) for w in whole}
    for row, p in enumerate(pruned.tolist()):
        idx = order_in_frame[row, : int(k[row])]
        keep[p, idx] = True
        pieces[p] = idx
    order = torch.cat([pieces[t] + t * n for t in sorted(pieces)]) if pieces else torch.empty(0, dtype=torch.long)
    return keep, order


@register
@dataclass(frozen=True)
class DyCokeTTM:
    """merge_ratio: ``None`` (budget-matched to ``retention_ratio``) or the official K (tokens pruned per frame)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="dycoke_ttm",
        stage="pre_llm",
        paper=_PAPER,
        code="github.com/KD-TAO/DyCoke llava/model/llava_arch.py::dycole_ttm",
        approximation="DyCoke stage 1 (TTM) only: the decode-time dynamic KV pruning (stage 2) is not applied",
    )
    merge_ratio: float | None = None

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        f, n = features.shape[:2]
        plan = ttm_plan(f)
        whole = [t for t in range(f) if t not in plan]
        stats = {"anchor_frames": len(whole), "odd_last_frame_kept": f % 2 == 1 and f > 1, "pass2": f > 4}
        if not plan:  # one frame: nothing to prune against; every ratio < 1 is below the floor (W/F = 1)
            if retention_ratio < 1.0:
                raise ValueError(
                    f"dycoke_ttm: a single frame has no temporal redundancy to remove (TTM floor 1/1), cannot keep "
                    f"{retention_ratio}; use more frames or another method"
                )
            keep = torch.ones((f, n), dtype=torch.bool, device=features.device)
            return Selection(keep=keep, stats={**stats, "budget_mode": "matched", "retention_realised": 1.0})
        pruned, sims = _similarities(features, plan)
        p = len(plan)
        if self.merge_ratio is None:
            remaining = count(retention_ratio, f * n) - len(whole) * n
            if remaining < 0:
                raise ValueError(
                    f"dycoke_ttm: retention_ratio={retention_ratio} is below the TTM floor {len(whole)}/{f} = "
                    f"{len(whole) / f:.4f} at F={f} ({len(whole)} anchor frames are kept whole); use a larger ratio, "
                    f"more frames, or dycoke_vc2 / merge_ratio=K for the official nominal setting"
                )
            base, extra = divmod(remaining, p)
            k = torch.full((p,), base, dtype=torch.long)
            k[:extra] += 1
            stats["budget_mode"] = "matched"
        else:
            if not 0.0 <= float(self.merge_ratio) <= 1.0:
                raise ValueError(f"dycoke_ttm: merge_ratio (K) must be in [0, 1], got {self.merge_ratio}")
            k = torch.full((p,), int((1 - float(self.merge_ratio)) * n), dtype=torch.long)
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
