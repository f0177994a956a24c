"""LLaVA-Video in the harness: the tiny checkpoint through the Hydra config, the real evaluator and the record.

The checkpoint is the tiny ``llava_video`` one with LLaVA-NeXT's config marker (``mm_newline_position="grid"``)
removed, like a user-converted LLaVA-Video checkpoint: only the wrapper naming the ``llava_video`` adapter can then
give the model its 169 scored tokens per frame (the LLaVA-OV adapter would see 196 per frame and refuse the
rewritten prompt).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import paper, presets, record
from eval.tasks import tiny_data

CONF = Path(__file__).resolve().parents[2] / "conf"
FRAMES = 8
# SigLIP 384 px / 14 px patches = 27 per side; LLaVA-NeXT avg_pool2d(2) floors to 13 per side; 13 newlines per frame
SIDE = 384 // 14 // 2
SCORED, PROMPT_PER_FRAME = SIDE * SIDE, SIDE * (SIDE + 1)  # 169, 182


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from vidcom2.testing import tiny

    root = tmp_path_factory.mktemp("cache")
    ckpt = tiny.save("llava_video", root / "tiny_models" / "llava_video")
    config = json.loads((ckpt / "config.json").read_text())
    assert config.pop("mm_newline_position") == "grid"
    (ckpt / "config.json").write_text(json.dumps(config))
    tiny.save("llava_onevision", root / "tiny_models" / "llava_onevision")  # the HF prompt, for comparison
    tiny_data.build(root / "tiny_bench" / "videos")
    return root


def run(cache: Path, tmp: Path, *overrides: str, model: str = "tiny_llava_video") -> dict:
    from hydra import compose, initialize_config_dir

    from eval import runner

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"model={model}", "benchmark=tiny_mvbench", "limit=1", "progress=false",
            f"cache_dir={cache}", f"tiny_data={cache}/tiny_bench/videos", f"results_dir={tmp}", *overrides,
        ])  # fmt: skip
    try:
        path = runner.run(cfg)
    finally:
        runner._LOADED.clear()  # the module-level model cache must not outlive the test
    rec = record.read(path)
    record.validate(rec)
    rows = [json.loads(line) for line in (path.parent / "samples.jsonl").read_text().splitlines()]
    return {"record": rec, "rows": rows}


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {
        "vidcom2": run(cache, out, "method=vidcom2", "retention_ratio=0.25", "budget=uniform"),
        "none": run(cache, out, "method=none"),
        "llava_ov": run(cache, out, "method=none", model="tiny_llava_ov"),
        # SparseVLM's official layers 2/6/15 do not fit the 4-layer tiny LLM; 0/1/2 give a 4-level schedule
        "sparsevlm": run(cache, out, "method=sparsevlm", "method.layers=[0,1,2]", "retention_ratio=0.25"),
    }


@pytest.mark.slow
def test_vidcom2_record_counts_llava_video_tokens(runs):
    rec, rows = runs["vidcom2"]["record"], runs["vidcom2"]["rows"]
    assert rec["model"] == "tiny_llava_video" and rec["model_family"] == "llava_video"
    assert rec["frames"] == FRAMES and rec["frames_fed"] == FRAMES and rec["n_samples"] == 2  # 2 subtasks x limit 1
    info = rec["env"]["adapter"]
    assert info["adapter"] == "llava_video" and info["newline_order"] == "after_frame"
    kept = round(0.25 * SCORED)  # 42.25 -> 42 per frame (uniform allocator)
    for row in rows:
        assert row["frames_fed"] == FRAMES
        assert row["visual_tokens_in"] == FRAMES * SCORED  # 1352: newlines are not scored
        assert row["visual_tokens_out"] == FRAMES * kept
        # the prompt lost exactly the dropped scored tokens (the 13 newlines per frame stay)
        assert row["prompt_tokens_in"] - row["prompt_tokens_out"] == FRAMES * (SCORED - kept)
    eff = rec["efficiency"]
    assert eff["visual_tokens_in"] == FRAMES * SCORED and eff["visual_tokens_out"] == FRAMES * kept
    assert eff["retention_realised"] == pytest.approx(kept / SCORED)


@pytest.mark.slow
def test_vanilla_prompt_has_182_video_tokens_per_frame(runs):
    comp, vanilla = runs["vidcom2"]["rows"], runs["none"]["rows"]
    assert [r["visual_tokens_out"] for r in vanilla] == [FRAMES * SCORED] * 2
    assert [r["prompt_tokens_out"] for r in vanilla] == [r["prompt_tokens_in"] for r in vanilla]
    # same requests, same uncompressed prompt in both runs
    assert [r["prompt_tokens_in"] for r in vanilla] == [r["prompt_tokens_in"] for r in comp]
    # the prompt holds LLaVA-Video's F*182 video tokens where the HF processor (LLaVA-OV, same tiny weights and
    # requests) writes F*196+1 (bilinear 14x14 per frame + one newline per video): the text is the same
    ov = runs["llava_ov"]["rows"]
    assert [o["prompt_tokens_in"] - v["prompt_tokens_in"] for o, v in zip(ov, vanilla)] == [
        FRAMES * (14 * 14 - PROMPT_PER_FRAME) + 1
    ] * 2


def test_presets_use_the_llava_video_model_config():
    preset = presets.load_preset("experiment", "llava_video_7b")
    assert (preset.model, preset.family, preset.frames) == ("llava_video_7b", "llava_video", 64)
    published = paper.load_published()
    assert ((published["model"] == "LLaVA-Video-7B") & (published["frames"] == 64)).any()


def test_missing_converted_checkpoint_is_named_before_loading(tmp_path):
    from hydra import compose, initialize_config_dir

    from eval import runner
    from eval.validate import ConfigError

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=["model=llava_video_7b", "benchmark=tiny_mvbench", "method=vidcom2",
                                         f"cache_dir={tmp_path}", f"results_dir={tmp_path}/runs"])
    with pytest.raises(ConfigError, match=r"LLaVA-Video-7B-Qwen2-hf does not exist.*model.pretrained.*conf/model"):
        runner.run(cfg)
    assert not runner._LOADED


@pytest.mark.slow
def test_in_llm_flops_use_the_exact_per_layer_counts(runs, cache):
    from eval.measure import LLMShape, layer_prefill_flops, seq_lengths_per_layer

    rec, rows = runs["sparsevlm"]["record"], runs["sparsevlm"]["rows"]
    text = json.loads((cache / "tiny_models" / "llava_video" / "config.json").read_text())["text_config"]
    layers, d, m = text["num_hidden_layers"], text["hidden_size"], text["intermediate_size"]
    head = d // text["num_attention_heads"]
    q, kv = text["num_attention_heads"] * head, text["num_key_value_heads"] * head
    for row in rows:
        per_layer = row["visual_tokens_per_layer"]
        assert len(per_layer) == layers and per_layer[0] == row["visual_tokens_in"] == FRAMES * SCORED
        assert per_layer[-1] == row["visual_tokens_out"] and sum(per_layer) / layers == row["visual_tokens_layer_avg"]
        assert len(set(per_layer)) == layers  # pruned after each of layers 0, 1, 2
    # prefill FLOPs by hand (FastV convention, one MAC = one FLOP, decoder layers only) at each layer's real length:
    # the text and the 13 newlines per frame stay, the scored video tokens are the layer's count
    measured = rows[rec["efficiency"]["warmup_samples"]:]
    lengths = [[r["prompt_tokens_in"] - r["visual_tokens_in"] + v for v in r["visual_tokens_per_layer"]] for r in measured]
    by_hand = [sum(2 * n * d * q + 2 * n * d * kv + 2 * n * n * q + 3 * n * d * m for n in ls) for ls in lengths]
    assert rec["efficiency"]["flops"]["prefill"] == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-12)
    # what the layer average alone would give (a two-level schedule) is different here: the exact counts were used
    shape = LLMShape(layers, d, m, q, kv)
    r = measured[0]
    two_level = sum(layer_prefill_flops(shape, n) for n in seq_lengths_per_layer(
        shape, r["prompt_tokens_in"], r["visual_tokens_in"], r["visual_tokens_out"], r["visual_tokens_layer_avg"]))
    assert two_level != by_hand[0]
