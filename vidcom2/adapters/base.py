"""The adapter interface: what the model-agnostic code (compress, in-LLM pruning, encoder scoring) may ask of a
model family. Adapters are the only code that knows module paths, token ids, layouts and position ids.

Spec: shared/spec/hooks_transformers.md section 3 (transformers 5.23). One file per family implements
:class:`Adapter` (a Protocol, no base class): ``llava_onevision.py``, ``llava_video.py``, ``qwen_vl.py``.
:class:`GridLayout` describes the LLaVA-Video token grid (13 x 13 tokens + a newline per row).

Conventions used by every adapter:

- ``inputs`` is the dict of processor outputs handed to ``generate`` (``input_ids [B, L]``, ``attention_mask
  [B, L]``, ``pixel_values_videos``, Qwen: ``video_grid_thw [V, 3]``, ``mm_token_type_ids [B, L]``, Qwen2.5-VL:
  ``second_per_grid_ts [V]``). Prompts may be left-padded.
- Videos are numbered in prompt order, row by row (the order of ``video_grid_thw`` / ``pixel_values_videos``).
  A "frame" is what the method sees as one frame: a LLaVA-OV frame, or a Qwen temporal patch (2 frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

#: Qwen2/2.5-VL text positions after a video (``vidcom2.adapters.qwen_vl``): ``"reference"`` or ``"hf5"``.
TEXT_RULES = ("reference", "hf5")


@dataclass
class VideoSlots:
    """Where one video's visual tokens sit in the prompt.

    row: batch row of the prompt holding the video.
    columns: LongTensor ``[F, N]``: the prompt column of local token ``i`` of frame ``f`` (flat index ``f*N + i``
        is the index methods use). Increasing in the flat index for every supported model.
    always_keep: LongTensor ``[k]``: prompt columns of tokens the adapter never drops (LLaVA-OV's video newline).
    grid: ``(F, h, w)``: token grid per frame (``h * w == N``).
    """

    row: int
    columns: torch.Tensor
    always_keep: torch.Tensor
    grid: tuple[int, int, int]

    @property
    def frames(self) -> int:
        return int(self.columns.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        return int(self.columns.shape[1])


@dataclass
class Encoded:
    """The vision encoder's output for a batch, split per video.

    feats: one ``[F, N, D]`` tensor per video (post-projector, what the LLM would receive), aligned with ``slots``.
    slots: one :class:`VideoSlots` per video.
    output: the raw ``get_video_features`` output (``BaseModelOutputWithPooling``), used by ``Adapter.pack``.
    extras: family-specific tensors, e.g. ``"newline"`` ``[V, D]`` (LLaVA-OV) or ``"deepstack"`` (Qwen3-VL: a list
        of levels, each a list of per-video ``[F*N, D]`` tensors).
    """

    feats: list[torch.Tensor]
    slots: list[VideoSlots]
    output: Any
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GridLayout:
    """A frame laid out as ``rows`` rows of ``cols`` scored tokens, each row followed by one newline token
    (LLaVA-Video: 13 x 13 + 13 newlines = 182 tokens per frame).

    newline_order: ``"after_frame"`` (default, the official VidCom2 ``_map_grid_vid`` order: the frame's kept
        tokens, then all its ``rows`` newlines) or ``"row"`` (each newline right after its row's kept tokens).
    """

    rows: int = 13
    cols: int = 13
    newline_order: str = "after_frame"

    def __post_init__(self):
        if self.newline_order not in ("after_frame", "row"):
            raise ValueError(f"newline_order must be 'after_frame' or 'row', got {self.newline_order!r}")

    @property
    def scored_per_frame(self) -> int:
        return self.rows * self.cols

    @property
    def tokens_per_frame(self) -> int:
        return self.rows * (self.cols + 1)

    def grid_index(self, local: torch.Tensor) -> torch.Tensor:
        """Local scored index ``i`` (``0 <= i < rows*cols``) -> index in the frame's 182-token grid:
        ``(i // cols) * (cols + 1) + i % cols``."""
        return (local // self.cols) * (self.cols + 1) + local % self.cols

    def frame_sequence(self, keep: torch.Tensor) -> torch.Tensor:
        """Grid indices (into the ``rows*(cols+1)`` tokens of one frame) of the tokens that stay, in sequence order.

        keep: bool ``[rows*cols]`` of one frame. Newlines are always kept.
        """
        if keep.shape != (self.scored_per_frame,):
            raise ValueError(f"keep must be bool [{self.scored_per_frame}], got {tuple(keep.shape)}")
        kept = self.grid_index(keep.nonzero().squeeze(1))
        newlines = torch.arange(self.rows, device=keep.device) * (self.cols + 1) + self.cols
        if self.newline_order == "after_frame":
            return torch.cat([kept, newlines])
        return torch.sort(torch.cat([kept, newlines])).values

    def sequence(self, keep: torch.Tensor) -> torch.Tensor:
        """Flat indices into the ``[F * rows*(cols+1)]`` token sequence of a video, in sequence order, for a
        bool ``keep [F, rows*cols]``."""
        per = self.tokens_per_frame
        return torch.cat([self.frame_sequence(k) + f * per for f, k in enumerate(keep)])


@runtime_checkable
class Adapter(Protocol):
    """One model family. Implementations: ``vidcom2.adapters.llava_onevision.LlavaOnevisionAdapter``,
    ``vidcom2.adapters.qwen_vl.QwenVLAdapter``. All methods are pure (no state kept between calls)."""

    family: str  # "llava_onevision" | "llava_video" | "qwen2_vl" | "qwen2_5_vl" | "qwen3_vl"
    # default position mode for pre-LLM dropping, and the accepted ones
    position_modes: tuple[str, ...]
    # processor outputs that only the vision encoder consumes (dropped from generate's kwargs after encoding)
    encoder_inputs: tuple[str, ...]
    mrope: bool  # the text model's RoPE is 3-D M-RoPE (Qwen) rather than 1-D
    uses_text_rule: bool  # compress's ``text_rule`` changes this family's positions (Qwen2/2.5-VL)
    # where each frame's row newlines go after compression (LLaVA-Video: "after_frame" | "row", GridLayout);
    # None: the family has no per-row newline tokens (LLaVA-OV's one newline per video, Qwen's none)
    newline_order: str | None

    # -- module handles (for hooks) -------------------------------------------------------------------------
    def text_model(self, model: nn.Module) -> nn.Module:
        """The decoder-only text model (``model.model.language_model``); its ``.config`` is the text config."""

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The text model's decoder layers (``model.model.language_model.layers``)."""

    def vision_tower(self, model: nn.Module) -> nn.Module:
        """The vision encoder (LLaVA-OV: ``model.model.vision_tower``; Qwen: ``model.model.visual``)."""

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        """The vision encoder's transformer blocks (SigLIP: ``vision_tower.encoder.layers`` in 5.x; Qwen:
        ``visual.blocks``)."""

    # -- prompt layout ------------------------------------------------------------------------------------------
    def visual_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """bool ``[B, L]``: True at the prompt's video tokens (LLaVA-OV: including the video newline)."""

    def video_slots(self, model: nn.Module, inputs: dict) -> list[VideoSlots]:
        """One :class:`VideoSlots` per video, in video order."""

    # -- encoder and rebuilding ---------------------------------------------------------------------------------
    def encode(self, model: nn.Module, inputs: dict) -> Encoded:
        """Run ``get_video_features`` once on the batch and split it into per-video ``[F, N, D]`` frames."""

    def pack(
        self, model: nn.Module, encoded: Encoded, kept: list[torch.Tensor], flat: list[torch.Tensor]
    ) -> Any:
        """The ``mm_encoder_outputs["video"]`` object for a shrunk prompt.

        kept: per video, ``[K, D]`` features of the kept tokens in sequence order (merged ones included).
        flat: per video, ``[K]`` flat indices (``f*N + i``) of the token each kept feature stands for, same order
        (Qwen3-VL gathers every DeepStack level with them). Always-keep tokens are appended by the adapter.
        """

    def full_positions(self, model: nn.Module, inputs: dict, *, text_rule: str) -> torch.Tensor:
        """Position ids of the *uncompressed* prompt: LLaVA-OV ``[1, B, L]`` (``cumsum(mask) - 1``), Qwen
        ``[3, B, L]`` (t, h, w M-RoPE). Padding columns hold 1."""

    def position_ids(self, positions: torch.Tensor, attention_mask: torch.Tensor, *, position_mode: str):
        """``generate``'s ``position_ids`` for a shrunk prompt from the gathered ``positions [P, B, L']`` and its
        ``attention_mask [B, L']``, or ``None`` (``generate`` numbers the tokens itself)."""

    def generate_scope(self, model: nn.Module) -> Any:
        """A context manager around a ``compress`` block that restores what ``generate`` caches on the model (Qwen:
        ``model.model.rope_deltas``)."""

    # -- answers to the in-LLM and decode stages --------------------------------------------------------------
    def rotary(self, model: nn.Module, hidden: torch.Tensor, positions: torch.Tensor) -> tuple:
        """``(cos, sin)`` of the text model for renumbered 1-D ``positions [n]`` (M-RoPE: the same on every axis)."""

    def scored_token_mask(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """bool ``[B, L]``: the video tokens a method may drop, from ``input_ids`` alone (without slots; LLaVA-OV:
        without its newline)."""

    def shrunk_candidates(self, model: nn.Module, inputs: dict, selections: list) -> torch.Tensor:
        """bool ``[L]``: the in-LLM candidates of row 0 of a prompt shrunk before the LLM (``stages.rebuild.shrink``)
        by ``selections`` (one :class:`~vidcom2.types.Selection` per video, prompt order): exactly the kept tokens,
        in sequence order, never a layout token. Asked by ``stages.in_llm`` for a method acting before and inside the
        LLM (``MethodInfo.in_llm``). Families without layout tokens inside a shrunk run answer
        :meth:`scored_token_mask` (LLaVA-OV: its one newline ends the run; Qwen: none); LLaVA-Video's row newlines
        carry the video token id, so it marks the kept entries of the packed layout its ``pack`` fed."""

    def layer_query_key(self, layer: nn.Module, hidden: torch.Tensor) -> tuple:
        """Decoder ``layer``'s attention inputs recomputed from the hidden states entering it, ``hidden [1, n, D]``:
        its input norm, then the last token's query and every token's key, split into heads (Qwen3: q/k-normed),
        before RoPE: ``(q [1, h, 1, d], k [1, kv, n, d], scaling)`` (PDrop's recomputed score row)."""

    def prefill_sequence(self, model: nn.Module, current) -> Any:
        """A context manager that keeps family-specific per-token inputs (Qwen3-VL DeepStack) aligned with a pruned
        prefill; ``current()`` gives the original indices of the sequence a layer processes (``None``: unpruned)."""

    # -- answers to the vision-encoder stage ------------------------------------------------------------------
    def encoder_score_hooks(self, model: nn.Module, out: Any, block: int) -> list:
        """Register the hooks that fill ``out`` (``vidcom2.stages.encoder.EncoderScores``) with per-frame scores and
        keys on the LLM token grid while the encoder runs; return their handles (the caller removes them)."""

    def map_head(self, model: nn.Module) -> Any:
        """The vision tower's attention-pooling (MAP) head as a callable ``hidden [F, P, D] -> (global [F, Dg],
        attention [F, P])`` (LLaVA: SigLIP's ``post_layernorm`` + head, loaded when the checkpoint lacks them); a
        family without one raises ``ValueError``. Asked once per ``compress`` block, before anything runs."""

    def map_head_hooks(self, model: nn.Module, out: Any, head: Any) -> list:
        """Register the hooks that fill ``out.global_features`` (per frame ``[F, Dg]``) and ``out.scores`` (the head's
        attention on the LLM token grid, ``[F, n]``) with ``head`` (:meth:`map_head`) while the encoder runs."""
