"""What every harness model wrapper adds to its lmms-eval 0.7.3 parent class.

``Harnessed`` comes first in each wrapper's bases (``class Qwen2_5_VLCompressed(Harnessed, Qwen2_5_VL)``) and:

- takes the harness's own constructor arguments (``method``, ``retention_ratio``, ``seed``, ``hparams``,
  ``frames``, ``warmup``, ``device``) and the method's hyper-parameters as flat keyword arguments (so the lmms-eval
  CLI's ``--model_args method=vidcom2,retention_ratio=0.25,budget=fca`` works), and removes them before calling the
  parent's real constructor (the Qwen and LLaVA parents ``assert kwargs == {}``);
- runs every request inside ``vidcom2.compress(model, method, retention_ratio, seed, measure=True)`` with the method
  instance built once per run (:mod:`eval.compression`; from the CLI, from the name and hyper-parameters)
  (``method="none"`` takes the same path uncompressed, so vanilla is measured identically);
- runs requests one at a time by default (``batch_size=1``: per-sample latencies), through the parent's own request
  handling (prompt, frame sampling, processor), and records one row per request: the adapter's ``SampleStats`` plus
  ``preprocess_s`` (request wall time outside ``model.generate``), ``generate_s``, ``frames_fed`` and (Qwen2.5-VL)
  ``second_per_grid_ts``;
- with ``batch_size=B > 1`` answers B consecutive requests of one task with one left-padded ``generate``
  (:mod:`eval.models.batching`: each request still takes its own path; per-sample token counts are still recorded,
  latencies become batch shares and the record says so); a method whose pruning runs one prompt at a time
  (in-LLM, decode-time) falls back to batch size 1, recorded in :attr:`Harnessed.batching`;
- checks that every request's video exists before generating anything (a missing one is named, with how to get
  the dataset; lmms-eval's MVBench would only log it and VideoMME / MLVU ``sys.exit``);
- refuses a request that reaches ``generate`` without video inputs (the Qwen2-VL parent logs and drops a video it
  cannot read, which would silently score a text-only answer);
- refuses ``loglikelihood`` and multi-round requests (they would run uncompressed and unmeasured);
- keeps its modules through lmms-eval's ``clean()`` (which deletes every ``nn.Module`` attribute, spec pitfall 2),
  so one instance serves several evaluations.

Nothing here patches a class: the only per-call state is on the instance and is reset in ``finally``.
"""

from __future__ import annotations

import gc
import inspect
from dataclasses import asdict, is_dataclass

from eval.measure import now
from eval.progress import Progress

HARNESS_ARGS = ("method", "retention_ratio", "seed", "hparams", "frames", "warmup", "device", "progress", "position_mode",
                "batch_size")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def split_method_kwargs(method: str, kwargs: dict) -> dict:
    """Pop the method's hyper-parameters out of ``kwargs`` (flat CLI form) and return them."""
    from vidcom2.registry import hparam_names

    return {k: kwargs.pop(k) for k in list(kwargs) if k in hparam_names(method)}


def batch_fallback(method, hparams: dict | None = None) -> str | None:
    """Why ``method`` (an instance, or a name with ``hparams``) must run one prompt per ``generate`` (``None``: it
    batches); the library's own answer, ``MethodInfo.single_prompt``."""
    from eval.compression import method_of

    return method_of(method, hparams).info.single_prompt


def accepted_kwargs(cls) -> set[str]:
    """Constructor keywords a wrapper class accepts: its own plus its lmms-eval parent's (for config tests)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
    return names


class _TimedModel:
    """Stands in for the HF model during one request: times ``generate`` and checks it received a video."""

    def __init__(self, model, owner: Harnessed):
        self._model = model
        self._owner = owner

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, *args, **kwargs):
        if kwargs.get("pixel_values_videos") is None:
            raise RuntimeError(
                "a request reached model.generate() without video inputs (the video could not be read or the "
                "prompt has no video placeholder); refusing to score a text-only answer"
            )
        self._owner._frames_fed = self._owner.count_frames(kwargs)
        sec = kwargs.get("second_per_grid_ts")  # Qwen2.5-VL: temporal M-RoPE spacing of the fed frames
        self._owner._second_per_grid = None if sec is None else float(sec.float().mean())
        t0 = now()
        try:
            return self._model.generate(*args, **kwargs)
        finally:
            self._owner._generate_s += now() - t0


class Harnessed:
    """Mixin for the lmms-eval model wrappers (see the module docstring). Subclasses set:

    family: the ``vidcom2`` adapter family (``qwen2_5_vl`` ...).
    frames_arg: the parent constructor's name for the frame count (``max_num_frames`` / ``max_frames_num``).
    compress_adapter: ``None`` (the adapter of the model's class) or what ``vidcom2.compress(adapter=...)`` gets.
    """

    family: str = ""
    frames_arg: str = "max_num_frames"
    # ``vidcom2.compress(adapter=...)``: None lets vidcom2 pick it from the model class (LLaVA-Video needs it named:
    # its weights load into the LLaVA-OV class)
    compress_adapter = None

    def __init__(
        self,
        pretrained: str,
        method: str = "none",
        retention_ratio: float = 1.0,
        seed: int = 0,
        hparams: dict | None = None,
        frames: int = 32,
        warmup: int = 1,
        device: str = "auto",
        progress: bool = True,
        position_mode: str | None = None,
        batch_size: int = 1,
        **kwargs,
    ) -> None:
        if isinstance(method, str):  # the lmms-eval CLI: flat hyper-parameters among the model args
            hparams = {**(hparams or {}), **split_method_kwargs(method, kwargs)}
        self.configure(method=method, retention_ratio=retention_ratio, seed=seed, hparams=hparams, warmup=warmup,
                       progress=progress, position_mode=position_mode, batch_size=batch_size)
        self.frames = int(frames)
        self.sample_rows: list[dict] = []
        self.session_info: dict = {}
        self._timing = False
        self._generate_s = 0.0
        self._frames_fed = None
        from eval import distributed

        w = distributed.world()
        dev = distributed.process_device(resolve_device(device), w)
        kwargs.setdefault("device_map", dev)
        if not w.distributed:
            super().__init__(pretrained=pretrained, device=dev, **{self.frames_arg: self.frames}, **kwargs)
            return
        # multi-process launch: the harness places the replica; the parent must not (see eval/distributed.py)
        distributed.prepare_backend(dev, w)
        with distributed.one_process_view(type(self)) as made:
            super().__init__(pretrained=pretrained, device=dev, **{self.frames_arg: self.frames}, **kwargs)
        if not made:  # the parent never asked; the evaluator still gathers through lm.accelerator
            from accelerate import Accelerator

            made.append(Accelerator())
        self.accelerator = made[0]  # the real one: lmms-eval's evaluator gathers through lm.accelerator
        if self.accelerator.num_processes != w.size:
            raise RuntimeError(
                f"accelerate sees {self.accelerator.num_processes} processes but WORLD_SIZE={w.size}; with device=cpu "
                "launch with `torchrun` or `accelerate launch --multi_gpu` (the harness sets ACCELERATE_USE_CPU)"
            )
        self._rank, self._world_size = w.rank, w.size

    def configure(self, *, method, retention_ratio: float, seed: int, hparams: dict, warmup: int = 1,
                  progress: bool = True, position_mode: str | None = None, batch_size: int = 1) -> None:
        """Set the compression of the next evaluations (the weights are untouched; a sweep reuses one instance).

        ``method``: the method instance the harness built (:mod:`eval.compression`, with its configured ``hparams``
        for the record) or, from the lmms-eval CLI, a registered name built here with ``hparams``; the ratio is
        checked by the library (a ratio the harness checked passes as is)."""
        from eval.compression import method_of, run_ratio

        self.method_impl = method_of(method, hparams)  # a name: unknown method / hyper-parameter fails before any work
        self.method = self.method_impl.info.name
        self.hparams = dict(hparams or {})
        self.retention_ratio = run_ratio(self.method, retention_ratio)
        self.seed = int(seed)
        self.warmup = int(warmup)
        self.show_progress = bool(progress)
        self.position_mode = position_mode  # None: the adapter's default (vidcom2.compress)
        if isinstance(batch_size, str) and batch_size.isdigit():  # the lmms-eval CLI passes --batch_size as text
            batch_size = int(batch_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not an integer >= 1; set batch_size=1 (or 4, 8, ...)")
        reason = self.method_impl.info.single_prompt if batch_size > 1 else None
        # what the record says about batching: requested size, the size run, and why it differs
        self.batching = {"batch_size": int(batch_size), "effective": 1 if reason else int(batch_size),
                         "fallback": reason}

    # ---- hooks a family may override -------------------------------------------------------------------
    def count_frames(self, generate_kwargs: dict) -> int | None:
        """Frames fed to the model for this request (Qwen: temporal patches x temporal_patch_size)."""
        thw = generate_kwargs.get("video_grid_thw")
        if thw is None:
            return None
        patch = getattr(getattr(self.hf_model.config, "vision_config", None), "temporal_patch_size", 2)
        return int(thw[:, 0].sum()) * int(patch)

    def _generate_one(self, request) -> str:
        """One request through the parent's own ``generate_until`` (its prompt, frame sampling, processor). Thread-safe
        for batching as long as the parent keeps no per-call state on the instance (the lmms-eval Qwen parents)."""
        return super().generate_until([request])[0]

    # ---- lmms-eval API -------------------------------------------------------------------------------------
    @property
    def hf_model(self):
        """The transformers model, unwrapped (never the timing stand-in)."""
        return self.__dict__["_model"]

    @property
    def model(self):
        inner = super().model
        gate = self.__dict__.get("_gate")
        if gate is not None:  # inside a batch: the request threads' generate() meets at the gate
            from eval.models.batching import GateModel

            return GateModel(inner, gate, self._describe_call)
        return _TimedModel(inner, self) if self.__dict__.get("_timing") else inner

    def _describe_call(self, kwargs: dict) -> dict:
        sec = kwargs.get("second_per_grid_ts")
        return {"frames_fed": self.count_frames(kwargs),
                "second_per_grid_ts": None if sec is None else float(sec.float().mean())}

    def reset_measurements(self) -> None:
        self.sample_rows = []

    def generate_until(self, requests) -> list[str]:
        import vidcom2

        out: list[str] = []
        bar = Progress(len(requests), f"{self.method} r={self.retention_ratio:g}", enabled=self.show_progress)
        try:
            with vidcom2.compress(
                self.hf_model, method=self.method_impl, retention_ratio=self.retention_ratio, seed=self.seed,
                measure=True, position_mode=self.position_mode, adapter=self.compress_adapter,
            ) as session:
                self.session_info = dict(getattr(session, "info", {}) or {})
                for req in requests:  # every video first: a missing one fails the run before any generation
                    self._check_media(req)
                saved, self._rank = self._rank, 1  # the parent's rank only enables its own per-call progress bar
                try:
                    for batch in self._batches(requests):
                        answers = ([self._run_request(batch[0], session)] if len(batch) == 1
                                   else self._run_batch(batch, session))
                        for i, (req, answer) in enumerate(zip(batch, answers)):
                            bar.update(self._doc(req), answer, self.sample_rows[len(self.sample_rows) - len(batch) + i])
                            out.append(answer)
                finally:
                    self._rank = saved
        finally:
            bar.close()
        return out

    def _batches(self, requests) -> list[list]:
        """Consecutive requests of one task, split, and generation arguments, at most ``batching["effective"]``."""
        size, batches = self.batching["effective"], []
        for req in requests:
            a = req.args
            if batches and len(batches[-1]) < size and batches[-1][0].args[-2:] == a[-2:] and batches[-1][0].args[1] == a[1]:
                batches[-1].append(req)
            else:
                batches.append([req])
        return batches

    def _run_batch(self, batch: list, session) -> list[str]:
        """``batch`` with one ``generate`` (:func:`eval.models.batching.run_batch`); one row per request."""
        from eval.models.batching import run_batch

        inner = super().model
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.eot_token_id
        eos = inner.generation_config.eos_token_id
        before, spent = len(session.samples), [0.0]

        def generate(**kwargs):
            t = now()
            try:
                return inner.generate(**kwargs)
            finally:
                spent[0] += now() - t

        t0 = now()
        try:
            answers, infos = run_batch(batch, self._in_gate, generate, pad, eos)
        finally:
            self.__dict__.pop("_gate", None)
        wall, n = now() - t0, len(batch)
        new = session.samples[before:]
        if len(new) != n:
            raise RuntimeError(f"expected one recorded row per request of a batch of {n}, the adapter recorded {len(new)}")
        for i, (req, sample, info) in enumerate(zip(batch, new, infos)):
            stats = asdict(sample) if is_dataclass(sample) else dict(vars(sample))
            stats.update(task=req.args[-2], doc_id=req.args[-3], preprocess_s=(wall - spent[0]) / n,
                         generate_s=spent[0] / n, batch_size=n, batch_index=i, **info)
            self.sample_rows.append(stats)
        return answers

    def _in_gate(self, request, gate) -> str:
        self.__dict__["_gate"] = gate  # the same gate for every thread of this batch
        return self._generate_one(request)

    def loglikelihood(self, requests):
        raise NotImplementedError(
            "the harness measures compression on generate_until tasks only; loglikelihood would run uncompressed"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(
            "the harness measures compression on single-round generate_until tasks only; multi-round would run "
            "uncompressed"
        )

    def _doc(self, req) -> dict:
        args = req.args
        doc_id, task, split = args[-3], args[-2], args[-1]
        return self.task_dict[task][split][doc_id]

    def _check_media(self, req) -> None:
        """Every video path of the request exists (lmms-eval's MVBench only logs a missing one, VideoMME exits)."""
        import os

        doc_to_visual, doc_id, task = req.args[2], req.args[-3], req.args[-2]
        hint = ("The benchmark's videos are fetched into $HF_HOME by lmms-eval on a machine with hub access "
                "(see docs/harness.md, 'Run a real benchmark').")
        try:
            visuals = doc_to_visual(self._doc(req)) or []
        except SystemExit as e:  # VideoMME's and MLVU's doc_to_visual call sys.exit on a missing video
            raise FileNotFoundError(f"{task} doc {doc_id}: {e.code}. {hint}") from None
        for v in visuals:
            if isinstance(v, str) and not os.path.exists(v):
                raise FileNotFoundError(f"{task} doc {doc_id}: video {v} is missing. {hint}")

    def _run_request(self, req, session) -> str:
        before = len(session.samples)
        self._generate_s, self._frames_fed, self._second_per_grid = 0.0, None, None
        t0 = now()
        self._timing = True
        try:
            answer = self._generate_one(req)
        finally:
            self._timing = False
        wall = now() - t0
        new = session.samples[before:]
        if len(new) != 1:
            raise RuntimeError(f"expected one generate() call per request, the adapter recorded {len(new)}")
        stats = asdict(new[0]) if is_dataclass(new[0]) else dict(vars(new[0]))
        args = req.args
        stats.update(
            task=args[-2], doc_id=args[-3], preprocess_s=wall - self._generate_s, generate_s=self._generate_s,
            frames_fed=self._frames_fed, second_per_grid_ts=self._second_per_grid,
        )
        self.sample_rows.append(stats)
        return answer

    def clean(self):
        """Keep the modules (lmms-eval's ``clean()`` deletes them); only release cached memory."""
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
