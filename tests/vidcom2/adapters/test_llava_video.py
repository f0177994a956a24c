"""The llava_video adapter (LLaVA-Video layout on the LLaVA-OV class) against references written here from raw
module calls: SigLIP tower -> projector -> ``F.avg_pool2d`` stride 2 -> a newline after every row, built with plain
loops, then an ``inputs_embeds`` forward of the full prompt plus the generated tokens (teacher forcing) in which
the dropped video columns are hidden by a 4-D boolean mask. Nothing here calls the adapter to build a reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vidcom2
from tests.vidcom2._helpers import PRE_LLM_ONLY, generate_compressed
from tests.vidcom2.adapters.reference import map_head_signal
from vidcom2.adapters import adapter_for, family_of, get_adapter
from vidcom2.adapters.llava_video import rewrite_prompt
from vidcom2.stages.rebuild import shrink
from vidcom2.testing import tiny

FRAMES, SIDE, POOLED = 4, 27, 13
PER_FRAME = POOLED * (POOLED + 1)  # 182
NEW = 5
RATIO = {"dycoke_ttm": 0.6}  # anchor frames are kept whole (as in test_compress_equivalence)
# (dycoke's stage 2 also acts while decoding: tested in tests/vidcom2/stages/test_decode.py; methods with an
# in-LLM part run their pre-LLM part alone here, PRE_LLM_ONLY)
METHODS = [
    m
    for m in vidcom2.list_methods(stage="pre_llm") + vidcom2.list_methods(stage="vision_encoder")
    if not vidcom2.get_method(m).info.decode
]


@pytest.fixture(scope="module")
def setup(tiny_model):
    model, processor = tiny_model("llava_video")
    batch = tiny.inputs(
        "llava_video", processor, tiny.make_video(FRAMES, 112, 140, seed=1), "What moves where?"
    )
    return model, processor, batch


def reference_frames(model, pixels):
    """``[F, 13, 13, D]``: tower hidden state -1 (strategy "full"), projector, then 2x2 average pooling."""
    hidden = model.model.vision_tower(pixels[0], output_hidden_states=True).hidden_states[-1]  # [F, 729, d]
    projected = model.model.multi_modal_projector(hidden)  # [F, 729, D]
    maps = projected.view(FRAMES, SIDE, SIDE, -1).permute(0, 3, 1, 2)
    return F.avg_pool2d(maps, kernel_size=2, stride=2).permute(0, 2, 3, 1)  # floor: row/col 26 dropped


def reference_scores(model, pixels):
    """VisionZip inputs computed independently: attention received (mean over heads and queries of the softmax)
    and head-mean keys at the last SigLIP layer, average-pooled 27 -> 13 like the features."""
    attn = model.model.vision_tower.encoder.layers[-1].self_attn
    seen = {}

    def grab(module, args, kwargs):  # the layer's input hidden states [F, 729, d]
        seen["h"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model.model.vision_tower(pixels[0], output_hidden_states=True)
    finally:
        handle.remove()
    h = seen["h"]
    heads, d = attn.num_heads, attn.head_dim
    q = attn.q_proj(h).view(FRAMES, -1, heads, d).transpose(1, 2)
    k = attn.k_proj(h).view(FRAMES, -1, heads, d).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5, dim=-1)  # [F, H, 729, 729]
    scores = probs.mean(dim=(1, 2))  # [F, 729]
    keys = k.mean(dim=1)  # [F, 729, d]

    def pool(x):
        maps = x.view(FRAMES, SIDE, SIDE, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(maps, 2).permute(0, 2, 3, 1).reshape(FRAMES, POOLED * POOLED, -1)

    return pool(scores[..., None])[..., 0], pool(keys)


def frame_sequence(frame, newline, keep, order):
    """One frame's LLM rows by plain loops: kept tokens row by row; newlines after each row (``row``) or all 13
    after the frame's kept tokens (``after_frame``). frame ``[13, 13, D]``, keep bool ``[169]``."""
    out, tail = [], []
    for r in range(POOLED):
        out += [frame[r, c] for c in range(POOLED) if keep[r * POOLED + c]]
        (out if order == "row" else tail).append(newline)
    return out + tail


def teacher_forced(model, batch, generated, features, keep, order, position_mode):
    """Logits ``[1, G, V]`` for the generated tokens: full prompt, visible columns = text + kept tokens + newlines,
    the visible video columns carrying the sequence of ``frame_sequence`` in column order."""
    ids, am = batch["input_ids"], batch["attention_mask"]
    L, G = ids.shape[1], generated.shape[1]
    seq = torch.cat([ids, generated], dim=1)
    embeds = model.get_input_embeddings()(seq).clone()
    video_cols = (ids[0] == model.config.video_token_id).nonzero().squeeze(1)
    assert video_cols.numel() == FRAMES * PER_FRAME
    visible = am[0].bool().clone()
    newline = model.model.image_newline
    rows = []
    for f in range(FRAMES):
        block = video_cols[f * PER_FRAME : (f + 1) * PER_FRAME]
        grid_cols = [block[r * (POOLED + 1) + c] for r in range(POOLED) for c in range(POOLED)]
        newline_cols = [block[r * (POOLED + 1) + POOLED] for r in range(POOLED)]
        for i, col in enumerate(grid_cols):
            visible[col] = bool(keep[f, i])
        cols = sorted([c for i, c in enumerate(grid_cols) if keep[f, i]] + newline_cols)
        rows = frame_sequence(features[f], newline, keep[f], order)
        assert len(rows) == len(cols)
        for col, row in zip(cols, rows):
            embeds[0, col] = row
    full_pos = am[0].cumsum(0) - 1
    if position_mode == "contiguous":
        pos = visible.long().cumsum(0) - 1
    else:
        pos = full_pos
    pos = torch.cat([pos, pos[-1] + torch.arange(1, G + 1)])[None]
    T = L + G
    key_ok = torch.cat([visible, torch.ones(G, dtype=torch.bool)])
    mask = torch.ones(T, T, dtype=torch.bool).tril() & key_ok[None]
    mask |= torch.eye(T, dtype=torch.bool)
    out = model(inputs_embeds=embeds, attention_mask=mask[None, None], position_ids=pos, use_cache=False)
    return out.logits[:, L - 1 : T - 1]


def run(model, batch, method, ratio, **kw):
    return generate_compressed(model, batch, method, ratio, NEW, **kw)


def check_against_reference(model, batch, method, ratio, order, position_mode, *, layout=None, hparams=None, **kw):
    """``layout``: the newline order of the reference sequence (default ``order``); ``hparams``: the method's."""
    hparams = hparams or {}
    out, session = run(model, batch, method, ratio, position_mode=position_mode, **kw, **hparams)
    assert session.info["adapter"] == "llava_video" and session.info["newline_order"] == order
    generated = out.sequences[:, batch["input_ids"].shape[1] :]
    with torch.no_grad():
        frames = reference_frames(model, batch["pixel_values_videos"])
        flat = frames.reshape(FRAMES, POOLED * POOLED, -1)
        aux = {}
        if "global_features" in vidcom2.get_method(method).info.needs:  # FastVID: the MAP head, avg-pooled 27 -> 13
            aux["global_features"], aux["scores"] = map_head_signal(
                model, batch["pixel_values_videos"], lambda grid: F.avg_pool2d(grid, 2)
            )
        elif vidcom2.get_method(method).info.stage == "vision_encoder":
            aux["scores"], aux["keys"] = reference_scores(model, batch["pixel_values_videos"])
        sel = vidcom2.apply(method, flat, ratio, seed=0, **aux, **hparams)
        merged = sel.gather(flat)  # [K, D] in sequence order (merged / reordered features included)
        order_idx = sel.flat_indices()
        # kept slots in ascending order carry the features in the method's order (what compress promises)
        slot_feats = flat.clone().reshape(-1, flat.shape[-1])
        slot_feats[order_idx.sort().values] = merged
        ref = teacher_forced(
            model,
            batch,
            generated,
            slot_feats.view(FRAMES, POOLED, POOLED, -1),
            sel.keep,
            layout or order,
            session.info["position_mode"],
        )
    got = torch.stack(out.logits, dim=1)
    assert (got - ref).abs().max().item() <= 1e-5
    allowed = ref.clone()
    allowed[..., [model.config.video_token_id, model.config.image_token_id]] = float("-inf")
    assert torch.equal(allowed.argmax(-1), generated)
    kept = int(sel.keep.sum())
    sample = session.samples[0]
    assert (sample.visual_tokens_in, sample.visual_tokens_out) == (FRAMES * POOLED * POOLED, kept)
    assert sample.prompt_tokens_out == sample.prompt_tokens_in - (FRAMES * POOLED * POOLED - kept)
    return got


def test_prompt_holds_182_tokens_per_frame_in_grid_layout(setup):
    model, processor, batch = setup
    ids = batch["input_ids"][0]
    video = (ids == model.config.video_token_id).nonzero().squeeze(1)
    assert video.numel() == FRAMES * 182 and bool((video.diff() == 1).all())
    # the rewritten prompt is exactly the text with the placeholder repeated F*182 times, tokenized directly
    text = tiny.prompt("llava_video", "What moves where?").replace("<video>", "<video>" * (FRAMES * 182))
    assert torch.equal(ids, processor.tokenizer(text, return_tensors="pt")["input_ids"][0])
    slots = get_adapter(model).video_slots(model, batch)
    assert len(slots) == 1 and slots[0].grid == (FRAMES, 13, 13)
    start = int(video[0])
    f, r, c = torch.meshgrid(torch.arange(FRAMES), torch.arange(13), torch.arange(13), indexing="ij")
    assert torch.equal(slots[0].columns, (start + f * 182 + r * 14 + c).reshape(FRAMES, 169))
    nl = start + torch.arange(FRAMES)[:, None] * 182 + torch.arange(13)[None] * 14 + 13
    assert torch.equal(slots[0].always_keep, nl.reshape(-1))


def test_selection_marker_explicit_choice_and_clear_errors(setup, tiny_model):
    model, processor, batch = setup
    assert family_of(model) == "llava_video"
    ov, _ = tiny_model("llava_onevision")
    assert family_of(ov) == "llava_onevision"  # no marker: the OV adapter
    for a, b in zip(ov.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)  # same tiny weights
    # explicit choice on the unmarked OV model == marker-selected model
    out_a, s_a = run(model, batch, "vidcom2", 0.25)
    out_b, s_b = run(ov, batch, "vidcom2", 0.25, adapter="llava_video")
    assert s_b.info["adapter"] == "llava_video" and torch.equal(out_a.sequences, out_b.sequences)
    # the HF processor's expansion (F*196+1) is refused with the fix named; rewrite_prompt fixes it
    hf = processor(
        text=[tiny.prompt("llava_video", "What moves where?")],
        videos=[tiny.make_video(FRAMES, 112, 140, seed=1)],
        return_tensors="pt",
    )
    assert int((hf["input_ids"] == model.config.video_token_id).sum()) == FRAMES * 196 + 1
    with pytest.raises(ValueError, match="rewrite_prompt"), vidcom2.compress(model, "vidcom2", 0.25):
        model.generate(**hf, max_new_tokens=1)
    fixed = rewrite_prompt(hf, video_token_id=model.config.video_token_id)
    assert torch.equal(fixed["input_ids"], batch["input_ids"])
    assert torch.equal(get_adapter(model).prepare_inputs(model, hf)["input_ids"], batch["input_ids"])
    # original positions need the newlines at their own columns
    with (
        pytest.raises(ValueError, match="contiguous"),
        vidcom2.compress(model, "vidcom2", 0.25, position_mode="original"),
    ):
        pass
    with pytest.raises(ValueError, match="newline_order"):
        adapter_for("llava_video", newline_order="grid")


def test_uncompressed_equals_raw_module_reference(setup):
    """method none: tower -> projector -> avg_pool2d -> row newlines, every token kept, positions 0..L-1."""
    model, _, batch = setup
    # nothing dropped: the uncompressed layout (newline after every row) even with the after_frame default
    check_against_reference(model, batch, "none", 1.0, "after_frame", None, layout="row")


@pytest.mark.parametrize("method", METHODS)
def test_compressed_generate_equals_masked_reference(setup, method):
    model, _, batch = setup
    # method none keeps everything: the uncompressed layout (see test_uncompressed_equals_raw_module_reference)
    layout = "row" if method == "none" else None
    check_against_reference(model, batch, method, RATIO.get(method, 0.25), "after_frame", None, layout=layout,
                            hparams=PRE_LLM_ONLY.get(method))


@pytest.mark.parametrize("position_mode", ["contiguous", "original"])
def test_row_newline_order(setup, position_mode):
    model, _, batch = setup
    adapter = adapter_for("llava_video", newline_order="row")
    got = check_against_reference(model, batch, "vidcom2", 0.25, "row", position_mode, adapter=adapter)
    if (
        position_mode == "contiguous"
    ):  # the order changes the LLM input, so the check above can tell them apart
        other = check_against_reference(model, batch, "vidcom2", 0.25, "after_frame", None)
        assert (got - other).abs().max().item() > 1e-3


@pytest.mark.parametrize("order", ["after_frame", "row"])
def test_newlines_sit_in_the_configured_order(setup, order):
    """The features handed to generate: per frame, the kept tokens and 13 newlines where the order puts them."""
    model, _, batch = setup
    adapter = adapter_for("llava_video", newline_order=order)
    with torch.no_grad():
        encoded = adapter.encode(model, batch)
        sel = vidcom2.apply("vidcom2", encoded.feats[0], 0.25)
        kwargs, counts = shrink(
            adapter, model, batch, encoded, [sel], position_mode="contiguous", text_rule="hf5"
        )
    pooled = kwargs["mm_encoder_outputs"]["video"].pooler_output.reshape(-1, encoded.feats[0].shape[-1])
    newline = model.model.image_newline
    is_nl = (pooled == newline).all(-1)
    expected = []
    for f in range(FRAMES):
        for r in range(13):
            n_row = int(sel.keep[f, r * 13 : (r + 1) * 13].sum())
            expected += [False] * n_row + ([True] if order == "row" else [])
        expected += [True] * 13 if order == "after_frame" else []
    assert is_nl.tolist() == expected
    assert counts[0]["visual_tokens_out"] == int(sel.keep.sum())


def test_left_padded_batch_matches_each_prompt_alone(tiny_model):
    """A left-padded batch (rewrite_prompt re-pads it; questions of different lengths) gives, row by row, what
    each prompt gives alone."""
    model, processor = tiny_model("llava_video")
    videos = [tiny.make_video(3, 112, 140, seed=3), tiny.make_video(3, 96, 128, seed=4)]
    questions = ["Where?", "What colour is the square that moves to the left?"]
    batch = tiny.inputs("llava_video", processor, videos, questions)
    assert (batch["attention_mask"] == 0).any()
    together, s_both = run(model, batch, "vidcom2", 0.3)
    L = batch["input_ids"].shape[1]
    for row in range(2):
        single = tiny.inputs("llava_video", processor, videos[row], questions[row])
        alone, s_one = run(model, single, "vidcom2", 0.3)
        n = alone.sequences.shape[1] - single["input_ids"].shape[1]  # fewer than NEW if EOS came first
        assert torch.equal(together.sequences[row, L : L + n], alone.sequences[0, -n:])
        for step in range(n):
            assert torch.allclose(together.logits[step][row], alone.logits[step][0], atol=1e-4, rtol=0)
        assert s_both.samples[row].visual_tokens_out == s_one.samples[0].visual_tokens_out


def test_saved_tiny_checkpoint_keeps_the_marker(tmp_path):
    from transformers import AutoModelForImageTextToText

    tiny.save("llava_video", tmp_path, text_layers=2)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert family_of(loaded) == "llava_video" and loaded.config.mm_spatial_pool_stride == 2
