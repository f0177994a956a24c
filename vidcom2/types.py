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
    in_llm: a ``pre_llm`` / ``vision_encoder`` method that also acts inside the LLM (FlashVID's layer-20 pruning,
        PruneVid's layer-10 pruning): ``compress`` runs its selection, shrinks the prompt, then runs its
        ``plan(retention_ratio, num_layers, num_visual, *, mrope, selections)`` on the shrunk prompt, where
        ``num_visual`` is the number of visual tokens that REMAIN after the pre-LLM selection (the candidates: the shrunk
        prompt's kept tokens, the adapter's ``shrunk_candidates``, never layout tokens) and ``selections`` the
        pre-LLM :class:`Selection` of each of the prompt's videos (prompt order); positions are those the pre-LLM
        part left (the plan's ``position_mode`` applies to the shrunk prompt).
    """

    name: str
    stage: Where
    paper: str
    code: str
    needs: tuple[str, ...] = ()
    approximation: str | None = None
    stochastic: bool = False
    decode: bool = False
    in_llm: bool = False

    def __post_init__(self):
        if self.in_llm and self.stage == "in_llm":
            raise ValueError(f"{self.name}: in_llm=True declares an in-LLM part of a pre_llm/vision_encoder method; "
                             "a method with stage='in_llm' already acts there")  # fmt: skip
        if self.in_llm and self.decode:
            raise ValueError(f"{self.name}: a method acting before and inside the LLM cannot also act while decoding "
                             "(one generate() wrapper per call); set in_llm or decode, not both")  # fmt: skip

    @property
    def acts(self) -> tuple[str, ...]:
        """Where the method acts, in call order: its ``stage``, then ``"in_llm"`` when a pre-LLM method also acts
        inside the LLM (``in_llm``), then ``"decode"`` when it also acts while decoding."""
        return (self.stage, *(("in_llm",) if self.in_llm else ()), *(("decode",) if self.decode else ()))

    @property
    def single_prompt(self) -> str | None:
        """Why ``generate`` must get one prompt at a time with this method (``None``: left-padded batches work):
        in-LLM pruning and decode-time KV pruning keep a different set per prompt, and their stages refuse batches."""
        if "in_llm" in self.acts:
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
    groups: optional ``[F, N]`` long group id of each kept token (``-1`` elsewhere), read by the method's own in-LLM
        part (``MethodInfo.in_llm``: PruneVid keeps a share of every group); ``None`` for most methods.
    """

    keep: torch.Tensor
    features: torch.Tensor | None = None
    order: torch.Tensor | None = None
    stats: dict = field(default_factory=dict)
    groups: torch.Tensor | None = None

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
    num_visual, *, mrope)``; a pre-LLM method with an in-LLM part, ``MethodInfo.in_llm``, also gets ``selections``)
    and run by ``vidcom2.stages`` (which knows no method by name).

    stages: prefill pruning stages (:class:`Stage`), by layer. score: the score recipe of those stages, an object
        with ``where`` = ``"attention"`` (``attention_row(...)`` inside layer ``stage.layer - 1``'s attention on its
        post-RoPE q/k: FastV, SparseVLM), ``"layer_input"`` (``layer_row(...)`` recomputed before layer
        ``stage.layer`` from its input hidden states: PDrop) or ``"prev_layer_input"`` (``layer_row(layer, hidden,
        cos, sin, mask, *, scoring, ids)`` from the input of layer ``stage.layer - 1``, before it runs: PruneVid's
        layer-10 attention); ``start(...)`` runs once per prefill.
    position_mode: ``"original"`` (kept tokens keep their positions) or ``"contiguous"`` (renumbered).
    budget: ``"global"`` (top-k over the video), per-frame ``"uniform"`` / ``"fca"``, or ``"groups"``: per group of
        candidates, the counts of ``groups``.
    groups: with ``budget="groups"``, ``(group_of, keep)``: ``group_of [n_visual]`` long, the group of each candidate
        in sequence order, and ``keep [G]`` long, how many each group keeps at every stage (PruneVid's per-window /
        per-frame groups of its pre-LLM part, from ``Selection.groups``).
    retroactive: after the (single) stage, the layers before it also read only its survivors while decoding
        (PruneVid prunes the KV cache of layers 0-10; here a gather on read, ``vidcom2.stages._retro``).
    recycle: ``None`` or an object whose ``merge(hidden, row, pruned, stage, generator)`` turns the pruned tokens into
        ``stage.recycled`` new tokens (SparseVLM v1). decode: a :class:`DecodeStage` or ``None``.
    merge: ``None`` or a merge recipe (FrameFusion, HoliTom's inner merge) run before every decoder layer from layer 0
        on until it is done: ``start(num_layers)`` once per prefill, then ``step(state, layer, hidden [n, D],
        patch [n], row)`` -> :class:`MergeStep` or ``None`` (nothing changes there). ``patch``: each token's in-frame
        position (-1: not a candidate) when the recipe's ``needs_frames`` is true, else 0 for every candidate;
        ``row``: the ``score`` row (``where = "attention"``) recorded inside the previous layer's attention over the
        current tokens when the previous step asked for it (``MergeStep.want_row``), else ``None``. A plan with a merge
        recipe has no ``stages`` and keeps original positions.
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
    groups: Any = None
    merge: Any = None
    retroactive: bool = False


@dataclass
class MergeStep:
    """What a merge recipe does to the ``n`` tokens entering one decoder layer (prefill).

    keep: bool ``[n]``, False for the tokens that leave (only visual candidates may). hidden: ``[n, D]`` the new hidden
    states (representatives hold the merged value; rows that leave are ignored). done: the recipe does nothing at the
    later layers. want_row: record the plan's score row inside this layer's attention for the next step.
    """

    keep: torch.Tensor
    hidden: torch.Tensor
    done: bool = False
    want_row: bool = False
