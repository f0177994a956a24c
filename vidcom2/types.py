"""Small value types shared by the library: what a method declares (``MethodInfo``, its ``Plan`` of in-LLM /
decode stages) and what it returns (``Selection``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Where = Literal["pre_llm", "in_llm", "vision_encoder"]


@dataclass(frozen=True)
class MethodInfo:
    """What a method is, for registries, adapters and records.

    name: the registry key (snake_case, also the config and results-folder name).
    stage: where it acts: ``pre_llm`` (post-projector features), ``vision_encoder`` (needs scores from the vision
        tower) or ``in_llm`` (inside the decoder, needs attention rows).
    needs: extra tensors ``__call__`` requires besides the features: ``"scores"`` ([F, N] importance, higher =
        more important) and/or ``"keys"`` ([F, N, d] similarity metric).
    approximation: ``None`` for a faithful implementation, otherwise one sentence saying how it differs from the
        paper's method. Reports print it next to every number of the method.
    paper / code: where the method comes from.
    decode: the method may also act while decoding (DyCoke's stage 2): its ``plan()`` says how, per instance
        (a :class:`Plan` whose ``decode`` is ``None`` does nothing there).
    """

    name: str
    stage: Where
    paper: str
    code: str
    needs: tuple[str, ...] = ()
    approximation: str | None = None
    stochastic: bool = False
    decode: bool = False

    @property
    def acts(self) -> tuple[str, ...]:
        """Where the method acts, in call order: its ``stage``, then ``"decode"`` when it also acts while decoding."""
        return (self.stage, "decode") if self.decode else (self.stage,)

    @property
    def single_prompt(self) -> str | None:
        """Why ``generate`` must get one prompt at a time with this method (``None``: left-padded batches work):
        in-LLM pruning and decode-time KV pruning keep a different set per prompt, and their stages refuse batches."""
        if self.stage == "in_llm":
            return "in-LLM pruning runs one prompt per generate() (vidcom2 refuses batches)"
        if self.decode:
            return "decode-time KV pruning runs one prompt per generate() (vidcom2 refuses batches)"
        return None

    @property
    def needs_attention(self) -> bool:
        return "scores" in self.needs


@dataclass
class Selection:
    """What a method keeps of one video.

    keep: bool ``[F, N]``, True where a token is kept.
    features: optional ``[F, N, D]`` replacement features (merging methods write the merged feature into the slot of
        the token that represents it); ``None`` means "the input features, unchanged".
    order: optional ``[K]`` flat indices (``f * N + i``) of the kept tokens in the order they must appear in the
        sequence, for methods that do not keep positional order (DyCoke's TTM); ``None`` means ascending order.
    stats: method-specific numbers worth recording (realised retention, derived hyper-parameters, ...).
    """

    keep: torch.Tensor
    features: torch.Tensor | None = None
    order: torch.Tensor | None = None
    stats: dict = field(default_factory=dict)

    @property
    def kept_per_frame(self) -> torch.Tensor:
        return self.keep.sum(dim=1)

    def flat_indices(self) -> torch.Tensor:
        """Kept token indices into the flattened ``[F * N]`` video, in sequence order."""
        if self.order is not None:
            return self.order
        return self.keep.reshape(-1).nonzero().squeeze(1)

    def gather(self, features: torch.Tensor) -> torch.Tensor:
        """The kept features ``[K, D]`` in sequence order (merged ones where the method merged)."""
        src = self.features if self.features is not None else features
        return src.reshape(-1, src.shape[-1]).index_select(0, self.flat_indices().to(src.device))


@dataclass(frozen=True)
class Stage:
    """One in-LLM pruning stage: before decoder layer ``layer`` runs (prefill), keep ``keep`` visual tokens (of the
    current ones) and insert ``recycled`` new visual tokens after them (SparseVLM v1's cluster centres; 0 else).
    fraction: ``keep / N_vis`` as a ratio, for per-frame budgets (``Plan.budget``)."""

    layer: int
    keep: int
    recycled: int = 0
    fraction: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DecodeStage:
    """Decode-time KV pruning: at each decode step the attention row of the new token at layer ``layer - 1`` over
    the visual span goes to ``policy.step(row, state)`` (``state``: ``vidcom2.stages.decode.DecodeState``, this
    step's row not yet in its history), which returns the sorted prompt positions of the span that layers
    ``>= layer`` read this step (``None``: the full cache) and one number to record. ``span_excludes_last``: the span leaves out the last
    visual token (DyCoke's official ``image_token_length = #tokens - 1``)."""

    layer: int
    policy: Any
    span_excludes_last: bool = False


@dataclass(frozen=True)
class Plan:
    """What a method does inside the LLM, declared by the method (``method.plan(retention_ratio, num_layers,
    num_visual, *, mrope)``) and run by ``vidcom2.stages`` (which knows no method by name).

    stages: prefill pruning stages (:class:`Stage`), by layer. score: the score recipe of those stages, an object
        with ``where`` = ``"attention"`` (``attention_row(...)`` inside layer ``stage.layer - 1``'s attention on its
        post-RoPE q/k: FastV, SparseVLM) or ``"layer_input"`` (``layer_row(...)`` recomputed before layer
        ``stage.layer`` from its input hidden states: PDrop); ``start(...)`` runs once per prefill.
    position_mode: ``"original"`` (kept tokens keep their positions) or ``"contiguous"`` (renumbered).
    budget: ``"global"`` (top-k over the video) or per-frame ``"uniform"`` / ``"fca"``.
    recycle: ``None`` or an object whose ``merge(hidden, row, pruned, stage, generator)`` turns the pruned tokens into
        ``stage.recycled`` new tokens (SparseVLM v1). decode: a :class:`DecodeStage` or ``None``.
    merge: ``None`` or a merge recipe (FrameFusion) run before every decoder layer from layer 0 on while it is
        active: ``start(num_layers)`` once per prefill, then ``step(state, layer, hidden [n, D], patch [n])`` ->
        :class:`MergeStep` or ``None``; a plan with a merge recipe has no ``stages`` (its one prune, if any, comes
        from the recipe at run time and is scored by ``score``, ``where = "attention"``) and original positions.
    hparams: the derived numbers worth recording (fractions, schedules, ...).
    """

    method: str
    stages: tuple[Stage, ...] = ()
    score: Any = None
    position_mode: str = "original"
    hparams: dict = field(default_factory=dict)
    budget: str = "global"
    recycle: Any = None
    decode: DecodeStage | None = None
    merge: Any = None


@dataclass
class MergeStep:
    """What a merge recipe does to the ``n`` tokens entering one decoder layer (prefill).

    keep: bool ``[n]``, False for the tokens merged away (only visual candidates). hidden: ``[n, D]`` the new hidden
    states (representatives hold the merged value; rows merged away are ignored). done: the recipe stops merging
    after this layer. prune: with ``done``, keep this many visual tokens before the next layer, ranked by the plan's
    score row recorded inside this layer's attention (``None``: no prune).
    """

    keep: torch.Tensor
    hidden: torch.Tensor
    done: bool = False
    prune: int | None = None
