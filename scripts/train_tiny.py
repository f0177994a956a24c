"""Train the tiny LLaVA-OneVision of ``assets/trained_tiny/`` on the synthetic benchmark's train split (CPU, seeded).

    python scripts/train_tiny.py [--out assets/trained_tiny/llava_onevision] [--steps N] [--check-steps N]

The model is the real ``LlavaOnevisionForConditionalGeneration`` (SigLIP tower, 2-layer GELU projector, bilinear
2x2 pooling, one newline per video, Qwen2 LLM) with shrunk widths, 224-px frames (16 x 16 patches -> 8 x 8 = 64
tokens per frame, 8 frames -> 513 visual tokens) and the 265-id byte-level tokenizer of ``vidcom2.testing.tiny``.
Fast route: the SigLIP tower keeps its seeded random init and is frozen; its per-frame features (the projector's
input) are computed once per training clip and cached; the projector, the newline, the LLM, the embeddings and the
head are trained with AdamW on (1) cross-entropy of the answer letter and of the ``<|im_end|>`` after it and (2) an
auxiliary per-visual-token cross-entropy (weight ``aux_weight``): at each pooled token the LM head names the colour
of an object covering >= 1/4 of its 28 x 28 cell (``r g b y``) or ``.`` — dense supervision that lets the tiny LLM
find a 1-4-token object among 512. Curriculum: objects ``scales`` x larger in the first stages.

The prompt is the harness's own (``eval.models.llava_onevision.build_prompt`` around lmms-eval's
``mvbench_doc_to_text``), so training and ``python -m eval.run`` feed the model the same tokens. Deterministic: one
thread, fixed seeds, ``torch.use_deterministic_algorithms``; same environment -> bit-identical weights
(``--check-steps N`` trains N steps twice and compares). Writes the checkpoint (safetensors, config, processor,
tokenizer), ``train_config.json`` and ``train_log.jsonl`` into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from eval.tasks import synthetic_data as sd

CONFIG = dict(
    seed=0, vision_hidden=32, vision_layers=2, text_hidden=64, text_layers=3, text_heads=4, text_kv_heads=2,
    text_intermediate=128, lr=2e-3, weight_decay=0.01, warmup=50, steps=1500, per_task=4, aux_weight=0.5,
    # curriculum stages: [end as a fraction of the steps, object scale, frames per clip]
    stages=[[0.1, 1.5, 4], [1.0, 1.0, 4]],
    pool=[128, 512], val_per_task=32, post_prompt="Only give the best option.\n", deep_answer=64,
)
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


def prompt_ids(processor, task: str, post_prompt: str, frames: int = sd.FRAMES) -> torch.Tensor:
    """``long [L]``: the harness's prompt of ``task`` with the video placeholder expanded (64 ``frames`` + 1 ids)."""
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_text

    from eval.models.llava_onevision import build_prompt

    doc = sd.make_clip(task, "test", 0).doc()
    text = build_prompt(mvbench_doc_to_text(doc, {"post_prompt": post_prompt}))
    blank = np.zeros((frames, sd.SIZE, sd.SIZE, 3), dtype=np.uint8)
    return processor(videos=[blank], text=text, return_tensors="pt")["input_ids"][0]


def aux_labels(clip: sd.Clip) -> np.ndarray:
    """``str [frames, 8, 8]`` (as aux token characters): per pooled cell, the colour covering >= 1/4 of it and the
    cell's quadrant (cells align with the quadrant lines: 4 x 28 px = half the frame)."""
    cell = 28
    side = sd.SIZE // cell
    quad = (np.arange(side)[:, None] >= side // 2) * 2 + (np.arange(side)[None, :] >= side // 2)
    out = np.full((clip.frames, side, side), AUX_NONE, dtype="<U1")
    for s in clip.squares:
        cover = np.zeros((sd.SIZE, sd.SIZE))
        cover[s.y : s.y + s.side, s.x : s.x + s.side] = 1
        frac = cover.reshape(side, cell, side, cell).mean(axis=(1, 3))
        for f in s.frames:
            for q in range(4):
                out[f][(frac >= 0.25) & (quad == q)] = AUX_TOKENS[s.color, q]
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


def make_pool(model, processor, tok, task: str, split: str, n: int, scale: float, offset: int,
              frames: int = sd.FRAMES) -> dict:
    clips = [sd.make_clip(task, split, offset + k, scale=scale, frames=frames) for k in range(n)]
    answers = torch.tensor([tok.convert_tokens_to_ids(LETTERS[sd.CANDIDATES[task].index(c.answer)]) for c in clips])
    aux = np.stack([aux_labels(c) for c in clips]).reshape(n, -1)
    aux_ids = torch.tensor(np.vectorize(tok.convert_tokens_to_ids)(aux), dtype=torch.long)
    return {"feats": encode(model, processor, clips), "answers": answers, "aux": aux_ids}


def forward(model, ids: torch.Tensor, feats: torch.Tensor, answers: torch.Tensor, eos: int):
    """Logits of a batch of one task: ``ids [L]`` shared, ``feats [B, F, 256, D]``, ``answers [B]``.

    Visual features go the model's own way (projector -> ``apply_pooling`` -> newline) and replace the ``<video>``
    embeddings; the sequence is the prompt, the answer letter and ``<|im_end|>``. Returns ``(logits [B, L+2, V],
    video positions [513])``.
    """
    m = model.model
    b = feats.shape[0]
    seq = torch.cat([ids.expand(b, -1), answers[:, None], torch.full((b, 1), eos)], dim=1)
    emb = m.get_input_embeddings()(seq)
    x = m.multi_modal_projector(feats.float().flatten(0, 1))
    x = m.apply_pooling(x).reshape(b, -1, emb.shape[-1])
    x = torch.cat([x, m.image_newline[None, None].expand(b, 1, -1)], dim=1)
    pos = (ids == model.config.video_token_index).nonzero()[:, 0]
    emb = emb.clone()
    emb[:, pos] = x
    return model(inputs_embeds=emb).logits, pos


def losses(model, ids, batch: dict, eos: int, aux_weight: float, deep: int = 0):
    logits, pos = forward(model, ids, batch["feats"], batch["answers"], eos)
    n = ids.shape[0]
    letter = torch.nn.functional.cross_entropy(logits[:, n - 1], batch["answers"])
    stop = torch.nn.functional.cross_entropy(logits[:, n], torch.full_like(batch["answers"], eos))
    aux = torch.nn.functional.cross_entropy(logits[:, pos[:-1]].flatten(0, 1), batch["aux"].flatten())
    acc = (logits[:, n - 1].argmax(-1) == batch["answers"]).float().mean()
    loss = letter + stop + aux_weight * aux
    if deep:  # deep supervision: the last ``deep`` prompt positions (text after the video) also predict the letter
        k = min(deep, n - 1 - int(pos[-1]))
        deep_logits = logits[:, n - 1 - k : n - 1].flatten(0, 1)
        loss = loss + torch.nn.functional.cross_entropy(deep_logits, batch["answers"].repeat_interleave(k))
    return loss, {"letter": letter.item(), "aux": aux.item(), "acc": acc.item()}


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


@torch.no_grad()
def evaluate(model, ids: dict, pools: dict, eos: int) -> dict[str, float]:
    """Answer-letter accuracy (%) per task on cached features (teacher-forced argmax over the vocabulary)."""
    model.eval()
    out = {}
    for task, pool in pools.items():
        hits = 0
        for i in range(0, len(pool["answers"]), 16):
            b = {k: v[i : i + 16] for k, v in pool.items()}
            logits, _ = forward(model, ids[task, sd.FRAMES], b["feats"], b["answers"], eos)
            hits += int((logits[:, ids[task, sd.FRAMES].shape[0] - 1].argmax(-1) == b["answers"]).sum())
        out[task] = 100.0 * hits / len(pool["answers"])
    model.train()
    return out


def train(cfg: dict, log=print):
    """Train from scratch; returns ``(model, processor, log rows)``. Deterministic for a given environment."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    model, processor = build_model(cfg)
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    ids = {(t, f): prompt_ids(processor, t, cfg["post_prompt"], f) for t in sd.TASKS
           for f in sorted({s[2] for s in cfg["stages"]} | {sd.FRAMES})}
    params = trainable(model)
    pools = [{t: make_pool(model, processor, tok, t, "train", n, scale, 10_000 * i, frames) for t in sd.TASKS}
             for i, ((_, scale, frames), n) in enumerate(zip(cfg["stages"], cfg["pool"]))]
    val = {t: make_pool(model, processor, tok, t, "val", cfg["val_per_task"], 1.0, 0) for t in sd.TASKS}
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
            loss, s = losses(model, ids[task, frames], {k: v[pick] for k, v in pool.items()}, eos, cfg["aux_weight"], cfg["deep_answer"])
            (loss / len(sd.TASKS)).backward()
            stats.append(s)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0 or step == cfg["steps"] - 1:
            row = {"step": step, "stage": stage, "lr": round(lr_at(step, cfg), 6),
                   **{k: round(sum(s[k] for s in stats) / len(stats), 4) for k in stats[0]},
                   "s": round(time.perf_counter() - t0, 1)}
            if step % 100 == 0 or step == cfg["steps"] - 1:
                row["val"] = evaluate(model, ids, val, eos)
            rows.append(row)
            log(row)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="assets/trained_tiny/llava_onevision")
    ap.add_argument("--steps", type=int, default=None, help=f"training steps (default {CONFIG['steps']})")
    ap.add_argument("--check-steps", type=int, default=None,
                    help="train this many steps twice on small pools and compare the weights' digests (writes nothing)")
    args = ap.parse_args()
    cfg = dict(CONFIG, steps=args.steps or CONFIG["steps"])
    if args.check_steps:  # the real code path on small pools (8 clips per task and stage): cheap, same kernels
        cfg.update(steps=args.check_steps, pool=[8] * len(cfg["stages"]), val_per_task=8)
        digests = [digest(train(cfg, log=lambda r: None)[0]) for _ in range(2)]
        print(json.dumps({"steps": cfg["steps"], "digests": digests, "identical": digests[0] == digests[1]}))
        raise SystemExit(0 if digests[0] == digests[1] else 1)
    model, processor, rows = train(cfg)
    save(model, processor, cfg, rows, Path(args.out))
    print(f"[saved] {args.out}  weights sha256 {digest(model)[:16]}")


if __name__ == "__main__":
    main()
