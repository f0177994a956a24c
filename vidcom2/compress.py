"""``vidcom2.compress``: attach a visual-token compressor to a HF video LLM for the duration of a ``with`` block.

    with vidcom2.compress(model, method="vidcom2", retention_ratio=0.25, measure=True) as session:
        out = model.generate(**processor_outputs, max_new_tokens=16, do_sample=False)
    session.samples   # one vidcom2.measure.SampleStats per prompt per generate() call

Only ``model.generate`` is wrapped, on the instance (restored in ``finally``, also when the block raises); no
class is touched. Inside, per call (spec hooks_transformers.md sections 4-6):

- ``pre_llm`` methods: run ``get_video_features`` once, hand each video's ``[F, N, D]`` frames to
  ``vidcom2.apply``, shrink the prompt to the kept tokens and pass the kept features via ``mm_encoder_outputs``
  (no pixels reach ``generate``). ``method="none"`` takes the same path and keeps everything.
- ``vision_encoder`` methods: the same, with attention scores / keys captured inside the encoder call by
  ``vidcom2.stages.encoder.capture``.
- ``in_llm`` methods: the uncompressed prompt built the same way is handed to
  ``vidcom2.stages.in_llm.generate`` which prunes inside the decoder by the method's plan.
- methods that also act while decoding (``MethodInfo.decode``: DyCoke's stage 2): the shrunk prompt is handed to
  ``vidcom2.stages.decode.generate``.
- ``pre_llm`` / ``vision_encoder`` methods that also act inside the LLM (``MethodInfo.in_llm``: FlashVID, PruneVid):
  the shrunk prompt (positions as the pre-LLM part left them) is handed to ``vidcom2.stages.in_llm.generate`` with
  the pre-LLM Selections; the method's plan is made for the visual tokens that remain.

Which stage runs where is the plain table :data:`GENERATE_STAGES` (keyed by ``MethodInfo.acts``).

The returned sequences start with the caller's *uncompressed* ``input_ids`` (the shrunk prompt is swapped back),
so ``out[:, input_ids.shape[1]:]`` are the new tokens exactly as without compression.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from vidcom2.api import apply
from vidcom2.budget import check_ratio
from vidcom2.hooks import forward_hooks, instance_attr
from vidcom2.measure import Recorder, SampleStats
from vidcom2.registry import get_method, hparams_of
from vidcom2.stages import decode, encoder, in_llm, rebuild
from vidcom2.types import Selection

# where a method acts while generate() runs -> the stage that wraps the call (pre-LLM and vision-encoder methods
# act before it, through `rebuild.shrink`); a method acting nowhere here is a plain generate()
GENERATE_STAGES = {"in_llm": in_llm.generate, "decode": decode.generate}

# generate() kwargs that are the prompt / encoder inputs (everything else is passed through unchanged)
_PROMPT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids", "position_ids")


@dataclass
class Session:
    """What a ``compress`` block produced: ``samples`` (one SampleStats per prompt per call), ``info`` (method,
    hparams, retention_ratio, seed, position_mode, text_rule, adapter family, attn_implementation, stage)."""

    info: dict
    samples: list[SampleStats] = field(default_factory=list)


def _new_tokens(sequences: torch.Tensor, prompt_len: int, eos) -> list[int]:
    gen = sequences[:, prompt_len:]
    eos_ids = torch.tensor(
        [] if eos is None else ([eos] if isinstance(eos, int) else list(eos)), device=gen.device
    )
    counts = []
    for row in gen:
        hits = torch.isin(row, eos_ids).nonzero()
        counts.append(int(hits[0]) + 1 if hits.numel() else int(row.numel()))
    return counts


@contextmanager
def compress(
    model,
    method: str = "vidcom2",
    retention_ratio: float = 0.25,
    *,
    seed: int = 0,
    measure: bool = False,
    position_mode: str | None = None,
    text_rule: str = "reference",
    adapter=None,
    **hparams,
) -> Iterator[Session]:
    """Compress the video tokens of every ``model.generate`` call inside the block.

    model: a supported ``*ForConditionalGeneration`` (``vidcom2.adapters.supported_classes()``).
    method: a registered method name (``vidcom2.list_methods()``), ``hparams`` its hyper-parameters; or a method
        instance (``vidcom2.get_method(name, **hparams)``, validated when built), then without ``hparams``.
    retention_ratio: fraction of visual tokens kept, in (0, 1].
    seed: seeds the method's local generator (stochastic methods), the same for every video.
    measure: take device-synchronised timings (encoder, compression, prefill, decode); token counts always.
    position_mode: LLaVA-OV ``"contiguous"`` (default) or ``"original"``; Qwen ``"original"`` only.
        In-LLM methods: passed to the pruning (``"original"``/``"contiguous"``), default the method's own rule.
    adapter: ``None`` (chosen from the model by ``vidcom2.adapters.family_of``), a family name (``"llava_video"``:
        LLaVA-Video weights in the LLaVA-OV class) or an adapter instance
        (``vidcom2.adapters.adapter_for("llava_video", newline_order="row")``).
    text_rule: Qwen2/2.5-VL text positions after a video, ``"reference"`` (transformers 4.x / original code,
        default) or ``"hf5"`` (transformers 5.x ``get_rope_index``). Applied to ``method="none"`` too.
    """
    if getattr(model.__dict__.get("generate"), "_vidcom2_compress", False):
        raise RuntimeError(
            "this model is already inside a vidcom2.compress block; nest nothing, exit that one first"
        )
    plan, session = _resolve(model, method, retention_ratio, seed, measure, position_mode, text_rule, adapter, hparams)
    original_generate = model.generate  # the bound method (or an outer wrapper) in effect now

    def generate(*args, **kwargs):
        if args:
            if "input_ids" in kwargs or "inputs" in kwargs or len(args) > 1:
                raise TypeError("pass generate() inputs as keywords (input_ids=..., ...)")
            kwargs["input_ids"] = args[0]
        if "inputs" in kwargs:
            kwargs["input_ids"] = kwargs.pop("inputs")
        return _generate(model, plan, session, original_generate, kwargs)

    generate._vidcom2_compress = True

    # what generate() caches on the model (Qwen's rope_deltas) is the adapter's to restore
    with instance_attr(model, "generate", generate), plan.adapter.generate_scope(model):
        yield session


def _resolve(model, method, retention_ratio, seed, measure, position_mode, text_rule, adapter, hparams):
    """Validate the settings of a ``compress`` block once; returns its ``(_Plan, Session)``."""
    from vidcom2.adapters import adapter_for, get_adapter
    from vidcom2.adapters.base import TEXT_RULES

    impl, hparams = _method(method, hparams)
    ratio = check_ratio(retention_ratio)  # a Ratio (already checked, e.g. by a harness) passes as is
    if adapter is None or isinstance(adapter, str):  # else an adapter instance, used as is
        adapter = get_adapter(model) if adapter is None else adapter_for(adapter)
    stage = impl.info.stage
    explicit_mode = position_mode
    if stage == "in_llm":
        # in-LLM pruning positions follow the method's own plan unless asked (vidcom2.stages.in_llm)
        position_mode = position_mode or "method_default"
    elif (position_mode := position_mode or adapter.position_modes[0]) not in adapter.position_modes:
        raise ValueError(
            f"position_mode {position_mode!r} is not available for {adapter.family}; choose one of "
            f"{adapter.position_modes}"
        )
    if text_rule not in TEXT_RULES:
        raise ValueError(f"text_rule must be one of {TEXT_RULES}, got {text_rule!r}")
    info = dict(
        method=impl.info.name,
        stage=stage,
        acts=list(impl.info.acts),
        hparams=dict(hparams),
        retention_ratio=ratio,
        seed=seed,
        position_mode=position_mode,
        text_rule=text_rule if adapter.uses_text_rule else None,
        adapter=adapter.family,
        newline_order=adapter.newline_order,
        attn_implementation=getattr(adapter.text_model(model).config, "_attn_implementation", None),
    )
    run = next((GENERATE_STAGES[a] for a in impl.info.acts if a in GENERATE_STAGES), None)
    mode = position_mode if stage != "in_llm" else explicit_mode
    # a method that needs per-frame global features gets the adapter's attention-pooling head (loaded once here)
    head = adapter.map_head(model) if "global_features" in impl.info.needs else None
    if head is not None:
        info["map_head"] = head.source
    return _Plan(adapter, impl, ratio, seed, measure, mode, text_rule, run, head), Session(info=info)


def _method(method, hparams: dict) -> tuple:
    """``(instance, hparams)``: a registered name is built with ``hparams`` (validated once, by the method); an
    instance (``vidcom2.get_method(...)``) was validated when it was built and comes without ``hparams``."""
    if isinstance(method, str):
        return get_method(method, **hparams), dict(hparams)
    if hparams:
        raise TypeError(f"method is an instance ({type(method).__name__}); its hyper-parameters are set when it is "
                        f"built, so pass none here (got {sorted(hparams)})")
    if not hasattr(method, "info"):
        raise TypeError(f"method must be a registered name (vidcom2.list_methods()) or a method instance, got {method!r}")
    return method, hparams_of(method)


@dataclass(frozen=True)
class _Plan:
    """The resolved settings of one ``compress`` block."""

    adapter: object
    method: object  # the method instance (vidcom2.get_method)
    ratio: float
    seed: int
    measure: bool
    position_mode: str | None  # None: in-LLM method's own rule
    text_rule: str
    run: object  # the GENERATE_STAGES entry that wraps generate(), or None
    head: object = None  # adapter.map_head(model) for methods that need global_features, else None


def _eos(model, kwargs):
    config = kwargs.get("generation_config") or model.generation_config
    return kwargs.get("eos_token_id", config.eos_token_id)


def _passthrough(model, session, generate_fn, kwargs):
    """A call without video: nothing to compress; recorded with zero visual tokens."""
    if kwargs.get("mm_encoder_outputs") is not None:
        raise ValueError(
            "compress runs the vision encoder itself: pass pixel_values_videos, not mm_encoder_outputs"
        )
    out = generate_fn(**kwargs)
    ids = kwargs.get("input_ids")
    if ids is not None:
        seqs = out if isinstance(out, torch.Tensor) else out.sequences
        am = kwargs.get("attention_mask")
        lengths = (torch.ones_like(ids) if am is None else am).sum(1).tolist()
        news = _new_tokens(seqs, ids.shape[1], _eos(model, kwargs))
        session.samples += [
            SampleStats(0, 0, 0.0, new_tokens=n, prompt_tokens_in=int(p), prompt_tokens_out=int(p))
            for n, p in zip(news, lengths)
        ]
    return out


def _select(plan: _Plan, encoded, captured) -> list:
    """One Selection per video (``None`` = keep all, for in-LLM methods that prune later)."""
    stage = plan.method.info.stage
    if stage == "in_llm":
        return [None] * len(encoded.feats)
    aux = _split_aux(captured, encoded) if stage == "vision_encoder" else [{}] * len(encoded.feats)
    return [
        apply(plan.method, f, plan.ratio, seed=plan.seed, **a) for f, a in zip(encoded.feats, aux)
    ]


def _generate(model, plan: _Plan, session: Session, generate_fn, kwargs):
    ids = kwargs.get("input_ids")
    if kwargs.get("pixel_values_videos") is None or ids is None:
        return _passthrough(model, session, generate_fn, kwargs)
    adapter, stage = plan.adapter, plan.method.info.stage
    if "in_llm" in plan.method.info.acts:
        in_llm.check_generate_kwargs(model, kwargs)  # batches and static caches: refused before the encoder runs
    rec = Recorder(enabled=plan.measure, device=ids.device)
    captured = None
    with torch.no_grad():
        with rec.timer("vision_encoder"):
            if stage == "vision_encoder":
                with encoder.capture(adapter, model, head=plan.head) as captured:
                    encoded = adapter.encode(model, kwargs)
            else:
                encoded = adapter.encode(model, kwargs)
        with rec.timer("compression"):
            selections = _select(plan, encoded, captured)
            prompt, counts = rebuild.shrink(
                adapter,
                model,
                kwargs,
                encoded,
                selections,
                position_mode=plan.position_mode,
                text_rule=plan.text_rule,
            )
    slots = encoded.slots
    _check_expansion(model, kwargs, prompt, len(slots))
    kept = [None if sel is None else _light(sel) for sel in selections]  # what a method's in-LLM part reads
    del encoded, selections  # the encoder outputs live on only in `prompt` (kept rows): free the rest
    call = {k: v for k, v in kwargs.items() if k not in _PROMPT_KEYS and k not in adapter.encoder_inputs}
    call.update(prompt)
    timed = _timed(model, rec, generate_fn)
    run = plan.run
    if run is None:
        out = timed(**call)
    else:
        # an explicit position_mode of an in-LLM method goes to its pruning (else the plan's own rule)
        options = {"position_mode": plan.position_mode} if stage == "in_llm" and plan.position_mode else {}
        if stage != "in_llm" and "in_llm" in plan.method.info.acts:
            # acts before and inside the LLM: the shrunk prompt's remaining visual tokens are the candidates
            options["selections"] = kept
            slots = None
        out = run(adapter, model, timed, call, plan.method, plan.ratio, rec, slots=slots, seed=plan.seed, **options)
    out = _restore_prompt(out, ids, prompt["input_ids"].shape[1])
    seqs = out if isinstance(out, torch.Tensor) else out.sequences
    per_prompt = seqs.shape[0] // ids.shape[0]  # num_return_sequences / beams: count the first of each prompt
    for c, n in zip(counts, _new_tokens(seqs[::per_prompt], ids.shape[1], _eos(model, kwargs))):
        c["new_tokens"] = n
    session.samples += rec.rows(counts)
    return out


def _light(sel):
    """A Selection without its feature copy (the in-LLM part reads keep / order / groups / stats only)."""
    return Selection(keep=sel.keep, order=sel.order, stats=sel.stats, groups=sel.groups)


def _check_expansion(model, kwargs, prompt, videos: int) -> None:
    """generate() repeats each prompt for beams / num_return_sequences and splits the video features per prompt by
    the rows of a tensor ``pooler_output``; LLaVA-OV's packed features have one row per video only when every video
    kept the same number of tokens."""
    config = kwargs.get("generation_config") or model.generation_config
    expand = max(kwargs.get("num_beams", config.num_beams) or 1, 1) * max(
        kwargs.get("num_return_sequences", config.num_return_sequences) or 1, 1
    )
    pooled = prompt["mm_encoder_outputs"]["video"].pooler_output
    if expand > 1 and isinstance(pooled, torch.Tensor) and pooled.shape[0] != videos:
        raise NotImplementedError(
            f"LLaVA-OneVision with num_beams * num_return_sequences = {expand} needs the same kept-token count for "
            "every video of the batch (this method kept different counts); use batch size 1 or greedy decoding"
        )


def _split_aux(captured, encoded) -> list[dict]:
    """Per video ``{"scores": [F, N], "keys": [F, N, d]}`` (and ``"global_features": [F, Dg]`` when captured) from
    the captured encoder calls (frames concatenated over calls in video order, then split by each video's frame
    count)."""
    frames = [s.frames for s in encoded.slots]

    def split(parts):
        return torch.cat(list(parts)).split(frames) if parts else [None] * len(frames)

    scores, keys = split(captured.scores), split(captured.keys)
    if not captured.global_features:
        return [{"scores": s, "keys": k} for s, k in zip(scores, keys)]
    glob = split(captured.global_features)
    return [{"scores": s, "keys": k, "global_features": g} for s, k, g in zip(scores, keys, glob)]


def _timed(model, rec: Recorder, generate_fn):
    """``generate_fn`` with prefill (call -> end of the first forward) and decode (the rest) timed on ``rec``."""
    if not rec.enabled:
        return generate_fn

    def run(**kwargs):
        marks = {}

        def after_forward(module, args, output):
            if "prefill_end" not in marks:
                marks["prefill_end"] = rec.mark()

        start = rec.mark()
        with forward_hooks(model, post=after_forward):
            out = generate_fn(**kwargs)
        end = rec.mark()
        prefill_end = marks.get("prefill_end", end)
        rec.times["prefill"] = rec.times.get("prefill", 0.0) + prefill_end - start
        rec.times["decode"] = rec.times.get("decode", 0.0) + end - prefill_end
        return out

    return run


def _restore_prompt(out, ids: torch.Tensor, shrunk_len: int):
    """Swap the shrunk prompt at the head of the returned sequences for the caller's ``input_ids``."""
    seqs = out if isinstance(out, torch.Tensor) else out.sequences
    ids = ids.repeat_interleave(seqs.shape[0] // ids.shape[0], dim=0)  # num_return_sequences > 1
    restored = torch.cat([ids.to(seqs.device, seqs.dtype), seqs[:, shrunk_len:]], dim=1)
    if isinstance(out, torch.Tensor):
        return restored
    out.sequences = restored
    return out
