"""Hook (b): in-LLM visual-token pruning during prefill (FastV, PDrop, SparseVLM) with scoped hooks, no eager
attention.

Recipe: shared/spec/hooks_transformers.md section 5 (transformers 5.23). The text model computes cos/sin and
the causal mask once and hands them to every decoder layer, so pruning needs only:

- a registered attention function (``AttentionInterface`` + ``AttentionMaskInterface`` under a new name, e.g.
  ``vidcom2_in_llm_sdpa``), switched on the **text config only** and restored in ``finally``. It wraps the real
  backend and, for FastV, computes only the last prompt query's attention row at layer ``K-1`` during prefill
  (``[kv_len]`` floats; never a full attention matrix, never a second pass of the layer);
- forward pre-hooks on the decoder layers from the first pruning layer on, which slice the hidden states, cos/sin,
  text position ids and a 4-D mask (prefill), and during decode gather mask columns or renumber positions;
- for Qwen3-VL with a pruning layer before the last DeepStack layer, an instance-scoped wrap of
  ``_deepstack_process`` that gathers ``visual_pos_masks`` and the DeepStack rows with the kept indices (5.4).

Layers below the first pruning layer keep the full KV cache; deeper layers keep only the survivors, so the
``DynamicCache`` holds per-layer lengths (``StaticCache`` is refused). Batch size 1 only (keep counts would differ
between rows). FastV keeps original positions; PDrop renumbers contiguously (official) on 1-D RoPE models and, by
default, keeps the original M-RoPE positions on Qwen models (PDrop has no official M-RoPE code; ``position_mode``
records the choice). PDrop's score row is recomputed before stage layer ``l`` with that layer's
``input_layernorm``, ``q_proj`` (last token only), ``k_proj`` (+ Qwen3 ``q_norm``/``k_norm``) and RoPE, as the
official code does (PDrop#17): one extra k projection per stage, no second pass of any layer.
SparseVLM: the text raters are chosen once per prefill from the input embeddings; inside the attention of each
pruning layer only the raters' query rows are computed (``[Hq, |raters|, kv_len]``, causal per row); the layer's
output is pruned at the next layer's pre-hook, and v1's recycled cluster centres (new tokens, ids ``>= prompt_len``
in :class:`PruneState`) are inserted after the kept visual tokens; v1 renumbers positions contiguously, v2 divides
the rows by a RoPE gravity term, averages its top heads only and keeps original positions (``_sparsevlm_llm``).

The registered names stay in transformers' interfaces after exit (stateless dispatchers); the per-call state
lives in ``_ACTIVE`` only while a context is open.

``mode="mask"`` is the reference used by the equivalence tests: the same scores and selections, but the full
sequence runs through every layer and the dropped columns are hidden by a 4-D mask from the pruning layer on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from vidcom2.adapters import _sparsevlm_llm as svl
from vidcom2.budget import check_ratio, count, counts, fca_ratios, keep_highest
from vidcom2.similarity import gaussian_scores

NAME_PREFIX = "vidcom2_in_llm_"
# id(attention module) -> callback(module, query, key, attention_mask, kwargs). Filled only inside `pruning`.
_ACTIVE: dict[int, Callable] = {}
# id(attention module) -> gather(module, key, value, attention_mask) -> (key, value, attention_mask): what the backend
# reads this call (DyCoke stage 2's per-step cache selection, vidcom2.adapters._dycoke_decode). Same lifetime.
_GATHER: dict[int, Callable] = {}
_DISPATCHERS: dict[str, Callable] = {}

MODES = ("prune", "mask")
POSITION_MODES = ("original", "contiguous")


# ----------------------------------------------------------------------------------------------------------------
# Registered attention function: a stateless dispatcher per wrapped backend.


def _dispatcher(backend: str) -> Callable:
    """The attention function registered as ``NAME_PREFIX + backend``: runs the module's callback (if a pruning
    context registered one for this module) on the post-RoPE q/k, then the module's gather (if any: the keys,
    values and mask columns the backend reads; the cache itself is untouched), then the real backend."""
    if backend in _DISPATCHERS:
        return _DISPATCHERS[backend]
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(module, query, key, value, attention_mask, **kwargs):
        callback = _ACTIVE.get(id(module))
        if callback is not None:
            callback(module, query, key, attention_mask, kwargs)
        gather = _GATHER.get(id(module))
        if gather is not None:
            key, value, attention_mask = gather(module, key, value, attention_mask)
        if backend == "eager":
            # eager is not in the interface; each modeling file has its own (identical) eager function
            real = sys.modules[type(module).__module__].eager_attention_forward
        else:
            real = ALL_ATTENTION_FUNCTIONS[backend]
        return real(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = f"{NAME_PREFIX}{backend}"
    _DISPATCHERS[backend] = attention
    return attention


def _register(backend: str) -> str:
    """Register (idempotently) the dispatcher and the backend's mask function under a new name; return the name.

    Both registrations are required: with an unknown name ``create_causal_mask`` returns ``None``. The name keeps
    ``flash`` in it for flash backends because transformers branches on ``"flash" in _attn_implementation``.
    The registered entries are stateless (the per-call state lives in ``_ACTIVE`` and is removed on exit).
    """
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    if backend != "eager" and backend not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"in-LLM pruning cannot wrap attention implementation {backend!r} (not registered)")
    if backend not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"in-LLM pruning cannot wrap attention implementation {backend!r}: it has no mask function; "
            "load the model with attn_implementation='sdpa' (CPU default) or 'flash_attention_2'"
        )
    name = NAME_PREFIX + backend
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _dispatcher(backend))
    if name not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[backend])
    return name


# ----------------------------------------------------------------------------------------------------------------
# Plans: what to prune where.


@dataclass(frozen=True)
class Stage:
    """Before decoder layer ``layer`` runs (prefill), keep ``keep`` visual tokens (of the current ones) and insert
    ``recycled`` new visual tokens after them (SparseVLM v1's cluster centres; 0 for the other methods)."""

    layer: int
    keep: int
    recycled: int = 0
    fraction: float | None = field(default=None, compare=False)  # keep / N_vis as a ratio (per-frame budgets)


@dataclass(frozen=True)
class Plan:
    """score: ``"attention_row"`` (FastV: last query's row inside layer ``stage.layer - 1``'s attention),
    ``"recompute"`` (PDrop: the row recomputed with layer ``stage.layer``'s norm and q/k projections) or
    ``"rater_rows"`` (SparseVLM: the text raters' rows inside layer ``stage.layer - 1``'s attention, averaged).
    hparams ``recycle=True`` (SparseVLM v1): pruned tokens are clustered into ``stage.recycled`` new tokens."""

    method: str
    stages: tuple[Stage, ...]
    score: str
    position_mode: str
    hparams: dict = field(default_factory=dict)


def plan_for(method, retention_ratio: float, num_layers: int, num_visual: int, *, mrope: bool) -> Plan:
    """The pruning plan of an in-LLM method instance for a model with ``num_layers`` decoder layers."""
    r = check_ratio(retention_ratio)
    name = method.info.name
    given = getattr(method, "num_layers", None)
    if given is not None and int(given) != num_layers:
        raise ValueError(
            f"{name}: num_layers={given} but the model has {num_layers} decoder layers; leave it None"
        )
    if name == "fastv":
        from vidcom2.methods.fastv import keep_fraction

        k = int(method.prune_layer)
        if not 1 <= k < num_layers:
            raise ValueError(
                f"fastv: prune_layer must be in [1, {num_layers - 1}] for a {num_layers}-layer LLM, got {k}"
            )
        rho = keep_fraction(r, num_layers, k, method.budget_mode)
        hp = {"rho": rho, **_budget_hp(method)}
        return Plan("fastv", (Stage(k, count(rho, num_visual), fraction=rho),), "attention_row", "original", hp)
    if name == "pdrop":
        from vidcom2.methods.pdrop import schedule, stage_counts

        sched = schedule(r, num_layers, method.layers, method.budget_mode)
        kept = stage_counts(sched, num_visual, method.counting)
        stages = tuple(Stage(int(layer), k) for (layer, _), k in zip(sched, kept))
        mode = "original" if mrope else "contiguous"  # = position_mode_for(method, text_model)
        return Plan("pdrop", stages, "recompute", mode, {"schedule": [(int(a), float(b)) for a, b in sched]})
    if name == "sparsevlm":
        from vidcom2.methods import sparsevlm as sv

        layers, recycle = sv.check_layers(method.layers, num_layers), sv.recycles(method)
        if recycle and getattr(method, "budget", "global") != "global":
            raise ValueError(
                f"sparsevlm budget={method.budget!r} selects per frame; recycled cluster centres belong to no frame: "
                "set recycle=false (method.recycle=false)"
            )
        frac = sv.solve_fraction(
            r, num_visual, num_layers, layers, method.budget_mode, recycle, method.version
        )
        counts = sv.stage_counts(frac, num_visual, len(layers), recycle, version=method.version)
        # a stage that drops nothing does not exist (no renumbering either: keep-all is the unhooked model)
        stages, entering = [], num_visual
        for loc, (k, c) in zip(layers, counts):
            if k < entering:
                stages.append(Stage(loc + 1, k, c, fraction=k / num_visual))
            entering = k + c
        stages = tuple(stages)
        hp = {"fraction": frac, "layers": list(layers), "recycle": recycle, "version": method.version,
              **_budget_hp(method)}  # fmt: skip
        if method.version == 2:
            hp["heads"] = int(method.heads)
        mode = "contiguous" if method.version == 1 else "original"  # v2 keeps the position ids (official)
        return Plan("sparsevlm", stages, "rater_rows", mode, hp)
    raise ValueError(
        f"no in-LLM pruning for method {name!r}; in-LLM methods here: 'fastv', 'pdrop', 'sparsevlm'"
    )


def _budget_hp(method) -> dict:
    """``{"budget": ...}`` when the method selects per frame (``uniform``/``fca``), else nothing (global top-k)."""
    budget = getattr(method, "budget", "global")
    return {} if budget == "global" else {"budget": budget}


def frame_keep(row: torch.Tensor, frame: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """Bool ``[n]``: in each frame ``t`` the ``min(budgets[t], available)`` highest ``row`` entries, where
    ``frame [n]`` is each candidate's frame index (the per-frame selection of ``budget=uniform|fca``)."""
    chosen = torch.zeros(row.shape[0], dtype=torch.bool, device=row.device)
    for t in range(int(budgets.numel())):
        idx = (frame == t).nonzero().squeeze(1)
        if idx.numel():
            chosen[idx] = _top(row[idx], min(int(budgets[t]), idx.numel()))
    return chosen


def position_mode_for(method, text_model) -> str:
    """The position rule an in-LLM method uses on this text model (for records): FastV keeps ``original``
    positions; PDrop renumbers ``contiguous`` on 1-D RoPE models and keeps ``original`` M-RoPE positions;
    SparseVLM v1 renumbers ``contiguous`` (official: position ids truncated to the new length) everywhere, v2 keeps
    the ``original`` ones (official ``USE_VERSION=2_0``)."""
    if method.info.name == "sparsevlm":
        return "contiguous" if method.version == 1 else "original"
    if method.info.name == "pdrop" and not _is_mrope(text_model):
        return "contiguous"
    return "original"


def layer_counts(plan: Plan, num_layers: int, num_visual: int) -> list[int]:
    """Visual tokens processed by each decoder layer during prefill, ``[L]`` ints (baselines.md 1)."""
    counts, current, stages = [], num_visual, {s.layer: s.keep + s.recycled for s in plan.stages}
    for layer in range(num_layers):
        current = stages.get(layer, current)
        counts.append(current)
    return counts


# ----------------------------------------------------------------------------------------------------------------
# Small tensor helpers.


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Standard rotate-half RoPE; ``x [B, H, n, d]``, ``cos/sin [B, n, d]`` (M-RoPE already composed)."""
    return x * cos.unsqueeze(1) + _rotate_half(x) * sin.unsqueeze(1)


def last_row(
    query: torch.Tensor, key: torch.Tensor, scaling: float, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention probabilities of the last query, mean over heads: ``[kv_len]`` float32.

    query ``[1, Hq, q_len, d]`` and key ``[1, Hkv, kv_len, d]`` post-RoPE, before GQA repetition; kv head ``j``
    serves query heads ``j*r .. j*r+r-1`` (transformers' ``repeat_kv``; grouped here instead of repeated, so no
    ``[Hq, kv_len, d]`` copy exists). ``mask``: optional mask of the call, 4-D ``[1, 1, q, kv]`` (bool: True =
    attend; float: additive; its last query row is applied) or a 2-D ``[1, kv]`` 0/1 padding mask (flash).
    """
    b, hq, _, d = query.shape
    hkv, kv = key.shape[1], key.shape[2]
    q = query[:, :, -1:, :].float().reshape(b, hkv, hq // hkv, d)
    logits = (q @ key.float().transpose(-1, -2)) * scaling  # [1, Hkv, r, kv_len]
    logits = logits.reshape(b, hq, 1, kv)
    if mask is not None:
        m = mask[:, None, None, -kv:].bool() if mask.dim() == 2 else mask[:, :, -1:, -kv:]
        logits = logits.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else logits + m.float()
    return torch.softmax(logits, dim=-1).mean(dim=1).reshape(-1)


def _take(mask: torch.Tensor | None, rows: torch.Tensor | None, cols: torch.Tensor) -> torch.Tensor | None:
    """Select query ``rows`` (None: all) and key ``cols`` of a 4-D ``[B, 1, q, kv]`` mask, or ``cols`` of a 2-D
    ``[B, kv]`` padding mask (flash backends)."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask[:, cols]
    if rows is not None:
        mask = mask[:, :, rows]
    return mask[:, :, :, cols]


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[n]``: the ``k`` highest scores (ties: lower index first), the library's rule."""
    return keep_highest(scores.float().view(1, -1), torch.tensor([k])).view(-1)


# ----------------------------------------------------------------------------------------------------------------
# The pruning context.


@dataclass
class PruneState:
    """What one pruning context saw. ``rows``: layer -> score row over the sequence entering that stage
    (``[n]`` float32); ``keep``: layer -> kept original prompt indices ``[n']`` (sorted) from that layer on
    (SparseVLM recycling: ids ``>= prompt_len`` are the recycled tokens, in sequence order);
    ``visual_per_layer``: visual tokens each layer processed in the last prefill. SparseVLM: ``raters`` (prompt
    indices of the text raters) and ``recycled``: layer -> dict(sources = ids merged, centres ``[c, D]``)."""

    plan: Plan
    num_layers: int
    position_mode: str = "original"
    mode: str = "prune"
    rows: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)
    visual_per_layer: list = field(default_factory=list)
    prefills: int = 0
    # per-prefill working state
    visual: torch.Tensor | None = None  # bool [L] candidates of this forward
    phase: str = "idle"
    current: torch.Tensor | None = None  # original indices of the sequence the last layer processed
    # layer -> original indices used by that layer (>= first stage)
    layer_keep: dict = field(default_factory=dict)
    cos_sin: dict = field(default_factory=dict)  # stage layer -> (cos, sin) of its survivors (prefill)
    prompt_len: int = 0
    raters: torch.Tensor | None = None
    recycled: dict = field(default_factory=dict)
    generator: torch.Generator | None = None
    next_id: int = 0
    frame_of: torch.Tensor | None = None  # per-frame budgets: frame index of every prompt position (-1: none)
    frame_s_video: torch.Tensor | None = None  # FCA: [F, N] similarities of the pre-LLM features to the video centre
    scored_cos_sin: dict = field(default_factory=dict)  # SparseVLM v2: stage layer -> (cos, sin) of layer - 1


def _is_mrope(text_model) -> bool:
    rope = getattr(text_model.config, "rope_parameters", None) or {}
    return "mrope_section" in rope


def _check_cache(past) -> None:
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if past is None:
        return
    if not isinstance(past, DynamicCache) or not all(type(layer) is DynamicLayer for layer in past.layers):
        raise ValueError(
            f"in-LLM pruning needs a DynamicCache of full-attention DynamicLayers (layers hold different lengths "
            f"after pruning); got {type(past).__name__}. Do not pass cache_implementation='static' or a StaticCache."
        )


@contextmanager
def pruning(
    text_model,
    layers,
    visual: torch.Tensor,
    plan: Plan,
    *,
    mode: str = "prune",
    position_mode: str | None = None,
    text_start: int | None = None,
    seed: int = 0,
    frame_columns: torch.Tensor | None = None,
) -> Iterator[PruneState]:
    """Attach in-LLM pruning to ``text_model`` for the duration of the block; everything is undone on exit.

    visual: bool ``[L]`` (or ``[1, L]``) prompt positions that are pruning candidates (video tokens without
        layout tokens such as LLaVA's newline, which is always kept).
    layers: the decoder layers (``text_model.layers``). mode: ``prune`` (real slicing) or ``mask`` (reference).
    position_mode: ``original`` or ``contiguous``; default ``plan.position_mode``.
    text_start: SparseVLM: the first prompt position after the video (raters are chosen among the positions from
        there on); default one after the last candidate. seed: seeds SparseVLM's clustering noise (per prefill).
    frame_columns: LongTensor ``[F, N]`` prompt columns of the video's frames; needed when the plan selects per
        frame (``plan.hparams["budget"]``): ``uniform`` keeps ``count(fraction, N)`` per frame, ``fca`` the FCA
        budgets of VidCom2 computed from the pre-LLM features (the text model's ``inputs_embeds`` at those columns),
        each with the method's own score inside the frame.
    Yields a :class:`PruneState` (rows, kept indices, per-layer counts) filled during the forward passes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "mask" and "flash" in str(text_model.config._attn_implementation):
        raise ValueError("mode='mask' (the reference) needs a 4-D mask: run it with sdpa or eager attention")
    position_mode = position_mode or plan.position_mode
    if position_mode not in POSITION_MODES:
        raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {position_mode!r}")
    visual = torch.as_tensor(visual).reshape(-1).bool()
    num_layers = len(layers)
    # a plan without stages (SparseVLM keeping everything) attaches only the bookkeeping hook
    first = min((s.layer for s in plan.stages), default=num_layers)
    stages = {s.layer: s for s in plan.stages}
    if not 1 <= first or max(stages, default=0) >= num_layers:
        raise ValueError(f"pruning layers {sorted(stages)} must lie in [1, {num_layers - 1}]")
    recycle = bool(plan.hparams.get("recycle"))
    version = plan.hparams.get("version", 1)
    if recycle and mode == "mask":
        raise ValueError(
            "mode='mask' cannot reproduce SparseVLM's recycled (new) tokens: use recycle=False for the reference"
        )
    if recycle and position_mode != "contiguous":
        raise ValueError(
            "SparseVLM recycling inserts new tokens, which have no original position: use 'contiguous'"
        )
    state = PruneState(plan=plan, num_layers=num_layers, position_mode=position_mode, mode=mode)
    per_frame = plan.hparams.get("budget")
    if per_frame is not None and frame_columns is None:
        raise ValueError(f"{plan.method} budget={per_frame!r} selects per frame: pass frame_columns (the video's [F, N] columns)")
    mrope = _is_mrope(text_model)
    config = text_model.config
    old_impl = config._attn_implementation
    handles = []
    had_deepstack = "_deepstack_process" in vars(text_model)

    def on_text_forward(module, args, kwargs):
        past = kwargs.get("past_key_values")
        _check_cache(past)
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise ValueError(
                "in-LLM pruning expects the text model to be called with inputs_embeds (the VLM path)"
            )
        if embeds.shape[0] != 1:
            raise ValueError(
                f"in-LLM pruning supports batch size 1 only (got {embeds.shape[0]}); run one sample at a time"
            )
        if past is not None and past.get_seq_length() > 0:
            state.phase = "decode"
            return None
        n = embeds.shape[1]
        if n < visual.numel():
            raise ValueError(f"prompt of {n} tokens is shorter than the visual mask ({visual.numel()})")
        # without a cache every forward is a prefill of prompt + generated tokens (never candidates)
        state.visual = torch.cat([visual, visual.new_zeros(n - visual.numel())]).to(embeds.device)
        state.phase, state.prompt_len, state.prefills = "prefill", n, state.prefills + 1
        state.current = torch.arange(n, device=embeds.device)
        state.layer_keep, state.cos_sin, state.rows, state.keep = {}, {}, {}, {}
        n_vis = int(state.visual.sum())
        state.visual_per_layer = (
            layer_counts(plan, num_layers, n_vis) if mode == "prune" else [n_vis] * num_layers
        )
        for s in plan.stages:
            if s.keep > n_vis:
                raise ValueError(
                    f"{plan.method}: stage at layer {s.layer} keeps {s.keep} > {n_vis} visual tokens"
                )
        if plan.score == "rater_rows":
            start = text_start if text_start is not None else int(visual.nonzero().max()) + 1
            # prompt tokens only: without a cache, later forwards also carry generated tokens (never raters)
            state.raters = svl.raters(embeds[0], state.visual, start, visual.numel())
            state.generator = torch.Generator().manual_seed(int(seed))
            state.recycled, state.next_id = {}, n
        if per_frame is not None:
            cols = frame_columns.to(embeds.device)
            state.frame_of = torch.full((n,), -1, dtype=torch.long, device=embeds.device)
            state.frame_of[cols.reshape(-1)] = torch.arange(cols.shape[0], device=embeds.device).repeat_interleave(cols.shape[1])
            if per_frame == "fca":
                state.frame_s_video = gaussian_scores(embeds[0, cols])[0]
        return None

    def on_attention(stage_layer):
        def callback(module, query, key, attention_mask, kwargs):
            # FastV: the last prompt query's row at layer K-1, prefill only (O(kv_len) memory).
            if state.phase == "prefill" and query.shape[2] > 1:
                scaling = kwargs.get("scaling") or module.scaling
                state.rows[stage_layer] = last_row(query, key, scaling, attention_mask)

        return callback

    def on_rater_attention(stage_layer):
        def callback(module, query, key, attention_mask, kwargs):
            # SparseVLM: only the raters' rows of layer `stage_layer - 1`, prefill only (O(|raters| * kv_len)).
            if state.phase != "prefill" or query.shape[2] == 1:
                return
            scaling = kwargs.get("scaling") or module.scaling
            rows, vis = state.raters, state.visual
            if mode == "prune":
                rows = torch.isin(state.current, state.raters).nonzero().squeeze(1)
                vis = state.visual[state.current]
            extra = {}
            if version == 2:  # gravity at this layer's positions, heads with the most rater->visual mass
                cos, sin = state.scored_cos_sin[stage_layer]
                extra = dict(
                    gravity_rows=svl.gravity(cos, sin, rows), visual=vis, heads=plan.hparams["heads"]
                )
            rows = rows.to(query.device)
            state.rows[stage_layer] = svl.rater_rows(query, key, rows, scaling, attention_mask, **extra)

        return callback

    def store_positions(stage_layer):
        def hook(module, args, kwargs):  # v2's gravity needs the cos/sin this layer really uses
            if state.phase == "prefill":
                state.scored_cos_sin[stage_layer] = kwargs["position_embeddings"]

        return hook

    def recompute_row(layer_idx, hidden, cos, sin, mask) -> torch.Tensor:
        # PDrop: layer l's own input_layernorm / q_proj / k_proj (+ q_norm/k_norm) and RoPE at the current positions.
        layer = layers[layer_idx]
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        d = attn.head_dim
        q = attn.q_proj(x[:, -1:]).view(1, 1, -1, d)
        k = attn.k_proj(x).view(1, x.shape[1], -1, d)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        q = _rope(q.transpose(1, 2), cos[:, -1:], sin[:, -1:])
        k = _rope(k.transpose(1, 2), cos, sin)
        return last_row(q, k, attn.scaling, mask)

    def mask_mode_mask(existing, keep_bool, q_len, kv_len, device):
        # Reference: hide dropped key columns (the diagonal stays so dropped query rows never see an empty row).
        cols = torch.ones(kv_len, dtype=torch.bool, device=device)
        cols[: keep_bool.numel()] = keep_bool
        q_pos = torch.arange(kv_len - q_len, kv_len, device=device).view(-1, 1)
        allowed = (torch.arange(kv_len, device=device).view(1, -1) <= q_pos) & (
            cols.view(1, -1) | (torch.arange(kv_len, device=device).view(1, -1) == q_pos)
        )
        allowed = allowed.view(1, 1, q_len, kv_len)
        if existing is None:
            return allowed
        if existing.dtype == torch.bool:
            return existing & allowed
        return existing.masked_fill(~allowed, torch.finfo(existing.dtype).min)

    def on_layer(layer_idx):
        def hook(module, args, kwargs):
            if state.phase == "prefill":
                return prefill(layer_idx, args, kwargs)
            if state.phase == "decode":
                return decode(layer_idx, args, kwargs)
            return None

        return hook

    def stage_budgets(stage: Stage) -> torch.Tensor:
        frames, n = frame_columns.shape
        if per_frame == "fca":
            return counts(fca_ratios(state.frame_s_video, stage.fraction), n)
        return torch.full((frames,), count(stage.fraction, n), dtype=torch.long)

    def prefill(layer_idx, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        cos, sin = kwargs["position_embeddings"]
        local = None  # indices into the incoming (prune-mode) sequence when this layer drops tokens
        if layer_idx in stages:
            cur = state.current
            if plan.score in ("attention_row", "rater_rows"):
                row = state.rows.get(layer_idx)
                if row is None:
                    raise RuntimeError(
                        f"{plan.method}: no attention row was recorded at layer {layer_idx - 1}"
                    )
                row = row[cur] if mode == "mask" else row
            else:
                earlier = [layer for layer in stages if layer < layer_idx]
                c, s = state.cos_sin[max(earlier)] if earlier else (cos[:, cur], sin[:, cur])
                mask = kwargs.get("attention_mask")  # the parent's full-prompt mask
                mask = _take(mask, cur, cur)
                seq = cur if mode == "mask" else slice(None)
                row = recompute_row(layer_idx, hidden[:, seq], c, s, mask)
                state.rows[layer_idx] = row
            vis_cur = state.visual[cur]
            chosen = torch.zeros_like(vis_cur)
            if per_frame is None:
                chosen[vis_cur] = _top(row[vis_cur], stages[layer_idx].keep)
            else:
                chosen[vis_cur] = frame_keep(row[vis_cur], state.frame_of[cur][vis_cur], stage_budgets(stages[layer_idx]))
            survive = ~vis_cur | chosen
            local = survive.nonzero().squeeze(1)
            state.current = cur[survive]
            if recycle:
                stage = stages[layer_idx]
                hidden, state.current = svl.recycle(state, stage, hidden, cur, row, vis_cur, chosen, survive)
                local = None  # already applied
            state.keep[layer_idx] = state.current
            if per_frame is not None and mode == "prune":  # per-frame budgets: the counts are data-dependent
                kept = int(state.visual[state.current[state.current < state.prompt_len]].sum())
                kept += int((state.current >= state.prompt_len).sum())
                state.visual_per_layer[layer_idx:] = [kept] * (num_layers - layer_idx)
            # cos/sin of the survivors, computed once per stage (the parent hands every layer the same tensors)
            if position_mode == "contiguous":
                n = state.current.numel()
                pos = torch.arange(n, device=hidden.device)
                pos = pos.view(1, 1, -1).expand(3, 1, -1) if mrope else pos.view(1, -1)
                state.cos_sin[layer_idx] = text_model.rotary_emb(hidden, pos)
            else:
                state.cos_sin[layer_idx] = (cos[:, state.current], sin[:, state.current])
        if layer_idx < first:
            return None
        keep = state.current
        state.layer_keep[layer_idx] = keep
        stage_layer = max(layer for layer in stages if layer <= layer_idx)
        if mode == "prune":
            if local is not None:
                hidden = hidden.index_select(1, local)
            kwargs["position_embeddings"] = state.cos_sin[stage_layer]
            if kwargs.get("position_ids") is not None:
                if position_mode == "contiguous":
                    kwargs["position_ids"] = torch.arange(keep.numel(), device=keep.device).view(1, -1)
                else:
                    kwargs["position_ids"] = kwargs["position_ids"][..., keep]
            if int(keep.max()) >= state.prompt_len:  # recycled tokens: no rows/columns in the parent's mask
                kwargs["attention_mask"] = svl.with_new_tokens(
                    kwargs.get("attention_mask"), keep, state.prompt_len
                )
            else:
                kwargs["attention_mask"] = _take(kwargs.get("attention_mask"), keep, keep)
        else:
            n = hidden.shape[1]
            kept_bool = torch.zeros(n, dtype=torch.bool, device=hidden.device)
            kept_bool[keep] = True
            if position_mode == "contiguous":
                # dropped tokens take the rank of the previous survivor (their values never reach a survivor)
                rank = (kept_bool.long().cumsum(0) - 1).clamp(min=0)
                pos = rank.view(1, 1, -1).expand(3, 1, -1) if mrope else rank.view(1, -1)
                kwargs["position_embeddings"] = text_model.rotary_emb(hidden, pos)
                if kwargs.get("position_ids") is not None:
                    kwargs["position_ids"] = rank.view(1, -1)
            kwargs["attention_mask"] = mask_mode_mask(
                kwargs.get("attention_mask"), kept_bool, n, n, hidden.device
            )
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        return args, kwargs

    def decode(layer_idx, args, kwargs):
        if layer_idx < first:
            return None
        keep = state.layer_keep[layer_idx]
        past = kwargs.get("past_key_values")
        hidden = args[0] if args else kwargs["hidden_states"]
        q_len = hidden.shape[1]
        cache_len = past.layers[layer_idx].get_seq_length() if past is not None else 0
        mask = kwargs.get("attention_mask")
        prompt_len = state.prompt_len
        if mode == "prune":
            if mask is not None:
                kv_full = mask.shape[-1]
                # recycled tokens (ids >= prompt_len) read the last prompt column: never padding
                old = torch.where(keep >= prompt_len, prompt_len - 1, keep)
                cols = torch.cat([old, torch.arange(prompt_len, kv_full, device=keep.device)])
                kwargs["attention_mask"] = _take(mask, None, cols)
        else:
            kv_full = cache_len + q_len
            kept_bool = torch.zeros(prompt_len, dtype=torch.bool, device=hidden.device)
            kept_bool[keep] = True
            kwargs["attention_mask"] = mask_mode_mask(mask, kept_bool, q_len, kv_full, hidden.device)
        if position_mode == "contiguous":
            dropped = prompt_len - keep.numel() if mode == "mask" else 0
            start = cache_len - dropped
            pos = torch.arange(start, start + q_len, device=hidden.device)
            pos3 = pos.view(1, 1, -1).expand(3, 1, -1) if mrope else pos.view(1, -1)
            kwargs["position_embeddings"] = text_model.rotary_emb(hidden, pos3)
            if kwargs.get("position_ids") is not None:
                kwargs["position_ids"] = pos.view(1, -1)
        return args, kwargs

    def deepstack(original):
        def wrapped(hidden_states, visual_pos_masks, visual_embeds):
            if state.phase == "prefill" and hidden_states.shape[1] != visual_pos_masks.shape[1]:
                keep = state.current
                full = visual_pos_masks.reshape(-1).to(keep.device)
                if int(keep.max()) >= full.numel():  # SparseVLM's recycled tokens get no DeepStack rows
                    full = torch.cat([full, full.new_zeros(int(keep.max()) + 1 - full.numel())])
                rows = (full.long().cumsum(0) - 1)[keep][full[keep]]
                return original(
                    hidden_states, full[keep].view(1, -1), visual_embeds[rows.to(visual_embeds.device)]
                )
            return original(hidden_states, visual_pos_masks, visual_embeds)

        return wrapped

    try:
        name = _register(old_impl)
        handles.append(text_model.register_forward_pre_hook(on_text_forward, with_kwargs=True))
        for layer_idx in range(first, num_layers):
            handles.append(layers[layer_idx].register_forward_pre_hook(on_layer(layer_idx), with_kwargs=True))
        if plan.score in ("attention_row", "rater_rows"):
            make = on_attention if plan.score == "attention_row" else on_rater_attention
            for s in plan.stages:
                _ACTIVE[id(layers[s.layer - 1].self_attn)] = make(s.layer)
        if version == 2:  # after the pruning hooks: sees the cos/sin they hand the scored layer
            for s in plan.stages:
                hook = store_positions(s.layer)
                handles.append(layers[s.layer - 1].register_forward_pre_hook(hook, with_kwargs=True))
        if hasattr(text_model, "_deepstack_process") and mode == "prune":
            text_model._deepstack_process = deepstack(text_model._deepstack_process)
        config._attn_implementation = name
        yield state
    finally:
        config._attn_implementation = old_impl
        for s in plan.stages:
            _ACTIVE.pop(id(layers[s.layer - 1].self_attn), None)
        for h in handles:
            h.remove()
        if not had_deepstack and "_deepstack_process" in vars(text_model):
            del text_model._deepstack_process
        state.phase = "idle"


# ----------------------------------------------------------------------------------------------------------------
# Entry point used by vidcom2.compress


_STATIC = ("static", "offloaded_static", "sliding_window", "hybrid", "mamba", "quantized", "offloaded_hybrid")


def candidates(adapter, model, inputs: dict, slots=None) -> torch.Tensor:
    """bool ``[L]``: the prompt columns that are pruning candidates (every video token of row 0 except the ones
    the adapter always keeps, e.g. LLaVA-OV's video newline).

    slots: the adapter's :class:`~vidcom2.adapters.base.VideoSlots` of this prompt (``Encoded.slots``); without
    them they are read from ``inputs`` (needs ``pixel_values_videos``). Slots whose columns do not all land on
    video tokens of ``inputs`` (another layout, e.g. before left padding was dropped), or no slots and no pixels:
    the adapter's video-token mask, minus LLaVA-OV's newline (the last video token of each video's run).
    """
    ids = inputs["input_ids"]
    video = adapter.visual_token_mask(model, inputs)[0]
    if slots is None and inputs.get("pixel_values_videos") is not None:
        slots = adapter.video_slots(model, inputs)
    if slots is not None:
        mask = torch.zeros(ids.shape[-1], dtype=torch.bool, device=ids.device)
        for slot in slots:
            cols = slot.columns.reshape(-1).to(ids.device)
            if int(cols.max()) >= mask.numel():
                break
            mask[cols] = True
        else:
            if not (mask & ~video).any():  # slots of this very prompt (not of a re-padded one)
                return mask
    mask = video.clone()
    if adapter.family == "llava_onevision":
        # fallback without slots: LLaVA-OV's one newline is the last video token of each video's run
        ends = mask & ~torch.cat([mask[1:], mask.new_zeros(1)])
        mask &= ~ends
    return mask


def check_generate_kwargs(model, kwargs: dict) -> None:
    """Refuse what in-LLM pruning cannot do: batches of more than one prompt and static/sliding caches."""
    ids = kwargs.get("input_ids")
    if ids is None:
        raise ValueError(
            "in-LLM pruning needs input_ids from the processor (inputs_embeds prompts are not supported)"
        )
    if ids.shape[0] != 1:
        raise ValueError(
            f"in-LLM pruning supports batch size 1 only, got {ids.shape[0]} prompts: keep counts "
            "would differ between rows; run one sample per generate() call"
        )
    impl = kwargs.get("cache_implementation") or getattr(
        model.generation_config, "cache_implementation", None
    )
    if impl in _STATIC:
        raise ValueError(
            f"in-LLM pruning needs a DynamicCache (layers hold different lengths after pruning); "
            f"cache_implementation={impl!r} is not supported: remove it"
        )
    _check_cache(kwargs.get("past_key_values"))


def generate(
    adapter,
    model,
    generate_fn,
    kwargs: dict,
    method,
    retention_ratio: float,
    recorder=None,
    *,
    slots=None,
    seed: int = 0,
    **options,
):
    """Run ``generate_fn(**kwargs)`` (the unwrapped ``model.generate``) with in-LLM pruning by ``method``.

    method: an in-LLM method instance (``fastv``, ``pdrop`` or ``sparsevlm`` from :func:`vidcom2.get_method`).
    recorder: optional :class:`vidcom2.measure.Recorder`; gets ``visual_tokens_out`` (visual tokens in the deepest
        layer, ``R_fin * N``) and ``visual_tokens_layer_avg`` (``sum_l n_l / L``) noted for the sample.
    slots: the prompt's video slots (``Encoded.slots``), see :func:`candidates`.
    seed: seeds SparseVLM's clustering noise (the same for every prefill).
    options: ``position_mode`` (``original``/``contiguous``; default: the method's rule) and ``mode``
        (``prune``, or ``mask`` for reference runs).
    Returns what ``generate_fn`` returns.
    """
    check_generate_kwargs(model, kwargs)
    text_model = adapter.text_model(model)
    layers = adapter.decoder_layers(model)
    visual = candidates(adapter, model, kwargs, slots)
    plan = plan_for(method, retention_ratio, len(layers), int(visual.sum()), mrope=_is_mrope(text_model))
    video = adapter.visual_token_mask(model, kwargs)[0]
    text_start = int(video.nonzero().max()) + 1 if video.any() else None  # SparseVLM raters: after the video
    frame_columns = None
    if plan.hparams.get("budget") is not None:
        found = slots if slots is not None else adapter.video_slots(model, kwargs)
        if len(found) != 1:
            raise ValueError(f"{plan.method} budget={plan.hparams['budget']!r} supports one video per prompt, got {len(found)}")
        frame_columns = found[0].columns
    with pruning(text_model, layers, visual, plan, text_start=text_start, seed=seed, frame_columns=frame_columns,
                 **options) as state:  # fmt: skip
        out = generate_fn(**kwargs)
    _record(recorder, state, int(visual.sum()))
    return out


def _record(recorder, state: PruneState, num_visual: int) -> None:
    if recorder is None:
        return
    per_layer = state.visual_per_layer
    if not per_layer:
        raise RuntimeError("in-LLM pruning saw no prefill: generate() never called the text model")
    recorder.note(
        visual_tokens_out=int(per_layer[-1]),
        visual_tokens_layer_avg=float(sum(per_layer)) / len(per_layer),
        visual_tokens_per_layer=[tuple(int(n) for n in per_layer)],  # one row: in-LLM pruning is batch size 1
    )
