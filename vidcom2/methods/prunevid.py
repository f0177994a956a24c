"""PruneVid — temporal segments by clustering, static tokens averaged over time, spatial DPC merging before the LLM;
attention pruning per group at LLM layer 10 with the earlier layers' KV cache pruned retroactively.

Paper: Huang et al., *PruneVid: Visual Token Pruning for Efficient Video Large Language Models*, arXiv 2412.16117
(ACL 2025). Official code: github.com/Visual-AI/PruneVid at b12600c, ``models/pllava/modeling_pllava.py``
(``merge_frames_dynamic``, ``cluster_dpc_knn``, ``refine_clusters``, ``segment_lengths``, ``spatial_merge_tokens``,
``compute_cluster_vectors``); PLLaVA only upstream. Defaults: ``scripts/eval.sh`` (``tau=0.8``,
``temporal_segment_ratio=0.25``, ``cluster_ratio=0.5``, ``k=7``).

**Both stages.** The in-LLM stage (``plan``, ``MethodInfo.in_llm``; ``VTPWindowCache`` in ``models/pllava/
elastic_cache.py`` and ``LlamaAttention.forward`` in ``llama.py``): in layer ``selected_layer`` (10; scripts
``alpha=0.4``) the attention of the text queries after the video, **pre-RoPE and without a mask** (the official
``attn_weights_wo_pos``: ``softmax(q k^T / sqrt(d))`` over every prompt key), max over heads, then max over the
queries, scores the visual tokens; every pre-LLM group (a window's static tokens; each frame's dynamic tokens of a
window) keeps its ``int(size * llm_alpha)`` highest; from layer ``selected_layer + 1`` on only they remain, original
positions, and the layers ``0..selected_layer`` read only them while decoding (the official code slices their KV
cache; here a gather on read, ``vidcom2.stages._retro``: same attention, the entries are not freed).
``selected_layer=None`` (default) scales layer 10 of PLLaVA-7B's 32 to the model's depth (``round(10 * L / 32)``,
within ``[0, L - 2]``). ``llm_alpha=1.0`` is the pre-LLM part alone.

On ``x [F, n, D]`` (no attention needed):

1. **Segments.** DPC-kNN (``k = min(7, F)``) of the frame means into ``int(F * temporal_segment_ratio)`` clusters
   (at least 1); every frame joins its nearest centre. ``refine_clusters``: per cluster only its longest run(s) of
   consecutive frames keep the label (a cluster whose runs are all single frames keeps none); each unlabelled run,
   left to right, takes the label of the neighbouring run that is longer (left on ties, 0 if none). Windows are
   the runs of equal labels.
2. **Static positions** of a window of ``w > 1`` frames: mean pairwise cosine of the position's tokens over the
   window's frames (self pairs excluded) ``> tau``; they are averaged over the window into one token each.
3. **Spatial merge.** The static tokens of a window, and each frame's dynamic tokens, when more than 14: DPC-kNN
   (k=7) into ``int(S * cluster_ratio)`` clusters (at least 1); every token joins its nearest centre (a centre
   itself), each cluster becomes the plain mean of its members, in the features' dtype (``compute_cluster_vectors``).
4. Sequence order (``order="official"``): windows in time order; per window its static tokens, then each frame's
   dynamic tokens; clusters in the DPC score order, unmerged tokens by position. A merged token sits in its
   centre's slot (a static one at its position in the window's first frame).

Mapping to ``retention_ratio`` (PruneVid has no ratio knob): ``cluster_ratio=None`` (default) uses
``cluster_ratio = retention_ratio``; the static averaging removes more, so the realised retention (recorded) is
below the nominal one. ``cluster_ratio=0.5`` is the official setting (the ratio then only labels the run).
``retention_ratio = 1`` keeps every token unchanged (no in-LLM stage either). Recorded per sample:
``visual_tokens_per_layer[0] / visual_tokens_in`` (pre-LLM retention), ``visual_tokens_out`` (from layer
``selected_layer + 1`` on) and ``visual_tokens_layer_avg`` (prefill tokens averaged over the layers); the official
setting realises about 16-17% in its deep layers.

Deliberate differences: ``k`` and the cluster counts are floored / capped so that short videos and small groups
run (the official code needs ``F >= 7`` and fails on zero clusters); ties in the DPC score go to the lower index;
density noise from ``generator`` in the official call order and shapes (the segmentation first, then per window
the static merge before the dynamic ones); the official code draws from the global RNG. In the LLM: scores in
float32 (official: the model dtype), ties to the lower index, text queries after the last video token, LLaVA-OV's
video newline and LLaVA-Video's row newlines never pruned (layout tokens, not in any group), the KV cache hidden
rather than freed; PLLaVA only upstream, so the layer is scaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidcom2.registry import register
from vidcom2.types import MethodInfo, Plan, Selection, Stage

NOISE = 1e-6
MERGE_ABOVE = 14  # groups of more than 14 tokens are merged (official constant)
K = 7  # DPC neighbours (official constant)
ORDERS = ("official", "sorted")
DEPTH = (10, 32)  # scripts/eval.sh selected_layer=10 of PLLaVA-7B's 32 decoder layers


def selected_layer_for(num_layers: int, selected_layer: int | None) -> int:
    """The layer whose attention selects (pruning from the next one): given, or 10 of 32 scaled, in ``[0, L - 2]``."""
    if selected_layer is None:
        return min(num_layers - 2, max(0, round(DEPTH[0] * num_layers / DEPTH[1])))
    k = int(selected_layer)
    if not 0 <= k <= num_layers - 2:
        raise ValueError(f"prunevid: selected_layer must be in [0, {num_layers - 2}] for a {num_layers}-layer LLM, "
                         f"got {k}; leave it null to scale layer 10 of 32 to the depth")  # fmt: skip
    return k


@dataclass(frozen=True)
class TextQueryMax:
    """PruneVid's score recipe (``where="prev_layer_input"``): from the input of the selecting layer, before it runs,
    ``softmax(q k^T * scaling)`` of the text queries after the video over every key, pre-RoPE and unmasked (the
    official ``attn_weights_wo_pos``), max over heads, then max over the queries -> ``[n]`` float32."""

    where: ClassVar[str] = "prev_layer_input"

    def start(self, embeds, visual, *, text_start, prompt_len) -> dict:
        return {"text_start": text_start, "prompt_len": prompt_len}

    def layer_row(self, layer, hidden, cos, sin, mask, *, scoring, ids) -> torch.Tensor:
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        d, n = attn.head_dim, x.shape[1]
        rows = ((ids >= scoring["text_start"]) & (ids < scoring["prompt_len"])).nonzero().squeeze(1)
        if rows.numel() == 0:
            raise ValueError("prunevid: no text token follows the video in the prompt; its LLM stage scores the "
                             "video by the text queries after it (put the question after the video)")  # fmt: skip
        q = attn.q_proj(x[:, rows]).view(1, rows.numel(), -1, d)
        k = attn.k_proj(x).view(1, n, -1, d)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        hkv = k.shape[2]
        q = q[0].float().permute(1, 0, 2).reshape(hkv, -1, d)  # [Hkv, g * R, d], heads grouped by their kv head
        logits = q @ k[0].float().permute(1, 2, 0) * attn.scaling  # [Hkv, g * R, n]
        return torch.softmax(logits, dim=-1).amax(dim=(0, 1))


def dpc_assign(x: torch.Tensor, clusters: int, k: int, generator: torch.Generator):
    """PruneVid's ``cluster_dpc_knn`` on ``x [m, D]``: ``(centres [c] in score order, label [m] in 0..c-1)``."""
    m, d = x.shape
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    dist = torch.cdist(xf, xf) / (d**0.5)
    rho = (-(dist.topk(k, dim=-1, largest=False).values ** 2).mean(dim=-1)).exp()
    rho = rho + torch.rand((1, m), generator=generator, dtype=torch.float32)[0].to(rho) * NOISE
    denser = rho.unsqueeze(0) > rho.unsqueeze(1)  # [i, j]: j denser than i
    delta = torch.where(denser, dist, dist.max()).min(dim=-1).values
    score = delta * rho
    centres = torch.argsort(score, descending=True, stable=True)[:clusters]
    label = dist[centres].argmin(dim=0)
    label[centres] = torch.arange(clusters, device=x.device)
    return centres, label


def refine(labels: list[int]) -> list[int]:
    """``refine_clusters`` on one sequence of frame labels (see the module docstring)."""
    n = len(labels)
    out = list(labels)
    runs: dict[int, list[tuple[int, int]]] = {}
    for i, lab in enumerate(labels):
        if i > 0 and labels[i - 1] == lab:
            runs[lab][-1] = (runs[lab][-1][0], i)
        else:
            runs.setdefault(lab, []).append((i, i))
    for segs in runs.values():
        longest = max(b - a + 1 for a, b in segs)
        for a, b in segs:
            if longest == 1 or b - a + 1 != longest:
                out[a : b + 1] = [-1] * (b - a + 1)
    i = 0
    while i < n:
        if out[i] != -1:
            i += 1
            continue
        a = i
        while i < n and out[i] == -1:
            i += 1
        b = i - 1
        left = right = None
        llen = rlen = 0
        if a > 0:
            left, j = out[a - 1], a - 1
            while j >= 0 and out[j] == left:
                j -= 1
            llen = a - j - 1
        if b < n - 1:
            right, j = out[b + 1], b + 1
            while j < n and out[j] == right:
                j += 1
            rlen = j - b - 1
        new = left if llen > rlen else right if rlen > llen else (left if left is not None else right)
        out[a : b + 1] = [0 if new is None else new] * (b - a + 1)
    return out


def runs_of(labels: list[int]) -> list[int]:
    """Lengths of the runs of equal consecutive labels."""
    sizes = []
    for i, lab in enumerate(labels):
        if i > 0 and labels[i - 1] == lab:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


@register
@dataclass(frozen=True)
class PruneVid:
    """tau: static threshold (``--tau``); temporal_segment_ratio / cluster_ratio: the official ratios (cluster_ratio
    ``None`` = ``retention_ratio``); order: ``official`` (PLLaVA concatenation) or ``sorted`` (slot order)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="prunevid",
        stage="pre_llm",
        paper="PruneVid (ACL 2025, arXiv 2412.16117)",
        code="github.com/Visual-AI/PruneVid models/pllava/modeling_pllava.py (b12600c)",
        approximation="both stages; cluster_ratio = retention_ratio unless set (PruneVid has no ratio knob), the "
        "LLM layer scaled from 10 of 32 to the depth, the earlier layers' KV cache hidden on read rather than freed, "
        "PLLaVA-only upstream",
        stochastic=True,
        in_llm=True,
    )
    tau: float = 0.8
    temporal_segment_ratio: float = 0.25
    cluster_ratio: float | None = None
    order: str = "official"
    selected_layer: int | None = None
    llm_alpha: float = 0.4

    def _check(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"prunevid: order must be one of {ORDERS}, got {self.order!r}")
        for name in ("temporal_segment_ratio", "cluster_ratio"):
            v = getattr(self, name)
            if v is not None and not 0.0 < float(v) <= 1.0:
                raise ValueError(f"prunevid: {name} must be in (0, 1] (cluster_ratio may be null), got {v}")
        if not 0.0 <= float(self.llm_alpha) <= 1.0:
            raise ValueError(f"prunevid: llm_alpha must be in [0, 1] (1 = no in-LLM stage), got {self.llm_alpha}")

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        self._check()
        x = features
        f, n, d = x.shape
        cr = float(retention_ratio if self.cluster_ratio is None else self.cluster_ratio)
        if retention_ratio >= 1.0:
            return Selection(keep=torch.ones((f, n), dtype=torch.bool, device=x.device), stats={"cluster_ratio": cr})
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        clusters = max(1, int(f * self.temporal_segment_ratio))
        _, label = dpc_assign(x.mean(dim=1), clusters, min(K, f), g)
        sizes = runs_of(refine(label.tolist()))
        out = x.reshape(f * n, d).clone()
        slots, start = [], 0
        for w in sizes:
            frames = x[start : start + w]
            static = torch.zeros(n, dtype=torch.bool, device=x.device)
            if w > 1:
                unit = F.normalize(frames, p=2, dim=-1)
                sim = torch.einsum("wlc,tlc->wtl", unit, unit)
                static = (sim.sum(dim=1) - 1).sum(dim=0) / (w * (w - 1)) > self.tau
            pos = static.nonzero().squeeze(1)
            slots.append(self._group(frames[:, pos].mean(dim=0), start * n + pos, cr, g, out))
            dyn = (~static).nonzero().squeeze(1)
            for t in range(w):
                slots.append(self._group(frames[t, dyn], (start + t) * n + dyn, cr, g, out))
            start += w
        order = torch.cat(slots)
        keep = torch.zeros(f * n, dtype=torch.bool, device=x.device)
        keep[order] = True
        groups = torch.full((f * n,), -1, dtype=torch.long, device=x.device)  # the in-LLM stage's groups
        for gid, group in enumerate(slots):
            groups[group] = gid
        stats = {"cluster_ratio": cr, "windows": len(sizes), "retention_realised": float(keep.sum()) / (f * n)}
        return Selection(keep=keep.view(f, n), features=out.view(f, n, d), groups=groups.view(f, n),
                         order=order if self.order == "official" else None, stats=stats)  # fmt: skip

    def plan(self, retention_ratio: float, num_layers: int, num_visual: int, *, mrope: bool, selections=None) -> Plan:
        """The in-LLM stage on the shrunk prompt: every group of ``selections`` (the pre-LLM part's, one per video)
        keeps ``int(size * llm_alpha)`` by :class:`TextQueryMax` of layer ``selected_layer``; pruned from the next
        layer on, retroactively in the earlier ones."""
        self._check()
        k = selected_layer_for(num_layers, self.selected_layer)
        hp = {"selected_layer": k, "llm_alpha": float(self.llm_alpha), "visual_tokens_llm_in": num_visual}
        if retention_ratio >= 1.0 or self.llm_alpha >= 1.0 or not selections:
            return Plan("prunevid", hparams=hp)
        group_of, offset = [], 0
        for sel in selections:  # groups of every video in prompt order, numbered apart
            g = sel.groups.reshape(-1)[sel.flat_indices()]
            group_of.append(g + offset)
            offset += int(g.max()) + 1
        group_of = torch.cat(group_of)
        if group_of.numel() != num_visual:
            raise ValueError(f"prunevid: its LLM stage needs one candidate per kept token, the prompt has {num_visual} "
                             f"for {group_of.numel()} kept by the selections: plan it for the prompt they shrank")  # fmt: skip
        keep = torch.tensor([int(s * self.llm_alpha) for s in torch.bincount(group_of).tolist()])  # official int()
        hp["visual_tokens_llm_kept"] = int(keep.sum())
        stage = Stage(k + 1, int(keep.sum()))
        return Plan("prunevid", (stage,), TextQueryMax(), "original", hp, budget="groups", groups=(group_of, keep),
                    retroactive=True)  # fmt: skip

    @staticmethod
    def _group(tokens, slots, cr, g, out) -> torch.Tensor:
        """Merge one group (``tokens [S, D]`` at flat ``slots [S]``) when ``S > 14``; returns its slots in order."""
        s = tokens.shape[0]
        if s <= MERGE_ABOVE:
            out[slots] = tokens
            return slots
        c = min(s, max(1, int(s * cr)))
        centres, label = dpc_assign(tokens, c, min(K, s), g)
        onehot = F.one_hot(label, num_classes=c).to(tokens.dtype)  # [S, c]
        sums = torch.bmm(onehot.T.unsqueeze(0), tokens.unsqueeze(0))[0]
        out[slots[centres]] = sums / onehot.sum(dim=0).unsqueeze(1)
        return slots[centres]
