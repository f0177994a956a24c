"""The in-LLM stage: visual-token pruning inside the decoder during prefill (FastV, PDrop, SparseVLM, ...), with
scoped hooks and no eager attention. It knows no method by name: a method declares its
:class:`~vidcom2.types.Plan` (``method.plan(retention_ratio, num_layers, num_visual, *, mrope)``: the stages, the
score recipe, the position rule, an optional recycler) and this module runs it.

Recipe: shared/spec/hooks_transformers.md section 5 (transformers 5.23). The text model computes cos/sin and the
causal mask once and hands them to every decoder layer, so pruning needs only:

- the registered attention dispatcher (:mod:`vidcom2.stages._dispatch`), switched on the text config only, which
  hands the scored layers' post-RoPE q/k to the score recipe (FastV: the last prompt query's row, ``[kv_len]``
  floats; SparseVLM: the raters' rows): never a full attention matrix, never a second pass of the layer;
- forward pre-hooks on the decoder layers from the first pruning layer on (:mod:`vidcom2.stages._pruner`), which
  slice the hidden states, cos/sin, text position ids and a 4-D mask (prefill), and during decode gather mask
  columns or renumber positions; a ``layer_input`` score (PDrop) is recomputed there from the layer's input;
- a plan's merge recipe (``Plan.merge``, FrameFusion) runs in those pre-hooks from layer 0 on
  (:mod:`vidcom2.stages._merger`): merged hidden states, then at most one prune scored inside attention;
- the adapter's ``prefill_sequence`` (Qwen3-VL: DeepStack rows gathered with the kept indices, spec 5.4).

Layers below the first pruning layer keep the full KV cache; deeper layers keep only the survivors, so the
``DynamicCache`` holds per-layer lengths (``StaticCache`` is refused). Batch size 1 only (keep counts would differ
between rows). ``mode="mask"`` is the reference used by the equivalence tests: the same scores and selections, but
the full sequence runs through every layer and the dropped columns are hidden by a 4-D mask from the pruning layer on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from vidcom2.budget import check_ratio
from vidcom2.stages._common import check_cache, layer_counts
from vidcom2.stages._dispatch import routes as dispatcher_routes
from vidcom2.stages._pruner import MODES, POSITION_MODES, Pruner, PruneState

__all__ = ["MODES", "POSITION_MODES", "PruneState", "attach", "candidates", "check_cache", "check_generate_kwargs",
           "dispatcher_routes", "generate", "layer_counts", "plan_for"]  # fmt: skip

_STATIC = ("static", "offloaded_static", "sliding_window", "hybrid", "mamba", "quantized", "offloaded_hybrid")


def plan_for(method, retention_ratio: float, num_layers: int, num_visual: int | None, *, mrope: bool,
             selections=None):  # fmt: skip
    """The :class:`~vidcom2.types.Plan` of a method instance for a model with ``num_layers`` decoder layers and
    ``num_visual`` candidate tokens (``method.plan``); a method that fixed ``num_layers`` must match the model.
    selections: the pre-LLM Selections of the prompt's videos, for a method that acts before and inside the LLM
    (``MethodInfo.in_llm``; ``num_visual`` is then what remains after them): passed on as ``plan(..., selections=)``."""
    r = check_ratio(retention_ratio)
    name = method.info.name
    given = getattr(method, "num_layers", None)
    if given is not None and int(given) != num_layers:
        raise ValueError(f"{name}: num_layers={given} but the model has {num_layers} decoder layers; leave it None")
    if not callable(getattr(method, "plan", None)):
        raise ValueError(f"method {name!r} declares no plan (no `plan` method): it cannot act inside the LLM")
    if method.info.in_llm:
        return method.plan(r, num_layers, num_visual, mrope=mrope, selections=selections)
    return method.plan(r, num_layers, num_visual, mrope=mrope)


def candidates(adapter, model, inputs: dict, slots=None, selections=None) -> torch.Tensor:
    """bool ``[L]``: the prompt columns that are pruning candidates (every video token of row 0 except the ones
    the adapter always keeps, e.g. LLaVA-OV's video newline).

    slots: the adapter's :class:`~vidcom2.adapters.base.VideoSlots` of this prompt (``Encoded.slots``); without
    them they are read from ``inputs`` (needs ``pixel_values_videos``). Slots whose columns do not all land on
    video tokens of ``inputs`` (another layout, e.g. before left padding was dropped), or no slots and no pixels:
    the adapter's ``scored_token_mask`` (video tokens minus layout tokens, from the ids alone).
    selections: for a prompt shrunk before the LLM by these Selections (one per video, prompt order), the adapter's
    ``shrunk_candidates`` (the kept tokens; layout tokens inside a shrunk run, e.g. LLaVA-Video's row newlines,
    are placed by the adapter, so the ids alone may not tell them); ``slots`` are then ignored.
    """
    if selections is not None:
        return adapter.shrunk_candidates(model, inputs, selections).bool()
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
    return adapter.scored_token_mask(model, inputs)[0].clone()


def check_generate_kwargs(model, kwargs: dict) -> None:
    """Refuse what in-LLM pruning cannot do: batches of more than one prompt and static/sliding caches."""
    ids = kwargs.get("input_ids")
    if ids is None:
        raise ValueError("in-LLM pruning needs input_ids from the processor (inputs_embeds prompts are not supported)")
    if ids.shape[0] != 1:
        raise ValueError(
            f"in-LLM pruning supports batch size 1 only, got {ids.shape[0]} prompts: keep counts "
            "would differ between rows; run one sample per generate() call"
        )
    impl = kwargs.get("cache_implementation") or getattr(model.generation_config, "cache_implementation", None)
    if impl in _STATIC:
        raise ValueError(
            f"in-LLM pruning needs a DynamicCache (layers hold different lengths after pruning); "
            f"cache_implementation={impl!r} is not supported: remove it"
        )
    check_cache(kwargs.get("past_key_values"))


@contextmanager
def attach(
    adapter, model, method, retention_ratio: float, inputs: dict, *, slots=None, seed: int = 0,
    mode: str = "prune", position_mode: str | None = None, selections=None, plan=None,
) -> Iterator[PruneState]:  # fmt: skip
    """Attach ``method``'s in-LLM pruning to ``model`` for the prompt ``inputs`` for the block; undone on exit.

    slots: the prompt's video slots (``Encoded.slots``), see :func:`candidates`. seed: seeds the stochastic steps of
    a plan (SparseVLM's clustering noise; the same for every prefill). mode: ``prune`` (real slicing) or ``mask``
    (the reference). position_mode: ``original`` / ``contiguous``; default the plan's rule. selections: for a method
    that acted before the LLM too (``MethodInfo.in_llm``), its Selections of the prompt's videos; ``inputs`` is then
    the shrunk prompt, whose kept visual tokens are the candidates (``candidates(..., selections=)``; ``slots``
    ignored). plan: the method's plan for these candidates when the caller built it already (:func:`generate`), else
    built here.
    Yields a :class:`PruneState` (rows, kept indices, per-layer counts) filled during the forward passes.
    """
    check_generate_kwargs(model, inputs)
    layers = adapter.decoder_layers(model)
    visual = candidates(adapter, model, inputs, slots, selections)
    if selections is not None and int(visual.sum()) != sum(int(s.keep.sum()) for s in selections):
        raise ValueError(  # a safety net: the adapter's shrunk_candidates must name exactly the kept tokens
            f"{method.info.name}: the adapter's shrunk_candidates marks {int(visual.sum())} in-LLM candidates for "
            f"{sum(int(s.keep.sum()) for s in selections)} kept tokens of the selections: pass the prompt these "
            "selections shrank (stages.rebuild.shrink), or fix the adapter's shrunk_candidates"
        )
    if plan is None:
        plan = plan_for(method, retention_ratio, len(layers), int(visual.sum()), mrope=adapter.mrope,
                        selections=selections)  # fmt: skip
    video = adapter.visual_token_mask(model, inputs)[0]
    text_start = int(video.nonzero().max()) + 1 if video.any() else None  # e.g. SparseVLM's raters: after the video
    frame_columns = None
    needs_frames = plan.merge is not None and getattr(plan.merge, "needs_frames", False)
    if plan.budget not in ("global", "groups") or needs_frames:  # per-frame budgets, frame-wise merging: the grid
        found = slots if slots is not None else adapter.video_slots(model, inputs)
        if len(found) != 1:
            what = "merging" if plan.merge is not None else f"budget={plan.budget!r}"
            raise ValueError(f"{plan.method} {what} supports one video per prompt, got {len(found)}")
        frame_columns = found[0].columns
    pruner = Pruner(adapter, model, visual, plan, mode=mode, position_mode=position_mode, text_start=text_start,
                    seed=seed, frame_columns=frame_columns)  # fmt: skip
    with pruner.attached() as state:
        yield state


def generate(
    adapter, model, generate_fn, kwargs: dict, method, retention_ratio: float, recorder=None, *, slots=None,
    seed: int = 0, **options,
):  # fmt: skip
    """Run ``generate_fn(**kwargs)`` (the unwrapped ``model.generate``) with in-LLM pruning by ``method``.

    recorder: optional :class:`vidcom2.measure.Recorder`; gets ``visual_tokens_out`` (visual tokens in the deepest
    layer, ``R_fin * N``) and ``visual_tokens_layer_avg`` (``sum_l n_l / L``) noted for the sample.
    options: ``position_mode``, ``mode`` and ``selections``, see :func:`attach`. Returns what ``generate_fn`` returns.
    A pre-LLM method's in-LLM part (``selections`` given) whose plan has neither stages nor a merge recipe for what
    the selections kept (e.g. switched off) runs ``generate_fn`` as is, and records nothing here.
    """
    plan = None
    if (selections := options.get("selections")) is not None:
        kept = sum(int(s.keep.sum()) for s in selections)
        plan = plan_for(method, retention_ratio, len(adapter.decoder_layers(model)), kept, mrope=adapter.mrope,
                        selections=selections)  # fmt: skip
        if not plan.stages and plan.merge is None:
            return generate_fn(**kwargs)
    with attach(adapter, model, method, retention_ratio, kwargs, slots=slots, seed=seed, plan=plan, **options) as state:
        out = generate_fn(**kwargs)
    _record(recorder, state)
    return out


def _record(recorder, state: PruneState) -> None:
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
