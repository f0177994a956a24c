"""Small value types shared by the library: what a method declares and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Stage = Literal["pre_llm", "in_llm", "vision_encoder"]


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
    """

    name: str
    stage: Stage
    paper: str
    code: str
    needs: tuple[str, ...] = ()
    approximation: str | None = None
    stochastic: bool = False

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
