"""SparseVLM (v1, the official default ``USE_VERSION=1_0``; v2 as an option) — text-guided visual-token pruning
inside the LLM.

Paper: Zhang et al., *SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model Inference*,
ICML 2025, arXiv 2410.04417. Official code: github.com/Gumpest/SparseVLMs
(``llava/model/language_model/modelling_sparse_llama.py``, ``score.py``, ``utils.py::cluster_and_merge``).

- **Raters** (once per prompt, from the LLM input embeddings): ``V`` the visual embeddings, ``T`` every token
  after the visual span; ``M = softmax_T(V T^T)`` (raw dot products), ``r_t = mean_v M[v, t]``; raters are the
  ``t`` with ``r_t > mean(r)`` (:func:`text_raters`).
- **Score** at each pruning layer ``l`` (official ``pruning_loc = [2, 6, 15]``): that layer's attention
  probabilities, rows = raters, columns = the current visual tokens, mean over heads then over raters. Layer ``l``
  runs on the unpruned set; its **output** is pruned, so the reduced set enters layer ``l + 1``.
- **Drop**: keep the top ``k_s`` visual tokens (ties: lower index first).
- **Recycle** (v1): of the ``p`` pruned tokens, the ``int(0.3 p) + 1`` with the highest score are clustered by
  DPC-kNN into ``int(that / 10) + 1`` centres (neighbourhood = number of centres, density tie-break noise 1e-6
  from a seeded generator), each cluster averaged (layer-``l`` output states), and the centres are inserted right
  after the kept visual tokens; they are visual tokens for the next stage (:func:`recycled_count`,
  :func:`cluster_and_merge`). Positions are renumbered contiguously.
- **Schedule** (spec baselines.md 6 / 1.3): the official 192-token shape ``[300, 200, 110]`` scaled to ``N``:
  stage fractions ``a * [300/110, 200/110, 1]`` (capped at 1). ``budget_mode="final"`` (default): ``a = r`` and the
  last stage's top-k is chosen so that kept + recycled tokens in the deepest layers equal ``count(r, N)`` exactly.
  ``budget_mode="layer_avg"``: ``a`` solved so that the layer-averaged retention ``sum_l n_l / (L N)`` is the
  largest value not above ``r`` (error below the floor: every layer up to the first pruning layer sees all N).
  The official counts truncate and keep ``min(k, n - 1)``; here ``count`` rounds and ``k >= n`` keeps everything.
- **dtype**: the rater rows, the raters' relevance and the clustering are computed in float32; the official code
  works in the model dtype, so in bf16 near-equal tokens at the cut-off may differ
  (``tests/vidcom2/methods/test_llm_rows_bf16.py`` asserts that this is the only difference of the rows).

- **v2** (``version=2``, SparseVLM+, official ``USE_VERSION=2_0``): the rater probabilities are divided by a RoPE
  "gravity" term (the post-RoPE logit of all-ones q/k at the same positions), only the ``heads`` (official 14) heads
  with the largest rater->visual mass are averaged, nothing is recycled, position ids are kept (original), and the
  schedule shape is ``[300, 200, 118]``.

On tensors (no LLM), ``select`` returns the top ``count(a, F*N)`` tokens by ``scores`` (the final stage's budget,
like ``pdrop``); the recycling exists only inside the LLM. This module is the schedule and the plan
(:meth:`SparseVLM.plan`); the in-LLM parts (raters, rater rows, v2's gravity, recycling) live next to it in
``vidcom2.methods._sparsevlm_llm``, and ``vidcom2.stages.in_llm`` runs the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidcom2.budget import count
from vidcom2.methods._sparsevlm_llm import (  # noqa: F401  (text_raters, recycle_sources, cluster_and_merge: re-exported)
    ClusterRecycler,
    RaterRows,
    cluster_and_merge,
    recycle_sources,
    recycled_count,
    text_raters,
)
from vidcom2.methods.fastv import budget_hparams, check_budget, select
from vidcom2.registry import register
from vidcom2.types import MethodInfo, Plan, Selection, Stage

LAYERS = (2, 6, 15)
# score.py sparse_token_list_192, relative to the last stage: v1 [300, 200, 110], v2 [300, 200, 118]
SHAPES = {1: (300 / 110, 200 / 110, 1.0), 2: (300 / 118, 200 / 118, 1.0)}
VERSIONS = (1, 2)
BUDGET_MODES = ("final", "layer_avg")


def _last_stage_keep(target: int, entering: int, recycle: bool) -> int:
    """Top-k of the last stage so that kept + recycled = ``target`` (largest such k; k + recycled_count(n - k) is
    non-decreasing in k by steps of 0 or 1, so every value in ``[1 + recycled_count(n - 1), n]`` is reached)."""
    if not recycle or target >= entering:
        return min(target, entering)
    for k in range(target, 0, -1):
        if k + recycled_count(entering - k) <= target:
            return k
    return 1


def stage_counts(
    fraction: float,
    num_visual: int,
    stages: int,
    recycle: bool,
    keeps: list[int] | None = None,
    version: int = 1,
) -> list[tuple[int, int]]:
    """``[(top-k kept, recycled centres), ...]`` per stage for the final fraction ``fraction`` of ``num_visual``,
    or for explicit top-k counts ``keeps`` (e.g. the official ``[300, 200, 110]``; then ``fraction`` is unused).
    More or fewer than 3 stages: the shape's last ``stages`` entries, or its first entry repeated in front."""
    base = SHAPES[version]
    shape = base[-stages:] if stages <= len(base) else (base[0],) * (stages - len(base)) + base
    out, current = [], num_visual
    for s, factor in enumerate(shape):
        if keeps is not None:
            k = int(keeps[s])
        elif s == stages - 1:
            k = _last_stage_keep(count(fraction, num_visual), current, recycle)
        else:
            k = count(min(1.0, fraction * factor), num_visual)
        if k >= current:  # nothing to drop at this stage
            out.append((current, 0))
            continue
        c = recycled_count(current - k) if recycle else 0
        out.append((k, c))
        current = k + c
    return out


def layer_counts(
    fraction: float, num_visual: int, num_layers: int, layers, recycle: bool, keeps=None, version: int = 1
) -> list[int]:
    """Visual tokens each decoder layer processes in prefill, ``[L]`` (layer ``l`` in ``layers`` still sees the
    unpruned set; the reduced set enters ``l + 1``). ``keeps``: explicit top-k counts, see :func:`stage_counts`."""
    counts, current = [], num_visual
    per_stage = stage_counts(fraction, num_visual, len(layers), recycle, keeps, version)
    after = dict(zip([loc + 1 for loc in layers], per_stage))
    for layer in range(num_layers):
        if layer in after:
            k, c = after[layer]
            current = k + c
        counts.append(current)
    return counts


def check_layers(layers, num_layers: int) -> tuple[int, ...]:
    layers = tuple(int(x) for x in layers)
    if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0 or layers[-1] > num_layers - 2:
        raise ValueError(
            f"sparsevlm: layers (pruning_loc) must be strictly increasing within [0, {num_layers - 2}] for a "
            f"{num_layers}-layer LLM (the output of each is pruned), got {layers}"
        )
    return layers


def solve_fraction(
    retention_ratio: float,
    num_visual: int,
    num_layers: int,
    layers,
    budget_mode: str,
    recycle: bool,
    version: int = 1,
) -> float:
    """The final-stage fraction ``a`` for ``retention_ratio`` under ``budget_mode``."""
    if budget_mode == "final":
        return float(retention_ratio)
    if budget_mode != "layer_avg":
        raise ValueError(f"sparsevlm: budget_mode must be one of {BUDGET_MODES}, got {budget_mode!r}")

    def avg(a):
        counts = layer_counts(a, num_visual, num_layers, layers, recycle, version=version)
        return sum(counts) / (num_layers * num_visual)

    lo, hi = 1e-12, 1.0
    floor = avg(lo)
    if retention_ratio < floor:
        raise ValueError(
            f"sparsevlm: layer-averaged retention {retention_ratio} is below the floor {floor:.4f} (layers 0..{layers[0]} "
            f"see all {num_visual} visual tokens); set earlier pruning layers (layers=...) or use budget_mode='final'"
        )
    if avg(hi) <= retention_ratio:
        return hi
    for _ in range(60):  # avg is non-decreasing in a: the largest a with avg(a) <= r
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if avg(mid) <= retention_ratio else (lo, mid)
    return lo


def recycles(method) -> bool:
    """Whether a ``sparsevlm`` instance recycles: ``recycle`` if given, else v1 yes and v2 no (official)."""
    if method.version not in VERSIONS:
        raise ValueError(f"sparsevlm: version must be one of {VERSIONS}, got {method.version!r}")
    if method.recycle is None:
        return method.version == 1
    if method.recycle and method.version == 2:
        raise ValueError("sparsevlm: version 2 (SparseVLM+) does not recycle; leave recycle unset or False")
    return bool(method.recycle)


@register
@dataclass(frozen=True)
class SparseVLM:
    """layers: ``pruning_loc`` (their outputs are pruned). recycle: v1's cluster recycling (None: v1 on, v2 off;
    False = drop only). version: 1 (official default) or 2 (SparseVLM+: gravity-corrected scores from the
    ``heads`` heads with the largest rater->visual mass, no recycling, original positions).
    num_layers: LLM depth (the adapter passes the real one; on tensors only ``layer_avg`` needs it).
    budget: ``global`` (official) or per-frame ``uniform`` / ``fca`` (paper Figure 5 "SparseVLM + FCA"; our reading,
    as for FastV: frame budgets from FCA on the pre-LLM features at each stage's keep fraction, the raters' scores
    inside each frame; needs ``recycle=False``, recycled centres belong to no frame)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="sparsevlm",
        stage="in_llm",
        paper="SparseVLM (ICML 2025, arXiv 2410.04417)",
        code="github.com/Gumpest/SparseVLMs llava/model/language_model/modelling_sparse_llama.py",
        needs=("scores",),
        stochastic=True,  # DPC-kNN density tie-break noise (seeded)
    )
    layers: tuple[int, ...] = LAYERS
    budget_mode: str = "final"
    recycle: bool | None = None
    version: int = 1
    heads: int = 14
    num_layers: int | None = None
    budget: str = "global"

    def __post_init__(self):
        check_budget("sparsevlm", self.budget)

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        if self.budget_mode not in BUDGET_MODES:
            raise ValueError(
                f"sparsevlm: budget_mode must be one of {BUDGET_MODES}, got {self.budget_mode!r}"
            )
        recycle = recycles(self)
        stats = {"budget_mode": self.budget_mode, "recycle": recycle, "version": self.version}
        if self.num_layers is None:
            if self.budget_mode == "layer_avg":
                raise ValueError("sparsevlm budget_mode='layer_avg' needs num_layers (the LLM depth)")
            fraction = float(retention_ratio)
        else:
            f, n = scores.shape
            layers = check_layers(self.layers, self.num_layers)
            fraction = solve_fraction(
                retention_ratio, f * n, self.num_layers, layers, self.budget_mode, recycle, self.version
            )
            stats["layer_counts"] = layer_counts(
                fraction, f * n, self.num_layers, layers, recycle, version=self.version
            )
        stats["fraction"] = fraction
        stats["budget"] = self.budget
        return Selection(keep=select(features, scores, fraction, self.budget), stats=stats)

    def plan(self, retention_ratio: float, num_layers: int, num_visual: int, *, mrope: bool) -> Plan:
        """One stage after each pruning layer that drops something (a stage that drops nothing does not exist: no
        renumbering either, keep-all is the unhooked model); scored by :class:`RaterRows`; v1 recycles
        (:class:`ClusterRecycler`) and renumbers contiguously (official: position ids truncated to the new length),
        v2 keeps the original position ids (official ``USE_VERSION=2_0``)."""
        layers, recycle = check_layers(self.layers, num_layers), recycles(self)
        if recycle and self.budget != "global":
            raise ValueError(
                f"sparsevlm budget={self.budget!r} selects per frame; recycled cluster centres belong to no frame: "
                "set recycle=false (method.recycle=false)"
            )
        frac = solve_fraction(retention_ratio, num_visual, num_layers, layers, self.budget_mode, recycle, self.version)
        stages, entering = [], num_visual
        for loc, (k, c) in zip(layers, stage_counts(frac, num_visual, len(layers), recycle, version=self.version)):
            if k < entering:
                stages.append(Stage(loc + 1, k, c, fraction=k / num_visual))
            entering = k + c
        hp = {"fraction": frac, "layers": list(layers), "recycle": recycle, "version": self.version,
              **budget_hparams(self.budget)}  # fmt: skip
        if self.version == 2:
            hp["heads"] = int(self.heads)
        mode = "contiguous" if self.version == 1 else "original"
        return Plan("sparsevlm", tuple(stages), RaterRows(self.version, int(self.heads)), mode, hp,
                    budget=self.budget, recycle=ClusterRecycler() if recycle else None)  # fmt: skip
