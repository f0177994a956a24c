"""Tiny random-weight video LLMs of the four supported HF classes, built offline in seconds; ``llava_video`` is the
LLaVA-OV model with LLaVA-NeXT's pooling keys in its config (182 video tokens per frame, see
``vidcom2.adapters.llava_video``).

Recipe: shared/spec/hooks_transformers.md section 9 (verified against transformers 5.23.0).
The configs keep the real image size / patch / merge / temporal-patch geometry, so a frame yields the real
number of visual tokens (LLaVA-OV 196 per frame + 1 newline per video; Qwen2/2.5-VL (H/28)*(W/28) per temporal
patch; Qwen3-VL (H/32)*(W/32)); widths and depths are shrunk. The tokenizer is a byte-level BPE with no merges
plus the special tokens of both families, built in memory (265 ids). Models are fp32, in eval mode, and their
weights depend only on ``seed``.

    model, processor = build("qwen2_vl")
    video = make_video(8, 112, 140, seed=0)                 # uint8 [F, H, W, 3]
    batch = inputs("qwen2_vl", processor, video, "What moves?")
    model.generate(**batch, max_new_tokens=4, do_sample=False)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

ARCHS = ("llava_onevision", "llava_video", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# further tiny architectures that are served by one of the families above (arch -> adapter family):
# qwen3_vl_moe is Qwen3-VL-MoE (Qwen3-VL-30B-A3B's class): the Qwen3-VL layout and vision tower, sparse-MoE MLPs
EXTRA_ARCHS = {"qwen3_vl_moe": "qwen3_vl"}
ALL_ARCHS = (*ARCHS, *EXTRA_ARCHS)
# llava_video: the LLaVA-OV weights (same seed, same tensors) plus LLaVA-NeXT's pooling keys in the config, which
# select the vidcom2 llava_video adapter; inputs() rewrites the prompt to F*182 video tokens per video
_LLAVA = ("llava_onevision", "llava_video")
_LLAVA_VIDEO_KEYS = dict(mm_spatial_pool_mode="average", mm_spatial_pool_stride=2, mm_newline_position="grid")

SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<video>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen-style chat template (role lines between <|im_start|> and <|im_end|>); a content item of type "video" /
# "image" becomes the family's placeholder. ``video_placeholder`` is substituted per family in _chat_template.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}@VIDEO@"
    "{% elif item['type'] == 'image' %}@IMAGE@"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _check_arch(arch: str) -> str:
    """``arch``'s adapter family (itself for the five family archs); unknown names raise."""
    if arch not in ALL_ARCHS:
        import difflib

        hint = difflib.get_close_matches(arch, ALL_ARCHS, n=1)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ALL_ARCHS}.{extra}")
    return EXTRA_ARCHS.get(arch, arch)


def family(arch: str) -> str:
    """The vidcom2 adapter family that serves the tiny architecture ``arch``."""
    return _check_arch(arch)


def _chat_template(arch: str) -> str:
    if arch in _LLAVA:
        return _CHAT_TEMPLATE.replace("@VIDEO@", "<video>\n").replace("@IMAGE@", "<image>\n")
    return _CHAT_TEMPLATE.replace("@VIDEO@", "<|vision_start|><|video_pad|><|vision_end|>").replace(
        "@IMAGE@", "<|vision_start|><|image_pad|><|vision_end|>"
    )


def tokenizer(arch: str = "qwen2_vl"):
    """Byte-level ``Qwen2Tokenizer`` (no merges) + the special tokens: 265 ids, round-trips any UTF-8 text."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = sorted(bytes_to_unicode().values())
    vocab = {"<|endoftext|>": 0}
    vocab.update({c: i + 1 for i, c in enumerate(byte_chars)})
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>", bos_token=None, unk_token=None)
    tok.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]}
    )
    tok.eos_token = "<|im_end|>"
    tok.chat_template = _chat_template(arch)
    return tok


def _text_config(tok, text_layers: int) -> dict:
    return dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=0,
    )


def _config(arch: str, tok, text_layers: int):
    import transformers as tf

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = _text_config(tok, text_layers)
    if arch in _LLAVA:
        vision = tf.SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=384,
            patch_size=14,
            vision_use_head=False,  # the MAP head is added by _add_map_head after the seeded build
        )
        return tf.LlavaOnevisionConfig(
            vision_config=vision,
            text_config=tf.Qwen2Config(**text),
            image_token_index=ids["<image>"],
            video_token_index=ids["<video>"],
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            tie_word_embeddings=False,
            **(_LLAVA_VIDEO_KEYS if arch == "llava_video" else {}),
        )
    vision_ids = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
    if arch == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2)
        return tf.Qwen2VLConfig(
            vision_config=vision, text_config=dict(text, rope_parameters=rope), **vision_ids
        )
    if arch == "qwen2_5_vl":
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=64,
            num_heads=2,
            window_size=112,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        )
        return tf.Qwen2_5_VLConfig(
            vision_config=vision, text_config=dict(text, rope_parameters=rope), **vision_ids
        )
    vision = dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        out_hidden_size=64,
        num_heads=2,
        patch_size=16,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1],
    )
    rope3 = dict(rope, mrope_interleaved=True)
    text3 = dict(text, head_dim=16, rope_parameters=rope3)
    if arch == "qwen3_vl_moe":
        # sparse MoE MLP in every layer but the first (dense), so both MLP kinds run: 4 experts, 2 per token
        moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48, decoder_sparse_step=1,
                   mlp_only_layers=[0])
        return tf.Qwen3VLMoeConfig(vision_config=vision, text_config=dict(text3, **moe), **vision_ids)
    return tf.Qwen3VLConfig(vision_config=vision, text_config=text3, **vision_ids)


def processor(arch: str):
    """The real transformers processor of ``arch`` around the in-memory tokenizer."""
    import transformers as tf

    _check_arch(arch)
    tok = tokenizer(arch)
    template = _chat_template(arch)
    if arch in _LLAVA:
        return tf.LlavaOnevisionProcessor(
            image_processor=tf.LlavaOnevisionImageProcessor(),
            video_processor=tf.LlavaOnevisionVideoProcessor(),
            tokenizer=tok,
            num_image_tokens=729,
            vision_feature_select_strategy="full",
            chat_template=template,
        )
    if arch in ("qwen3_vl", "qwen3_vl_moe"):
        return tf.Qwen3VLProcessor(
            image_processor=tf.Qwen2VLImageProcessor(),
            video_processor=tf.Qwen3VLVideoProcessor(),
            tokenizer=tok,
            chat_template=template,
        )
    cls = tf.Qwen2VLProcessor if arch == "qwen2_vl" else tf.Qwen2_5_VLProcessor
    return cls(
        image_processor=tf.Qwen2VLImageProcessor(),
        video_processor=tf.Qwen2VLVideoProcessor(min_pixels=3136, max_pixels=336 * 336),
        tokenizer=tok,
        chat_template=template,
    )


def build(arch: str, *, text_layers: int = 4, seed: int = 0):
    """``(model, processor)``: a random-weight ``*ForConditionalGeneration`` of ``arch`` (fp32, eval, seeded)."""
    import transformers as tf

    _check_arch(arch)
    proc = processor(arch)
    config = _config(arch, proc.tokenizer, text_layers)
    cls = {
        "llava_onevision": tf.LlavaOnevisionForConditionalGeneration,
        "llava_video": tf.LlavaOnevisionForConditionalGeneration,
        "qwen2_vl": tf.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": tf.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": tf.Qwen3VLForConditionalGeneration,
        "qwen3_vl_moe": tf.Qwen3VLMoeForConditionalGeneration,
    }[arch]
    # fork_rng: seeding must not leak into the caller's global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        if arch in _LLAVA:
            _add_map_head(model, seed)
    model = model.to(torch.float32).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    return model, proc


def _add_map_head(model, seed: int) -> None:
    """Give the LLaVA tower SigLIP's attention-pooling (MAP) head (FastVID's signal; real LLaVA checkpoints drop it),
    drawn after the rest from its own seed so every other weight is what the head-less build gives; the config says
    ``vision_use_head=True``, so a saved folder loads with the head."""
    from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

    tower = model.model.vision_tower
    tower.config.vision_use_head = True
    model.config.vision_config.vision_use_head = True
    torch.manual_seed(seed + 1)
    tower.head = SiglipMultiheadAttentionPoolingHead(tower.config)
    tower.use_head = True


def save(arch: str, path, *, text_layers: int = 4, seed: int = 0) -> Path:
    """Write a checkpoint folder loadable offline with ``AutoModelForImageTextToText.from_pretrained(path)`` and
    ``AutoProcessor.from_pretrained(path)`` (model, processor, tokenizer, chat template). Returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model, proc = build(arch, text_layers=text_layers, seed=seed)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    (path / "tiny_model.json").write_text(
        json.dumps(manifest(arch, text_layers=text_layers, seed=seed))
    )
    return path


#: bumped when the tiny configs change (2: the LLaVA towers carry SigLIP's MAP head), so cached folders are rebuilt
VERSION = 2


def manifest(arch: str, *, text_layers: int = 4, seed: int = 0) -> dict:
    """What ``tiny_model.json`` of a :func:`save` folder holds (a cached folder with another manifest is stale)."""
    return {"arch": arch, "text_layers": text_layers, "seed": seed, "version": VERSION}


def make_video(frames: int = 8, height: int = 112, width: int = 140, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 video ``[F, H, W, 3]``: a noisy background with three coloured squares moving along
    straight lines (so frames differ and consecutive frames are similar, as in real video)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 64, size=(height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 5)
    starts = rng.uniform(0, 1, size=(3, 2)) * [height - side, width - side]
    speeds = rng.uniform(-0.15, 0.15, size=(3, 2)) * [height, width]
    colours = rng.integers(96, 256, size=(3, 3))
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        frame = background.copy()
        for (y0, x0), (vy, vx), colour in zip(starts, speeds, colours):
            # bounce inside the frame: fold the unbounded coordinate back into [0, limit]
            y = int(abs((y0 + vy * t) % (2 * (height - side)) - (height - side))) if height > side else 0
            x = int(abs((x0 + vx * t) % (2 * (width - side)) - (width - side))) if width > side else 0
            frame[y : y + side, x : x + side] = colour
        video[t] = frame
    return video


def prompt(arch: str, question: str) -> str:
    """The chat prompt with one video placeholder followed by ``question`` and the assistant turn."""
    _check_arch(arch)
    placeholder = "<video>\n" if arch in _LLAVA else "<|vision_start|><|video_pad|><|vision_end|>"
    return f"<|im_start|>user\n{placeholder}{question}<|im_end|>\n<|im_start|>assistant\n"


def inputs(arch: str, processor, video, question, *, fps: float = 2.0):
    """Processor outputs (a ``BatchFeature`` of tensors) for ``model.generate``.

    ``video``: one uint8 ``[F, H, W, 3]`` array, or a list of them; ``question``: a string, or a list of the same
    length (one prompt per video; a batch is left-padded). ``fps`` feeds Qwen3-VL's timestamp metadata.
    """
    _check_arch(arch)
    videos = list(video) if isinstance(video, (list, tuple)) else [video]
    questions = list(question) if isinstance(question, (list, tuple)) else [question] * len(videos)
    if len(questions) != len(videos):
        raise ValueError(
            f"got {len(videos)} videos but {len(questions)} questions; pass one question per video"
        )
    texts = [prompt(arch, q) for q in questions]
    processor.tokenizer.padding_side = "left"
    kwargs = dict(text=texts, videos=videos, return_tensors="pt", padding=True)
    if arch in ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
        # Qwen3-VL writes timestamps from it; Qwen2.5-VL derives second_per_grid_ts = temporal_patch / fps
        kwargs["videos_kwargs"] = {"do_sample_frames": False}
        kwargs["video_metadata"] = [
            {"fps": fps, "total_num_frames": len(v), "frames_indices": list(range(len(v)))} for v in videos
        ]
    batch = processor(**kwargs)
    if arch == "llava_video":
        from vidcom2.adapters.llava_video import rewrite_prompt

        return rewrite_prompt(
            batch, video_token_id=processor.video_token_id, pad_token_id=processor.tokenizer.pad_token_id
        )
    return batch
