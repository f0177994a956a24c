"""Train the tiny video LLMs of ``assets/trained_tiny/`` on the synthetic benchmark's train split (CPU, seeded).

    python scripts/train_tiny.py [--arch llava_onevision|qwen2_5_vl] [--recipe base|augment] [--init DIR]
                                 [--out DIR] [--steps N] [--check-steps N] [--set KEY=JSON]

Two phases per model (``make train-tiny`` runs both; docs/synthetic.md): ``--recipe base`` trains from the seeded
init with all visual tokens (1500 steps); ``--recipe augment --init <base checkpoint>`` continues from those weights
(fresh AdamW, 600 steps) with visual-token-removal augmentation: per task group of 4 clips, all tokens with
probability 0.3, else a keep ratio drawn uniformly from [0.08, 0.6] and a subset drawn by one of ``drop_modes``
(random over the clip, random per frame, evenly spaced per frame at a random phase, whole frames, object tokens
first) — the sequence the harness's pre-LLM pruning feeds the model (kept tokens in order, the newline kept,
positions contiguous for LLaVA-OV / original 3-D positions for Qwen). The letter losses are skipped on samples whose
kept tokens cover no token of an object the answer needs (the answer is not in the input); the per-token auxiliary
loss runs on every kept token.

LLaVA-OV: the real ``LlavaOnevisionForConditionalGeneration`` (SigLIP tower, 2-layer GELU projector, bilinear 2x2
pooling, one newline per video, Qwen2 LLM) with shrunk widths, 224-px frames (16 x 16 patches -> 8 x 8 = 64 tokens
per frame, 4 frames -> 257 visual tokens) and the 265-id byte-level tokenizer of ``vidcom2.testing.tiny``.
Qwen2.5-VL: ``scripts/tiny_qwen.py``. Fast route: the vision tower keeps its seeded random init and is frozen; its
per-frame features (the projector's / merger's input) are computed once per training clip and cached; the rest is
trained with AdamW on (1) cross-entropy of the answer letter and of the ``<|im_end|>`` after it, the letter also
from the last 64 prompt positions, and (2) an auxiliary per-visual-token cross-entropy (weight ``aux_weight``): at
each pooled token the LM head names the colour x quadrant of an object covering >= 1/4 of its 28 x 28 cell, or ``.``
(``aux_object_weight``: an object token's weight in that mean; 8 for Qwen, 1 for LLaVA-OV).

The prompt is the harness's own (LLaVA-OV: ``eval.models.llava_onevision.build_prompt`` around lmms-eval's
``mvbench_doc_to_text``; Qwen: lmms-eval's ``Qwen2_5_VL`` messages), so training and ``python -m eval.run`` feed the
model the same tokens. Deterministic: one thread, fixed seeds, ``torch.use_deterministic_algorithms``; same
environment -> bit-identical weights (``--check-steps N`` trains N steps twice and compares). Writes the checkpoint
(safetensors, config, processor, tokenizer), ``train_config.json`` and ``train_log.jsonl`` into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from eval.tasks import synthetic_data as sd

CONFIG = dict(
    seed=0, vision_hidden=32, vision_layers=2, text_hidden=64, text_layers=3, text_heads=4, text_kv_heads=2,
    text_intermediate=128, lr=2e-3, weight_decay=0.01, warmup=50, steps=1500, per_task=4, aux_weight=0.5,
    # curriculum stages: [end as a fraction of the steps, object scale, frames per clip, p_full (the probability
    # that a task group keeps all its visual tokens; 1.0 = no token-removal augmentation)]
    stages=[[0.1, 1.5, 4, 1.0], [1.0, 1.0, 4, 1.0]],
    pool=[128, 512], val_per_task=32, post_prompt="Only give the best option.\n", deep_answer=64,
    # visual-token-removal augmentation (what the harness's pre-LLM pruning does: drop visual tokens, keep the
    # newline, renumber positions contiguously): per task group, keep all with the stage's p_full, else a keep ratio drawn
    # from `keep_ratio` and a subset drawn by one of `drop_modes` (weights); the letter losses are skipped on
    # samples whose kept tokens cover none of an object the answer needs
    keep_ratio=[0.08, 0.6], drop_modes={"random": 0.3, "random_frame": 0.2, "uniform": 0.2,
                                                    "frames": 0.15, "objects": 0.15},
)
# phase 2 (`--recipe augment --init <phase-1 checkpoint>`): visual-token-removal augmentation from phase 1's weights
AUGMENT = dict(CONFIG, steps=600, lr=1e-3, warmup=30, stages=[[1.0, 1.0, 4, 0.3]], pool=[512])
RECIPES = {"base": CONFIG, "augment": AUGMENT}
# the Qwen2.5-VL of `--arch qwen2_5_vl` (scripts/tiny_qwen.py): the same widths and recipes, but M-RoPE's
# rope_theta 10 instead of Qwen's 1e6 (head_dim 16: at 1e6 the w axis turns < 2e-4 rad per column and the LLM cannot
# tell left from right; at 10 it turns 0.13-0.24 rad per column), an object token weighing 8 background tokens in the
# auxiliary loss (its tower has no absolute position embedding: a token learns its quadrant from M-RoPE alone, and
# the ~5% object tokens were drowned by the background), and a 1000-step phase 1 (docs/synthetic.md, History)
ARCH_CONFIGS = {"llava_onevision": {}, "qwen2_5_vl": {"arch": "qwen2_5_vl", "rope_theta": 10.0,
                                                      "aux_object_weight": 8.0}}
ARCH_RECIPES = {("qwen2_5_vl", "base"): {"steps": 1000}}
# aux class of a pooled token: its object's colour x the quadrant the token lies in (16 letters), or "." (none)
AUX_TOKENS = {(c, q): "abcdefghijklmnop"[4 * i + q] for i, c in enumerate(sd.COLORS) for q in range(4)}
AUX_NONE = "."
LETTERS = "ABCD"


def build_model(cfg: dict):
    """``(model, processor)``: the tiny LLaVA-OV at 224 px, weights from ``cfg['seed']`` (fp32)."""
    import transformers as tf

    from vidcom2.testing import tiny

    tok = tiny.tokenizer("llava_onevision")
    vision = tf.SiglipVisionConfig(hidden_size=cfg["vision_hidden"], intermediate_size=2 * cfg["vision_hidden"],
                                   num_hidden_layers=cfg["vision_layers"], num_attention_heads=2, image_size=sd.SIZE,
                                   patch_size=14, vision_use_head=False)
    text = tf.Qwen2Config(vocab_size=len(tok), hidden_size=cfg["text_hidden"], intermediate_size=cfg["text_intermediate"],
                          num_hidden_layers=cfg["text_layers"], num_attention_heads=cfg["text_heads"],
                          num_key_value_heads=cfg["text_kv_heads"], max_position_embeddings=2048, bos_token_id=None,
                          eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=0)
    config = tf.LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                     image_token_index=tok.convert_tokens_to_ids("<image>"),
                                     video_token_index=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
                                     vision_feature_select_strategy="full", tie_word_embeddings=False)
    processor = tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(size={"height": sd.SIZE, "width": sd.SIZE}),
        video_processor=tf.LlavaOnevisionVideoProcessor(size={"height": sd.SIZE, "width": sd.SIZE}),
        tokenizer=tok, num_image_tokens=(sd.SIZE // 14) ** 2, vision_feature_select_strategy="full",
        chat_template=tok.chat_template)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = tf.LlavaOnevisionForConditionalGeneration(config)
    model = model.to(torch.float32)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = text.eos_token_id
    return model, processor


def prompt_ids(processor, task: str, post_prompt: str, frames: int = sd.FRAMES) -> dict:
    """``{"ids": long [L]}``: the harness's prompt of ``task`` with the video placeholder expanded (64 ``frames`` +
    1 ids)."""
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_text

    from eval.models.llava_onevision import build_prompt

    doc = sd.make_clip(task, "test", 0).doc()
    text = build_prompt(mvbench_doc_to_text(doc, {"post_prompt": post_prompt}))
    blank = np.zeros((frames, sd.SIZE, sd.SIZE, 3), dtype=np.uint8)
    return {"ids": processor(videos=[blank], text=text, return_tensors="pt")["input_ids"][0]}


def aux_labels(clip: sd.Clip, fpg: int = 1) -> np.ndarray:
    """``str [frames / fpg, 8, 8]`` (as aux token characters): per pooled cell (of a group of ``fpg`` frames: Qwen's
    temporal patch is 2), the colour covering >= 1/4 of it and the cell's quadrant (cells align with the quadrant
    lines: 4 x 28 px = half the frame)."""
    cell = 28
    side = sd.SIZE // cell
    quad = (np.arange(side)[:, None] >= side // 2) * 2 + (np.arange(side)[None, :] >= side // 2)
    out = np.full((clip.frames // fpg, side, side), AUX_NONE, dtype="<U1")
    for s in clip.squares:
        cover = np.zeros((sd.SIZE, sd.SIZE))
        cover[s.y : s.y + s.side, s.x : s.x + s.side] = 1
        frac = cover.reshape(side, cell, side, cell).mean(axis=(1, 3))
        for f in s.frames:
            for q in range(4):
                out[f // fpg][(frac >= 0.25) & (quad == q)] = AUX_TOKENS[s.color, q]
    return out


@torch.no_grad()
def encode(model, processor, clips: list[sd.Clip], batch: int = 16) -> torch.Tensor:
    """``float16 [n, frames, 256, D]``: the frozen tower's features (the projector's input) of each clip."""
    feats, seen = [], []
    hook = model.model.multi_modal_projector.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        for i in range(0, len(clips), batch):
            videos = [c.render() for c in clips[i : i + batch]]
            pv = processor.video_processor(videos=videos, return_tensors="pt")["pixel_values_videos"]
            seen.clear()
            model.model.get_video_features(pv, vision_feature_layer=-1, vision_feature_select_strategy="full")
            feats.append(seen[0].reshape(len(videos), clips[i].frames, *seen[0].shape[1:]).to(torch.float16))
    finally:
        hook.remove()
    return torch.cat(feats)


NEED = {"event": 1, "location": 1, "order": 2, "control": 0}  # objects whose tokens the answer needs


def need_masks(clip: sd.Clip, fpg: int = 1) -> np.ndarray:
    """``bool [2, frames / fpg * 64]``: per object the answer needs, its pooled tokens (>= 1/4 covered, in its
    frames); all True for a row that needs nothing (a kept token of every row = the answer is in the kept tokens)."""
    cell, side = 28, sd.SIZE // 28
    out = np.ones((2, clip.frames // fpg, side, side), dtype=bool)
    for i, s in enumerate(clip.squares[: NEED[clip.task]]):
        cover = np.zeros((sd.SIZE, sd.SIZE))
        cover[s.y : s.y + s.side, s.x : s.x + s.side] = 1
        frac = cover.reshape(side, cell, side, cell).mean(axis=(1, 3))
        out[i] = False
        out[i, sorted({f // fpg for f in s.frames})] = frac >= 0.25
    return out.reshape(2, -1)


def cached_encode(arch, model, processor, clips: list[sd.Clip], key: str, cache: Path | None) -> torch.Tensor:
    """``arch.encode`` through an optional on-disk cache (``--cache-dir``): the frozen tower's features of a pool are
    the same for every recipe, so reruns skip the encoding (minutes). The file is keyed by the frozen weights, the
    pool, the data generator's and the encoder's source and the versions; a hit is checked against a fresh encoding
    of its first batch (bit for bit), so a stale cache fails loudly instead of training on other features."""
    if cache is None:
        return arch.encode(model, processor, clips)
    import inspect
    import sys

    import transformers

    h = hashlib.sha256(f"{key}|{torch.__version__}|{transformers.__version__}".encode())
    h.update(Path(sd.__file__).read_bytes())
    h.update(Path(inspect.getsourcefile(sys.modules[arch.encode.__module__])).read_bytes())
    for name, p in sorted(model.named_parameters()):
        if not p.requires_grad:  # the frozen tower (arch.trainable ran before the pools are made)
            h.update(name.encode())
            h.update(p.detach().contiguous().numpy().tobytes())
    path = Path(cache) / f"{h.hexdigest()[:24]}.pt"
    if path.exists():
        feats = torch.load(path)
        if not torch.equal(arch.encode(model, processor, clips[:16]), feats[:16]):  # the first batch, as computed
            raise SystemExit(f"error: --cache-dir {cache}: {path.name} does not match a fresh encoding; delete it")
        return feats
    feats = arch.encode(model, processor, clips)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(feats, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return feats


def make_pool(arch, model, processor, task: str, split: str, n: int, scale: float, offset: int,
              frames: int = sd.FRAMES, cache: Path | None = None) -> dict:
    tok = processor.tokenizer
    clips = [sd.make_clip(task, split, offset + k, scale=scale, frames=frames) for k in range(n)]
    answers = torch.tensor([tok.convert_tokens_to_ids(LETTERS[sd.CANDIDATES[task].index(c.answer)]) for c in clips])
    aux = np.stack([aux_labels(c, arch.fpg) for c in clips]).reshape(n, -1)
    aux_ids = torch.tensor(np.vectorize(tok.convert_tokens_to_ids)(aux), dtype=torch.long)
    need = torch.from_numpy(np.stack([need_masks(c, arch.fpg) for c in clips]))
    feats = cached_encode(arch, model, processor, clips, f"{task}|{split}|{n}|{scale}|{offset}|{frames}", cache)
    return {"feats": feats, "answers": answers, "aux": aux_ids, "need": need}


def keep_mask(gen, mode: str, ratio: float, b: int, frames: int, obj: torch.Tensor | None = None,
              n: int = 64, phase: float | None = None) -> torch.Tensor:
    """``bool [b, frames * n]``: the visual tokens a pre-LLM pruning keeps, the same count in every row.

    ``random``: ``frames * k`` tokens over the clip (k = round(ratio * n) >= 1); ``random_frame``: k random tokens
    per frame (the harness's ``random``); ``uniform``: k evenly spaced tokens per frame at a random phase
    (``phase=0.5`` is the harness's ``uniform``); ``frames``: round(ratio * frames) >= 1 whole frames;
    ``objects``: the object tokens (``obj``) first, the rest random (what a distinctiveness score keeps).
    """
    k = max(1, round(ratio * n))
    t = frames * n
    if mode in ("random", "objects"):
        noise = torch.rand((b, t), generator=gen) - (2.0 * obj if mode == "objects" else 0.0)
        return _lowest(noise, frames * k)
    if mode == "random_frame":
        return _lowest(torch.rand((b * frames, n), generator=gen), k).reshape(b, t)
    if mode == "uniform":
        u = torch.rand((b * frames, 1), generator=gen) if phase is None else torch.full((b * frames, 1), phase)
        idx = ((torch.arange(k) + u) * n / k).floor().long().clamp(max=n - 1)
        return torch.zeros((b * frames, n), dtype=torch.bool).scatter_(1, idx, True).reshape(b, t)
    if mode == "frames":
        pick = _lowest(torch.rand((b, frames), generator=gen), max(1, round(ratio * frames)))
        return pick[:, :, None].expand(b, frames, n).reshape(b, t)
    raise ValueError(f"keep_mask: unknown mode {mode!r}")


def _lowest(noise: torch.Tensor, k: int) -> torch.Tensor:
    idx = noise.argsort(dim=1, stable=True)[:, :k]
    return torch.zeros_like(noise, dtype=torch.bool).scatter_(1, idx, True)


def draw_keep(gen, cfg: dict, batch: dict, frames: int, none_id: int, p_full: float) -> torch.Tensor | None:
    """The augmentation of one task group: ``None`` (all tokens) with ``p_full``, else a :func:`keep_mask`."""
    if p_full >= 1.0 or float(torch.rand((), generator=gen)) < p_full:  # no draw at 1.0: the run-4 RNG stream
        return None
    lo, hi = cfg["keep_ratio"]
    ratio = lo + (hi - lo) * float(torch.rand((), generator=gen))
    modes = list(cfg["drop_modes"])
    mode = modes[int(torch.multinomial(torch.tensor([cfg["drop_modes"][m] for m in modes]), 1, generator=gen))]
    return keep_mask(gen, mode, ratio, len(batch["answers"]), frames, (batch["aux"] != none_id).float())


def forward(model, prompt: dict, feats: torch.Tensor, answers: torch.Tensor, eos: int,
            keep: torch.Tensor | None = None):
    """Logits of a batch of one task: ``prompt["ids"] [L]`` shared, ``feats [B, F, 256, D]``, ``answers [B]``.

    Visual features go the model's own way (projector -> ``apply_pooling`` -> newline) and replace the ``<video>``
    embeddings; the sequence is the prompt, the answer letter and ``<|im_end|>``. ``keep [B, F*64]`` (the same count
    per row) drops visual tokens the way the harness's pre-LLM pruning does: the kept ones stay in order, the
    newline stays after them, positions are contiguous (the model's default). Returns ``(logits [B, L'+2, V],
    columns of the kept visual tokens [K], last video column)``.
    """
    m = model.model
    ids = prompt["ids"]
    b = feats.shape[0]
    x = m.multi_modal_projector(feats.float().flatten(0, 1))
    x = m.apply_pooling(x).reshape(b, -1, m.get_input_embeddings().embedding_dim)
    pos = (ids == model.config.video_token_index).nonzero()[:, 0]
    if keep is not None:
        x = x[keep].reshape(b, -1, x.shape[-1])
        ids = torch.cat([ids[: int(pos[0]) + x.shape[1] + 1], ids[int(pos[-1]) + 1 :]])
        pos = pos[: x.shape[1] + 1]
    seq = torch.cat([ids.expand(b, -1), answers[:, None], torch.full((b, 1), eos)], dim=1)
    emb = m.get_input_embeddings()(seq).clone()
    emb[:, pos] = torch.cat([x, m.image_newline[None, None].expand(b, 1, -1)], dim=1)
    return model(inputs_embeds=emb).logits, pos[:-1], int(pos[-1])


def _masked_ce(logits: torch.Tensor, target: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if w is None:  # all tokens kept: the plain mean (bit for bit the run-4 loss)
        return torch.nn.functional.cross_entropy(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    return (ce * w).sum() / w.sum().clamp(min=1.0)


def losses(arch, model, prompt, batch: dict, eos: int, aux_weight: float, deep: int = 0, keep=None,
           obj_weight: float = 1.0, none_id: int = -1):
    """Letter + ``<|im_end|>`` (+ deep supervision) on the samples whose answer is in the kept tokens, and the
    per-token auxiliary loss on the kept tokens (``obj_weight``: a token of an object counts that many background
    tokens in its mean; 1.0 = the plain mean)."""
    logits, vis, last = arch.forward(model, prompt, batch["feats"], batch["answers"], eos, keep)
    n = logits.shape[1] - 2
    aux_t = batch["aux"] if keep is None else batch["aux"][keep].reshape(keep.shape[0], -1)
    w = None if keep is None else (batch["need"] & keep[:, None]).any(-1).all(-1).float()
    letter = _masked_ce(logits[:, n - 1], batch["answers"], w)
    stop = _masked_ce(logits[:, n], torch.full_like(batch["answers"], eos), w)
    aux = torch.nn.functional.cross_entropy(logits[:, vis].flatten(0, 1), aux_t.flatten())
    if obj_weight != 1.0:
        w_tok = 1.0 + (obj_weight - 1.0) * (aux_t.flatten() != none_id).float()
        aux = (torch.nn.functional.cross_entropy(logits[:, vis].flatten(0, 1), aux_t.flatten(), reduction="none")
               * w_tok).sum() / w_tok.sum()
    acc = (logits[:, n - 1].argmax(-1) == batch["answers"]).float().mean()
    loss = letter + stop + aux_weight * aux
    if deep:  # deep supervision: the last ``deep`` prompt positions (text after the video) also predict the letter
        k = min(deep, n - 1 - last)
        deep_logits = logits[:, n - 1 - k : n - 1].flatten(0, 1)
        loss = loss + _masked_ce(deep_logits, batch["answers"].repeat_interleave(k),
                                 None if w is None else w.repeat_interleave(k))
    return loss, {"letter": letter.item(), "aux": aux.item(), "acc": acc.item(),
                  "answerable": 1.0 if w is None else float(w.mean())}


def stage_of(step: int, cfg: dict) -> int:
    return next(i for i, stage in enumerate(cfg["stages"]) if step < stage[0] * cfg["steps"])


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr``."""
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    t = (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"])
    return cfg["lr"] * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))


def trainable(model) -> list[torch.nn.Parameter]:
    """Everything but the SigLIP tower (frozen at its seeded init)."""
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    return [p for n, p in model.named_parameters() if p.requires_grad]


class Llava:
    """The LLaVA-OV route: one token group per frame (``fpg`` 1)."""

    fpg = 1
    build = staticmethod(build_model)
    prompt = staticmethod(prompt_ids)
    encode = staticmethod(encode)
    forward = staticmethod(forward)
    trainable = staticmethod(trainable)


def arch_of(cfg: dict):
    if cfg.get("arch", "llava_onevision") == "llava_onevision":
        return Llava
    import tiny_qwen

    return tiny_qwen.Qwen


EVAL_KEEP = {"all": None, "random25": ("random_frame", 0.25), "uniform25": ("uniform", 0.25)}


@torch.no_grad()
def evaluate(arch, model, ids: dict, pools: dict, eos: int) -> dict[str, dict[str, float]]:
    """Answer-letter accuracy (%) per task on cached features (teacher-forced argmax over the vocabulary), with all
    tokens and under the harness's ``random`` / ``uniform`` at 0.25 (a fixed seed)."""
    model.eval()
    out = {}
    for name, spec in EVAL_KEEP.items():
        gen = torch.Generator().manual_seed(1234)
        out[name] = {}
        for task, pool in pools.items():
            hits = 0
            for i in range(0, len(pool["answers"]), 16):
                b = {k: v[i : i + 16] for k, v in pool.items()}
                keep = None if spec is None else keep_mask(gen, spec[0], spec[1], len(b["answers"]),
                                                           sd.FRAMES // arch.fpg, phase=0.5)
                logits = arch.forward(model, ids[task, sd.FRAMES], b["feats"], b["answers"], eos, keep)[0]
                hits += int((logits[:, logits.shape[1] - 3].argmax(-1) == b["answers"]).sum())
            out[name][task] = 100.0 * hits / len(pool["answers"])
    model.train()
    return out


def train(cfg: dict, log=print, cache: Path | None = None, stop_after: int | None = None):
    """Train from scratch (or ``cfg['init']``); returns ``(model, processor, log rows)``. Deterministic for a given
    environment. ``stop_after``: leave after step ``stop_after`` of the full schedule (``--verify``)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    arch = arch_of(cfg)
    model, processor = arch.build(cfg)
    if cfg.get("init"):  # a second phase: start from a checkpoint's weights (fresh optimizer and schedule)
        gen_cfg = model.generation_config
        model = type(model).from_pretrained(cfg["init"], dtype=torch.float32)
        model.generation_config = gen_cfg
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    none_id = tok.convert_tokens_to_ids(AUX_NONE)
    ids = {(t, f): arch.prompt(processor, t, cfg["post_prompt"], f) for t in sd.TASKS
           for f in sorted({s[2] for s in cfg["stages"]} | {sd.FRAMES})}
    params = arch.trainable(model)
    pools = [{t: make_pool(arch, model, processor, t, "train", n, scale, 10_000 * i, frames, cache) for t in sd.TASKS}
             for i, ((_, scale, frames, _), n) in enumerate(zip(cfg["stages"], cfg["pool"]))]
    val = {t: make_pool(arch, model, processor, t, "val", cfg["val_per_task"], 1.0, 0, cache=cache) for t in sd.TASKS}
    rows = [{"event": "cached", "s": round(time.perf_counter() - t0, 1)}]
    log(rows[-1])
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(cfg["seed"])
    model.train()
    for step in range(cfg["steps"]):
        stage = stage_of(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        stats = []
        for task in sd.TASKS:
            pool = pools[stage][task]
            pick = torch.randint(len(pool["answers"]), (cfg["per_task"],), generator=gen)
            frames = cfg["stages"][stage][2]
            batch = {k: v[pick] for k, v in pool.items()}
            keep = draw_keep(gen, cfg, batch, frames // arch.fpg, none_id, cfg["stages"][stage][3])
            loss, s = losses(arch, model, ids[task, frames], batch, eos, cfg["aux_weight"], cfg["deep_answer"], keep,
                             cfg.get("aux_object_weight", 1.0), none_id)
            (loss / len(sd.TASKS)).backward()
            stats.append(s)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0 or step == cfg["steps"] - 1:
            row = {"step": step, "stage": stage, "lr": round(lr_at(step, cfg), 6),
                   **{k: round(sum(s[k] for s in stats) / len(stats), 4) for k in stats[0]},
                   "s": round(time.perf_counter() - t0, 1)}
            if step % 100 == 0 or step == cfg["steps"] - 1:
                row["val"] = evaluate(arch, model, ids, val, eos)
            row["sha"] = digest(model)[:16]  # the weights after this step: a rerun's rows prove bit-identity
            rows.append(row)
            log(row)
        if stop_after is not None and step >= stop_after:  # the row of step `stop_after` is logged (a multiple of 25)
            break
    model.eval()
    return model, processor, rows


def digest(model) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, bytes): equal digests = bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def save(model, processor, cfg: dict, rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "train_config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "weights_sha256.txt").write_text(digest(model) + "\n")


def verify(out: Path, steps: int, cache: Path | None) -> int:
    """``--verify``: 0 when a rerun of steps 0..``steps`` logs exactly the rows of ``out/train_log.jsonl``."""
    cfg = json.loads((out / "train_config.json").read_text())
    logged = {r["step"]: r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "step" in r}
    rows = [r for r in train(cfg, log=lambda r: None, cache=cache, stop_after=steps)[2] if "step" in r]
    # every field the log holds but the time (a log written before the digest was logged has no "sha")
    diff = [r["step"] for r in rows if r["step"] not in logged
            or any(r.get(k) != v for k, v in logged[r["step"]].items() if k != "s")]
    print(json.dumps({"checkpoint": str(out), "steps": steps, "rows": [r["step"] for r in rows],
                      "sha": rows[-1].get("sha"), "identical": not diff, "differ": diff}))
    return 1 if diff else 0


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/tiny_qwen.py
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="llava_onevision", choices=sorted(ARCH_CONFIGS))
    ap.add_argument("--recipe", default="base", choices=sorted(RECIPES),
                    help="base: phase 1, all tokens; augment: phase 2, token-removal augmentation (needs --init)")
    ap.add_argument("--out", default=None, help="checkpoint folder (default assets/trained_tiny/<arch>)")
    ap.add_argument("--steps", type=int, default=None, help=f"training steps (default {CONFIG['steps']})")
    ap.add_argument("--check-steps", type=int, default=None,
                    help="train this many steps twice on small pools and compare the weights' digests (writes nothing)")
    ap.add_argument("--init", default=None, help="start from this checkpoint's weights (a second training phase)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override one CONFIG entry for an experiment, e.g. --set 'stages=[[1.0, 1.0, 4, 1.0]]'")
    ap.add_argument("--cache-dir", default=None, help="cache the frozen tower's features of each pool here")
    ap.add_argument("--verify", type=int, default=None, metavar="N",
                    help="retrain steps 0..N of --out's own train_config.json (full pools) and compare every "
                         "logged row but its time (losses, validation, weight digest) with --out's train_log.jsonl")
    args = ap.parse_args()
    if args.verify:
        raise SystemExit(verify(Path(args.out or f"assets/trained_tiny/{args.arch}"), args.verify, args.cache_dir))
    base = dict(RECIPES[args.recipe], **ARCH_CONFIGS[args.arch], **ARCH_RECIPES.get((args.arch, args.recipe), {}))
    cfg = dict(base, steps=args.steps or base["steps"])
    out = Path(args.out or f"assets/trained_tiny/{args.arch}")
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in base:
            raise SystemExit(f"error: --set {key}: not a CONFIG key; choose one of {sorted(CONFIG)}")
        cfg[key] = json.loads(value)
    if args.init:
        cfg["init"] = args.init
    if args.check_steps:  # the real code path on small pools (8 clips per task and stage): cheap, same kernels
        cfg.update(steps=args.check_steps, pool=[8] * len(cfg["stages"]), val_per_task=8)
        digests = [digest(train(cfg, log=lambda r: None)[0]) for _ in range(2)]
        print(json.dumps({"steps": cfg["steps"], "digests": digests, "identical": digests[0] == digests[1]}))
        raise SystemExit(0 if digests[0] == digests[1] else 1)
    model, processor, rows = train(cfg, cache=args.cache_dir)
    save(model, processor, cfg, rows, out)
    print(f"[saved] {out}  weights sha256 {digest(model)[:16]}")


if __name__ == "__main__":
    main()
