"""Independent references for the compression adapters, written against the raw transformers API only
(``get_video_features``, ``get_rope_index``, a plain forward with a 4-D boolean mask); nothing here uses
``vidcom2.adapters`` or ``vidcom2.compress``.

``masked_teacher_forced`` recomputes what a compressed ``generate`` must produce: the *full* prompt plus the
generated tokens in one forward, the dropped video tokens hidden from every query by the mask, the kept tokens
carrying the selected (possibly merged / reordered) features at the positions the compression promises.
"""

from __future__ import annotations

import math

import torch

import vidcom2

ARCHS = ("llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


def video_columns(model, ids_row: torch.Tensor, llava: bool) -> torch.Tensor:
    """Prompt columns of the scored video tokens of one row (LLaVA-OV: without the trailing newline)."""
    cols = (ids_row == model.config.video_token_id).nonzero().squeeze(1)
    return cols[:-1] if llava else cols


def full_features(model, inputs, arch):
    """Per video ``[F, N, D]`` frames, plus the raw output (and DeepStack levels for Qwen3-VL)."""
    if arch == "llava_onevision":
        out = model.model.get_video_features(
            inputs["pixel_values_videos"],
            vision_feature_layer=model.config.vision_feature_layer,
            vision_feature_select_strategy=model.config.vision_feature_select_strategy,
            return_dict=True,
        )
        F = inputs["pixel_values_videos"].shape[1]
        vc = model.config.vision_config
        n = math.ceil(vc.image_size // vc.patch_size / 2) ** 2
        return [out.pooler_output[v, :-1].reshape(F, n, -1) for v in range(out.pooler_output.shape[0])], out
    out = model.model.get_video_features(
        inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
    )
    feats = []
    for v, (t, h, w) in enumerate(inputs["video_grid_thw"].tolist()):
        feats.append(out.pooler_output[v].reshape(t, h * w // 4, -1))
    return feats, out


def hf_positions(model, inputs, arch):
    """Uncompressed positions from transformers itself: ``[3, B, L]`` (Qwen, 5.x rule) or ``[1, B, L]``."""
    am = inputs["attention_mask"]
    if arch == "llava_onevision":
        return ((am.cumsum(-1) - 1).masked_fill(am == 0, 1))[None]
    extra = {"second_per_grid_ts": inputs["second_per_grid_ts"]} if "second_per_grid_ts" in inputs else {}
    pos, _ = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"].clone(),
        attention_mask=am,
        **extra,
    )
    return pos.masked_fill((am == 0)[None], 1)  # padding columns: 1, as generate numbers them


def map_head_signal(model, pixels, pool):
    """FastVID's MAP-head signal of one video written out from raw transformers modules: the tower's hidden state
    ``vision_feature_layer`` (what the projector reads), ``post_layernorm``, the head by hand
    (``ref_fastvid.map_head_reference``); the head's attention ``[F, 27, 27]`` pooled by ``pool`` (LLaVA-OV:
    bilinear to 14 x 14, LLaVA-Video: ``avg_pool2d`` 2). Returns (global ``[F, D]``, scores ``[F, n]``)."""
    from tests.vidcom2.methods.ref_fastvid import map_head_reference

    tower = model.model.vision_tower
    hidden = tower(pixels.flatten(0, 1), output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
    glob, attn = map_head_reference(tower.post_layernorm(hidden), tower.head)
    side = math.isqrt(attn.shape[1])
    return glob, pool(attn.view(-1, 1, side, side)).flatten(1)


def bilinear_half(grid):
    """LLaVA-OV's (and the official ``get_attn_2dPool``'s) pooling: bilinear to ``ceil(side / 2)``."""
    side = math.ceil(grid.shape[-1] / 2)
    return torch.nn.functional.interpolate(grid, size=[side, side], mode="bilinear")


def selections(model, inputs, arch, method, ratio, seed=0, **hparams):
    """One ``vidcom2.apply`` per video; vision-encoder methods get the scores / keys that
    ``vidcom2.stages.encoder.capture`` records around the encoder call (that module has its own tests), methods that
    need global features the MAP-head signal written out here (:func:`map_head_signal`)."""
    info = vidcom2.get_method(method, **hparams).info
    if "global_features" in info.needs:
        feats, out = full_features(model, inputs, arch)
        pixels = inputs["pixel_values_videos"]
        sels = []
        for v, f in enumerate(feats):
            glob, scores = map_head_signal(model, pixels[v : v + 1], bilinear_half)
            sels.append(vidcom2.apply(method, f, ratio, scores=scores, global_features=glob, seed=seed, **hparams))
        return sels, feats, out
    if info.stage != "vision_encoder":
        feats, out = full_features(model, inputs, arch)
        return [vidcom2.apply(method, f, ratio, seed=seed, **hparams) for f in feats], feats, out
    from vidcom2.adapters import get_adapter
    from vidcom2.stages import encoder

    with encoder.capture(get_adapter(model), model) as cap:
        feats, out = full_features(model, inputs, arch)
    frames = [f.shape[0] for f in feats]
    scores = torch.cat(list(cap.scores)).split(frames)
    keys = torch.cat(list(cap.keys)).split(frames)
    sels = [
        vidcom2.apply(method, f, ratio, scores=s, keys=k, seed=seed, **hparams)
        for f, s, k in zip(feats, scores, keys)
    ]
    return sels, feats, out


def masked_teacher_forced(model, inputs, arch, generated, method, ratio, *, position_mode, seed=0, **hparams):
    """Logits ``[B, G, V]`` of the reference for the G generated tokens (``generated [B, G]``), and the
    selections it used (one per video, row order; one video per row)."""
    llava = arch == "llava_onevision"
    sels, feats, out = selections(model, inputs, arch, method, ratio, seed, **hparams)
    ids, am = inputs["input_ids"], inputs["attention_mask"]
    B, L = ids.shape
    G = generated.shape[1]
    pos = hf_positions(model, inputs, arch).clone()  # [P, B, L]
    keep = am.bool().clone()
    new_feats = [f.clone().reshape(-1, f.shape[-1]) for f in feats]
    deep = None
    if getattr(out, "deepstack_features", None) is not None:
        deep = [[lvl[v].clone() for v in range(B)] for lvl in out.deepstack_features]
    for b in range(B):
        cols = video_columns(model, ids[b], llava)
        flat = sels[b].flat_indices()
        slots = flat.sort().values  # kept slots in prompt order; slot j carries token flat[j]
        keep[b, cols] = False
        keep[b, cols[slots]] = True
        gathered = sels[b].gather(feats[b])
        new_feats[b][slots] = gathered
        orig = pos[:, b, cols[flat]].clone()
        pos[:, b, cols[slots]] = orig
        if deep is not None:
            for lvl, level in enumerate(out.deepstack_features):
                deep[lvl][b][slots] = level[b][flat]
        if llava and position_mode == "contiguous":
            renum = keep[b].long().cumsum(0) - 1
            pos[0, b, keep[b]] = renum[keep[b]]
    # sequence = full prompt + generated tokens; positions continue from the last prompt token
    seq = torch.cat([ids, generated], dim=1)
    T = L + G
    step = torch.arange(1, G + 1)
    pos = torch.cat([pos, pos[:, :, -1:] + step], dim=2)
    key_ok = torch.cat([keep, torch.ones(B, G, dtype=torch.bool)], dim=1)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = causal[None] & key_ok[:, None, :]
    mask |= torch.eye(T, dtype=torch.bool)[None]  # padding queries attend to themselves (no all-False rows)
    mask = mask[:, None]  # [B, 1, T, T], True = attend
    if llava:
        pooled = torch.cat([torch.cat([f, out.pooler_output[b, -1:]]) for b, f in enumerate(new_feats)])[None]
        new_out = type(out)(pooler_output=pooled)
        kwargs = {"position_ids": pos[0]}
    else:
        new_out = type(out)(pooler_output=tuple(new_feats))
        if deep is not None:
            new_out.deepstack_features = [tuple(level) for level in deep]
        text_row = torch.arange(T).expand(1, B, T)
        kwargs = {"position_ids": torch.cat([text_row, pos])}
    with torch.no_grad():
        logits = model(
            input_ids=seq,
            attention_mask=mask,
            mm_encoder_outputs={"video": new_out},
            use_cache=False,
            **kwargs,
        ).logits
    return logits[:, L - 1 : T - 1], sels
