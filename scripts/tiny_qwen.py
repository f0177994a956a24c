"""The Qwen2.5-VL route of ``scripts/train_tiny.py`` (``--arch qwen2_5_vl``).

The real ``Qwen2_5_VLForConditionalGeneration`` and ``Qwen2_5_VLProcessor`` (Conv3d patch embedding with a temporal
patch of 2 frames, window-attention vision blocks, the 2x2 patch merger, 3-D M-RoPE) at 224 px: a clip of 4 frames
is 2 temporal patches x 8 x 8 = 128 merged visual tokens (``<|vision_start|> 128 x <|video_pad|> <|vision_end|>``).
The prompt is the one lmms-eval's ``Qwen2_5_VL`` builds (system message, video first, then the MVBench question),
read through ``qwen_vl_utils.process_vision_info`` from a real H.264 clip, so ``video_grid_thw`` and
``second_per_grid_ts`` are the harness's. Positions are ``vidcom2``'s own (the adapter's ``full_positions``, text
rule ``reference``, the harness's default); a dropped token takes its position with it and every kept token keeps
its original 3-D position (the only position mode of the Qwen adapter). The vision blocks stay at their seeded
init and are frozen; their output (the merger's input, in the tower's window order) is cached; the merger is
trained with the LLM.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from eval.tasks import synthetic_data as sd

SYSTEM = "You are a helpful assistant."  # lmms-eval Qwen2_5_VL's default system prompt
PIXELS = sd.SIZE * sd.SIZE  # min_pixels = max_pixels: frames stay 224 x 224


def build(cfg: dict):
    """``(model, processor)``: the tiny Qwen2.5-VL, weights from ``cfg['seed']`` (fp32)."""
    import transformers as tf

    from vidcom2.testing import tiny

    tok = tiny.tokenizer("qwen2_5_vl")
    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS}
    head = cfg["text_hidden"] // cfg["text_heads"]
    # M-RoPE splits the head's 8 frequencies t / h / w = 2 / 3 / 3 (Qwen2.5-VL's 16 / 24 / 24 of 64, scaled): w gets
    # the lowest ones, theta ** (-10/16 .. -14/16) rad per position; at Qwen's 1e6 they are < 2e-4, so a column is
    # invisible to the LLM (``rope_theta`` in train_tiny's ARCH_CONFIGS; docs/synthetic.md)
    rope = {"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 1e6)),
            "mrope_section": [head // 8, 3 * head // 16, 3 * head // 16]}
    text = dict(vocab_size=len(tok), hidden_size=cfg["text_hidden"], intermediate_size=cfg["text_intermediate"],
                num_hidden_layers=cfg["text_layers"], num_attention_heads=cfg["text_heads"],
                num_key_value_heads=cfg["text_kv_heads"], max_position_embeddings=2048, bos_token_id=None,
                eos_token_id=ids["<|im_end|>"], pad_token_id=0, rope_parameters=rope)
    vision = dict(depth=cfg["vision_layers"], hidden_size=cfg["vision_hidden"],
                  intermediate_size=2 * cfg["vision_hidden"], out_hidden_size=cfg["text_hidden"], num_heads=2,
                  window_size=112, fullatt_block_indexes=[cfg["vision_layers"] - 1], tokens_per_second=2)
    config = tf.Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False,
                                 image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                                 vision_start_token_id=ids["<|vision_start|>"],
                                 vision_end_token_id=ids["<|vision_end|>"])
    processor = tf.Qwen2_5_VLProcessor(
        image_processor=tf.Qwen2VLImageProcessor(min_pixels=PIXELS, max_pixels=PIXELS),
        video_processor=tf.Qwen2VLVideoProcessor(min_pixels=PIXELS, max_pixels=PIXELS),
        tokenizer=tok, chat_template=tok.chat_template)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = tf.Qwen2_5_VLForConditionalGeneration(config)
    model = model.to(torch.float32)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return model, processor


def harness_inputs(processor, clip: sd.Clip, post_prompt: str, video_dir: Path) -> dict:
    """The processor outputs lmms-eval's ``Qwen2_5_VL.generate_until`` builds for ``clip`` (its messages,
    ``process_vision_info`` on the written H.264 file, the processor)."""
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_text
    from qwen_vl_utils import process_vision_info

    path = Path(video_dir) / Path(clip.name).name
    if not path.exists():
        sd.write_mp4(clip.render(), path)
    video = {"type": "video", "video": str(path), "max_pixels": PIXELS, "min_pixels": PIXELS}
    text = mvbench_doc_to_text(clip.doc(), {"post_prompt": post_prompt})
    messages = [[{"role": "system", "content": SYSTEM},
                 {"role": "user", "content": [video, {"type": "text", "text": text}]}]]
    texts = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    _, videos = process_vision_info(messages)
    return processor(text=texts, videos=videos, padding=True, return_tensors="pt")


def prompt(processor, task: str, post_prompt: str, frames: int = sd.FRAMES, model=None) -> dict:
    """``{"ids": long [L], "pos": long [3, L], "inputs": processor outputs}`` of ``task``'s harness prompt."""
    from vidcom2.adapters.qwen_vl import QwenVLAdapter

    with tempfile.TemporaryDirectory() as tmp:
        inputs = harness_inputs(processor, sd.make_clip(task, "test", 0, frames=frames), post_prompt, Path(tmp))
    pos = QwenVLAdapter("qwen2_5_vl").full_positions(_Cfg(processor), inputs)[:, 0]
    return {"ids": inputs["input_ids"][0], "pos": pos, "grid": inputs["video_grid_thw"],
            "spg": inputs["second_per_grid_ts"]}


class _Cfg:
    """The two config fields ``QwenVLAdapter.full_positions`` reads (before a model exists)."""

    def __init__(self, processor):
        from types import SimpleNamespace

        vc = SimpleNamespace(spatial_merge_size=processor.video_processor.merge_size, tokens_per_second=2)
        self.config = SimpleNamespace(vision_config=vc)


def _merger_input(model, pixels: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(merger input of one clip [N, D] in the tower's window order, the tower's output [N/4, D'] in prompt order)."""
    seen = []
    hook = model.model.visual.merger.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        out = model.model.get_video_features(pixels, grid, return_dict=True).pooler_output
    finally:
        hook.remove()
    return seen[0], torch.cat(list(out)) if isinstance(out, (list, tuple)) else out


def merger_order(model, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The permutation that puts the merger's rows in prompt order (it depends on the grid only), recovered on
    seeded noise pixels (a plain-colour clip has many equal rows)."""
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0))
    x, out = _merger_input(model, noise, grid)
    perm = torch.cdist(out, model.model.visual.merger(x)).argmin(1)
    if perm.unique().numel() != perm.numel():
        raise RuntimeError("could not recover the merger's window order")
    return perm


@torch.no_grad()
def encode(model, processor, clips: list[sd.Clip]) -> torch.Tensor:
    """``float16 [n, N, D]``: the frozen blocks' output (the merger's input) per clip, from the rendered frames."""
    feats = []
    for clip in clips:
        vp = processor.video_processor(videos=[clip.render()], return_tensors="pt")
        if Qwen.perm is None:
            Qwen.perm = merger_order(model, vp["pixel_values_videos"], vp["video_grid_thw"])
        feats.append(_merger_input(model, vp["pixel_values_videos"], vp["video_grid_thw"])[0].to(torch.float16))
    return torch.stack(feats)


def forward(model, prompt: dict, feats: torch.Tensor, answers: torch.Tensor, eos: int,
            keep: torch.Tensor | None = None):
    """Logits of a batch of one task (see ``train_tiny.forward``); ``keep [B, 128]`` drops visual tokens the way the
    harness does for Qwen: the kept ones stay in order and keep their original 3-D positions; the text after the
    video keeps its positions. Returns ``(logits, kept visual columns [K], last video column)``."""
    m = model.model
    b = feats.shape[0]
    x = m.visual.merger(feats.float().flatten(0, 1)).reshape(b, -1, m.get_input_embeddings().embedding_dim)
    x = x[:, Qwen.perm]
    ids, pos = prompt["ids"], prompt["pos"]
    cols = (ids == model.config.video_token_id).nonzero()[:, 0]
    start, end = int(cols[0]), int(cols[-1]) + 1
    if keep is None:
        keep = torch.ones(x.shape[:2], dtype=torch.bool)
    k = int(keep[0].sum())
    x = x[keep].reshape(b, k, -1)
    vis_pos = pos[:, start:end].expand(b, -1, -1).transpose(0, 1)[:, keep].reshape(3, b, k)
    p = torch.cat([pos[:, :start, None].expand(-1, -1, b).transpose(1, 2), vis_pos,
                   pos[:, end:, None].expand(-1, -1, b).transpose(1, 2)], dim=2)
    top = p.amax(dim=(0, 2))  # [B]
    p = torch.cat([p, (top[None, :, None] + torch.arange(1, 3)[None, None]).expand(3, -1, -1)], dim=2)
    ids = torch.cat([ids[: start + k], ids[end:]])
    seq = torch.cat([ids.expand(b, -1), answers[:, None], torch.full((b, 1), eos)], dim=1)
    emb = m.get_input_embeddings()(seq).clone()
    emb[:, start : start + k] = x
    text_rows = torch.arange(seq.shape[1]).expand(b, -1)[None]
    logits = model(inputs_embeds=emb, position_ids=torch.cat([text_rows, p])).logits
    return logits, torch.arange(start, start + k), start + k - 1


def trainable(model) -> list[torch.nn.Parameter]:
    """Everything but the vision blocks and patch embedding (frozen at their seeded init); the merger trains."""
    for name, p in model.model.visual.named_parameters():
        p.requires_grad_(name.startswith("merger."))
    return [p for p in model.parameters() if p.requires_grad]


class Qwen:
    """The Qwen2.5-VL route: one token group per temporal patch of 2 frames (``fpg`` 2)."""

    fpg = 2
    perm: torch.Tensor | None = None  # merger rows -> prompt order (set by encode; the same for every 224-px clip)
    build = staticmethod(build)
    prompt = staticmethod(prompt)
    encode = staticmethod(encode)
    forward = staticmethod(forward)
    trainable = staticmethod(trainable)
