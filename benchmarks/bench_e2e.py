"""`make bench`: latency, memory and FLOPs of every method against the limit, measured side by side.

One process builds a random-weight LLaVA-OneVision-architecture model whose LLM has Qwen2-0.5B dimensions (``--size
0.5b``, CPU default) or Qwen2-7B dimensions with a SigLIP-so400m tower (``--size 7b``, for GPU users), feeds it
``--frames`` x 196 visual tokens plus a short prompt, and measures, interleaving the variants and taking medians of
``--repeats`` rounds (each in a new shuffled order) after a warm-up:

- prefill latency and decode latency per token (device-synchronised timers of ``vidcom2.compress(measure=True)``),
- selection overhead (the compression step) as a share of vanilla prefill,
- peak memory: growth over the resident weights during one generate call: the CUDA allocator's peak on GPU; on CPU
  the resident-set growth sampled every 0.5 ms (variants measured one after another, memory returns in between),
- analytic prefill FLOPs from the LLM config and the per-layer sequence lengths (eval/measure.py convention).

"peak mem" is the whole peak (weights included, as the paper's efficiency table), "activation mem" the growth over what
was resident before the call. Ratios are against the vanilla run (method ``none``); ``at_limit`` = prefill_ratio / flops_ratio (FastV/VidCom2 FLOPs convention, attention over the full square;
``at_limit (causal)`` counts the causal triangle, what causal kernels compute) (1.0 = the latency
falls exactly as much as the compute). Writes ``results/bench/latest.json``. Weights are random: only the costs mean
something. Targets are checked and printed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics

import torch

import vidcom2
from benchmarks.common import (
    MemoryProbe,
    Spread,
    interleaved_times,
    machine,
    markdown_table,
    noise_warning,
    paired_ratios,
    sync,
    write_json,
)
from eval.measure import LLMShape, layer_prefill_flops

SIZES = {
    # "tiny": a smoke-test size (tests/test_bench.py), not a benchmark
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                           num_key_value_heads=1), vision=dict(hidden_size=32, intermediate_size=64,
                                                               num_hidden_layers=1, num_attention_heads=2)),
    # Qwen2-0.5B (LLaVA-OV-0.5B's LLM) and Qwen2-7B (LLaVA-OV-7B's LLM); vision: tiny / SigLIP-so400m
    "0.5b": dict(text=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                           num_key_value_heads=2), vision=dict(hidden_size=32, intermediate_size=64,
                                                               num_hidden_layers=2, num_attention_heads=2)),
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4), vision=dict(hidden_size=1152, intermediate_size=4304,
                                                             num_hidden_layers=26, num_attention_heads=16)),
}
VOCAB = 151936
TARGETS = {"prefill_at_limit": 1.05, "vidcom2_select_overhead": 0.002, "fastv_peak_mem": 1.02, "none_overhead": 0.01}


def build_model(size: str, device, dtype):
    import transformers as tf

    from vidcom2.testing import tiny

    proc = tiny.processor("llava_onevision")
    tok = proc.tokenizer
    dims = SIZES[size]
    text = tf.Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, bos_token_id=None,
                          eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=0, **dims["text"])
    # vision_use_head: SigLIP's MAP head (FastVID's signal; real LLaVA checkpoints load it from the SigLIP checkpoint)
    vision = tf.SiglipVisionConfig(image_size=384, patch_size=14, vision_use_head=True, **dims["vision"])
    config = tf.LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", tie_word_embeddings=False,
    )
    with torch.device(device):
        torch.manual_seed(0)
        model = tf.LlavaOnevisionForConditionalGeneration(config)
    model = model.to(dtype).eval()
    model.generation_config.pad_token_id = 0
    return model, proc


def make_inputs(proc, frames: int, device, dtype):
    from vidcom2.testing import tiny

    video = tiny.make_video(frames, 384, 384, seed=0)
    batch = tiny.inputs("llava_onevision", proc, video, "Describe what happens in the video in one sentence.")
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["pixel_values_videos"] = batch["pixel_values_videos"].to(dtype)
    return batch


def variants(ratios):
    out = [("none", 1.0)]
    for name in vidcom2.list_methods():
        if name == "none":
            continue
        out += [(name, r) for r in ratios]
    return out


def hparams_for(name: str, ratio: float, frames: int) -> dict:
    if name in ("dycoke_ttm", "dycoke"):
        return {"merge_ratio": 1 - ratio}  # budget-matched TTM has an anchor floor above 0.25 at 32 frames
    return {}


def run_once(model, batch, name, ratio, new_tokens, frames):
    with vidcom2.compress(model, method=name, retention_ratio=ratio, measure=True, **hparams_for(name, ratio, frames)) as s:
        model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return s.samples[-1]


def bare_once(model, batch, new_tokens):
    model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)


def causal_prefill_flops(shape: LLMShape, n: int) -> int:
    """``layer_prefill_flops`` with the attention counted over the causal triangle only (``n(n+1)/2`` query-key
    pairs for QK^T and for AV instead of ``n^2``): what causal SDPA / FlashAttention kernels compute. The
    FastV-convention count (full square) overstates vanilla's attention, so compressed runs look slower than
    "the limit" by that margin."""
    return layer_prefill_flops(shape, n) - 2 * n * n * shape.q_width + n * (n + 1) * shape.q_width


def layer_lengths(shape: LLMShape, stats) -> list[int]:
    """Tokens processed by each decoder layer in prefill: the exact per-layer counts in-LLM pruning records, else
    the compressed prompt length in every layer."""
    if stats.visual_tokens_per_layer:
        text = stats.prompt_tokens_in - stats.visual_tokens_in
        return [text + n for n in stats.visual_tokens_per_layer]
    return [stats.prompt_tokens_out] * shape.layers


def replicate(batch: dict, copies: int) -> dict:
    """The same prompt and video ``copies`` times as one batch (rows identical, so no padding is needed)."""
    out = {}
    for key, value in batch.items():
        out[key] = value.repeat(copies, *([1] * (value.dim() - 1))) if torch.is_tensor(value) else value
    return out


def measure_throughput(model, proc, args, dtype) -> list[dict]:
    """Samples/s of greedy generation at each batch size, for vanilla and two methods (r = 0.25), interleaved
    rounds; the per-round ratio to batch 1 of the same method is reported with its spread."""
    batch = make_inputs(proc, args.throughput_frames, args.device, dtype)
    batches = {b: replicate(batch, b) for b in args.batch_sizes}
    methods = []
    for name in args.throughput_methods:  # in-LLM / decode-time methods refuse batches (the harness falls back)
        if (why := vidcom2.get_method(name).info.single_prompt) is not None:
            print(f"  throughput: {name} skipped: {why}", flush=True)
        else:
            methods.append(name)
    fns = {}
    for name in methods:
        r = 1.0 if name == "none" else 0.25
        for b in args.batch_sizes:
            fns[(name, b)] = (lambda name=name, r=r, b=b: run_once(model, batches[b], name, r, args.new_tokens,
                                                                     args.throughput_frames))
    times = interleaved_times(fns, args.repeats, 1, args.device)
    out, table = [], []
    for name in methods:
        one = times[(name, args.batch_sizes[0])]
        for b in args.batch_sizes:
            per_round = Spread.of([b / t for t in times[(name, b)]])
            gain = Spread.of([(b / t) / (args.batch_sizes[0] / t1) for t, t1 in zip(times[(name, b)], one)])
            out.append({"method": name, "batch_size": b, "samples_per_s": per_round.as_dict(),
                        "vs_batch1": gain.as_dict()})
            table.append([name, b, per_round.cell(3), gain.cell(2)])
    print(f"\nThroughput ({args.throughput_frames} frames, greedy, {args.new_tokens} new tokens, r = 0.25 for methods; "
          "the same sample replicated):\n")
    print(markdown_table(["method", "batch", "samples/s", f"vs batch {args.batch_sizes[0]}"], table))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.15])
    ap.add_argument("--methods", nargs="*", default=None, help="subset of methods (default: all registered)")
    ap.add_argument("--repeats", type=int, default=7,
                    help="timed rounds (7 or more: the median's bootstrap interval then ignores one disturbed round)")
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--scaling-frames", type=int, nargs="*", default=None,
                    help="default: 8 16 32 64 128 on CUDA, 8 16 32 on CPU")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=None,
                    help="throughput section: batch sizes (default 1 4 on CPU, 1 4 8 on CUDA; none to skip)")
    ap.add_argument("--throughput-frames", type=int, default=None,
                    help="frames of the throughput samples (default: --frames on CUDA, 8 on CPU, where batch 4 of 32 "
                    "frames costs minutes per round)")
    ap.add_argument("--throughput-methods", nargs="*", default=["none", "vidcom2", "visionzip"],
                    help="methods of the throughput table (in-LLM / decode methods run one prompt per generate: skipped)")
    ap.add_argument("--out", default="results/bench/latest.json")
    args = ap.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 4, 8] if args.device.startswith("cuda") else [1, 4]
    if args.throughput_frames is None:
        args.throughput_frames = args.frames if args.device.startswith("cuda") else 8
    if args.scaling_frames is None:
        args.scaling_frames = [8, 16, 32, 64, 128] if args.device.startswith("cuda") else [8, 16, 32]
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    model, proc = build_model(args.size, args.device, dtype)
    shape = LLMShape.from_config(model.config)
    batch = make_inputs(proc, args.frames, args.device, dtype)
    todo = [v for v in variants(args.ratios) if args.methods is None or v[0] in args.methods or v[0] == "none"]
    print(f"bench: {args.size} LLM on {args.device} ({dtype}), {args.frames} frames, variants: {len(todo)}, "
          f"repeats: {args.repeats} (interleaved, medians)", flush=True)

    # warm-up: one pre-LLM and one in-LLM variant plus vanilla (allocator growth, kernel choice, lazy imports)
    for name, r in [v for v in todo if v[0] in ("none", "vidcom2", "fastv")][:3]:
        run_once(model, batch, name, r, args.new_tokens, args.frames)
    samples = {v: [] for v in todo}
    memory: dict = {}
    failed: dict = {}
    bare_times, none_times = [], []
    for rep in range(args.repeats):
        last = rep == args.repeats - 1
        order = [v for v in todo if v not in failed]
        random.Random(rep).shuffle(order)  # a new order every round: no variant always runs right after vanilla
        for v in order:
            try:
                if last:  # memory is sampled in the last round only (the sampler thread must not disturb timings)
                    with MemoryProbe(args.device) as probe:
                        samples[v].append(run_once(model, batch, *v, args.new_tokens, args.frames))
                    memory[v] = (probe.peak, probe.growth)
                else:
                    samples[v].append(run_once(model, batch, *v, args.new_tokens, args.frames))
            except (ValueError, NotImplementedError) as err:  # e.g. a ratio below a method's floor: reported, not hidden
                failed[v] = f"{type(err).__name__}: {err}"
                print(f"  {v[0]} r={v[1]}: cannot run: {failed[v]}", flush=True)
        # harness overhead: bare generate vs generate under compress(method="none"), same round, order alternating
        pair = [(lambda: bare_once(model, batch, args.new_tokens), bare_times),
                (lambda: run_once(model, batch, "none", 1.0, args.new_tokens, args.frames), none_times)]
        for fn, acc in (pair if rep % 2 == 0 else pair[::-1]):
            sync(args.device)
            t0 = __import__("time").perf_counter()
            fn()
            sync(args.device)
            acc.append(__import__("time").perf_counter() - t0)
        print(f"  round {rep + 1}/{args.repeats} done", flush=True)

    def med(v, field):
        vals = [getattr(s, field) for s in samples[v]]
        return statistics.median(vals) if all(x is not None for x in vals) else None

    base = ("none", 1.0)
    ok = [v for v in todo if v not in failed]
    prefill = paired_ratios({v: [s.prefill_s for s in samples[v]] for v in ok}, base)
    decode = paired_ratios({v: [s.decode_s for s in samples[v]] for v in ok}, base)
    base_prefill = med(base, "prefill_s")
    base_lengths = layer_lengths(shape, samples[base][0])
    base_flops = sum(layer_prefill_flops(shape, n) for n in base_lengths)
    base_causal = sum(causal_prefill_flops(shape, n) for n in base_lengths)
    base_mem, base_growth = memory[base]
    rows, table = [], []
    for v in ok:
        name, r = v
        s0 = samples[v][0]
        lengths = layer_lengths(shape, s0)
        flops_ratio = sum(layer_prefill_flops(shape, n) for n in lengths) / base_flops
        causal_ratio = sum(causal_prefill_flops(shape, n) for n in lengths) / base_causal
        at_limit, at_causal = prefill[v].scaled(flops_ratio), prefill[v].scaled(causal_ratio)
        mem, growth = memory[v]
        row = {
            "method": name, "retention_ratio": r,
            "visual_tokens_in": s0.visual_tokens_in, "visual_tokens_out": s0.visual_tokens_out,
            "visual_tokens_layer_avg": s0.visual_tokens_layer_avg,
            "prefill_s": med(v, "prefill_s"), "decode_per_token_s": med(v, "decode_s") / args.new_tokens,
            "compression_s": med(v, "compression_s"),
            "prefill_ratio": prefill[v].median, "prefill_ratio_spread": prefill[v].as_dict(),
            "flops_ratio": flops_ratio, "at_limit": at_limit.median, "at_limit_spread": at_limit.as_dict(),
            "flops_causal_ratio": causal_ratio, "at_limit_causal": at_causal.median,
            "at_limit_causal_spread": at_causal.as_dict(),
            "prompt_tokens_in": s0.prompt_tokens_in, "visual_tokens_per_layer": s0.visual_tokens_per_layer,
            "decode_ratio": decode[v].median, "decode_ratio_spread": decode[v].as_dict(),
            "peak_mem_bytes": mem, "peak_mem_ratio": mem / base_mem if base_mem else None,
            "peak_mem_growth_bytes": growth, "peak_mem_growth_ratio": growth / base_growth if base_growth else None,
            "select_overhead_frac": (med(v, "compression_s") or 0.0) / base_prefill,
        }
        rows.append(row)
        table.append([name, f"{r:.2f}", f"{row['visual_tokens_out']}/{row['visual_tokens_in']}",
                      prefill[v].cell(), f"{flops_ratio:.3f}", at_limit.cell(2), at_causal.cell(2), decode[v].cell(),
                      f"{row['peak_mem_ratio']:.3f}" if row["peak_mem_ratio"] else "–",
                      f"{row['peak_mem_growth_ratio']:.3f}" if row["peak_mem_growth_ratio"] else "–",
                      f"{row['select_overhead_frac']:.4f}"])
    none_overhead = statistics.median(none_times) / statistics.median(bare_times) - 1
    print("\nVs vanilla (method none), each ratio as the median [95% bootstrap interval of the median] of the "
          f"per-round ratios over {args.repeats} rounds; ! = interval wider than 10% of the median. at_limit = prefill_ratio / flops_ratio (1.0 = latency falls as "
          "much as compute).\n")
    print(markdown_table(["method", "r", "visual tokens", "prefill", "FLOPs", "at_limit", "at_limit (causal)", "decode/token",
                          "peak mem", "activation mem", "select overhead"], table))
    spreads = [prefill[v] for v in ok if v != base] + [decode[v] for v in ok if v != base]
    if (warning := noise_warning(spreads, "prefill/decode ratios")) is not None:
        print(f"\n{warning}")

    throughput = measure_throughput(model, proc, args, dtype) if args.batch_sizes else []

    scaling = []
    if args.scaling_frames:
        batches = {f: make_inputs(proc, f, args.device, dtype) for f in args.scaling_frames}
        for f in args.scaling_frames:
            for name in ("none", "vidcom2"):
                run_once(model, batches[f], name, 0.25, 1, f)  # warm-up
        for f in args.scaling_frames:
            times = {n: statistics.median(run_once(model, batches[f], n, 0.25 if n != "none" else 1.0, 1, f).prefill_s
                                          for _ in range(args.repeats)) for n in ("none", "vidcom2")}
            scaling.append({"frames": f, "vanilla_prefill_s": times["none"], "vidcom2_prefill_s": times["vidcom2"]})
        print("\nPrefill vs frame count (VidCom2 at r = 0.25):\n")
        print(markdown_table(["frames", "vanilla prefill (s)", "vidcom2 prefill (s)", "ratio"],
                             [[s["frames"], f"{s['vanilla_prefill_s']:.3f}", f"{s['vidcom2_prefill_s']:.3f}",
                               f"{s['vidcom2_prefill_s'] / s['vanilla_prefill_s']:.3f}"] for s in scaling]))

    checks = []
    for row in rows:
        stage = vidcom2.get_method(row["method"]).info.stage
        if stage == "pre_llm" and row["method"] != "none" and row["retention_ratio"] == 0.25:
            checks.append((f"{row['method']} prefill at_limit <= {TARGETS['prefill_at_limit']}", row["at_limit"],
                           row["at_limit"] <= TARGETS["prefill_at_limit"]))
            checks.append((f"{row['method']} prefill at_limit (causal FLOPs) <= {TARGETS['prefill_at_limit']}",
                           row["at_limit_causal"], row["at_limit_causal"] <= TARGETS["prefill_at_limit"]))
        if row["method"] == "vidcom2":
            checks.append((f"vidcom2 r={row['retention_ratio']} select overhead <= {TARGETS['vidcom2_select_overhead']}",
                           row["select_overhead_frac"], row["select_overhead_frac"] <= TARGETS["vidcom2_select_overhead"]))
        if row["method"] == "fastv" and row["peak_mem_ratio"] is not None:
            checks.append((f"fastv r={row['retention_ratio']} peak mem ratio <= {TARGETS['fastv_peak_mem']}",
                           row["peak_mem_ratio"], row["peak_mem_ratio"] <= TARGETS["fastv_peak_mem"]))
    checks.append((f"method none vs bare model overhead <= {TARGETS['none_overhead']:.0%}", none_overhead,
                   none_overhead <= TARGETS["none_overhead"]))
    print("\nTargets:\n")
    print(markdown_table(["target", "measured", "met"], [[c, f"{v:.4f}", "yes" if ok else "NO"] for c, v, ok in checks]))
    write_json(args.out, {
        "machine": {**machine(args.device), "size": args.size, "dtype": str(dtype), "frames": args.frames,
                    "repeats": args.repeats, "new_tokens": args.new_tokens, "pid": os.getpid()},
        "rows": rows, "failed": [{"method": v[0], "retention_ratio": v[1], "error": e} for v, e in failed.items()],
        "none_vs_bare_overhead": none_overhead, "scaling": scaling, "throughput": throughput,
        "noise": {"threshold": 0.10, "noisy_ratios": sum(x.noisy for x in spreads), "ratios": len(spreads),
                  "warning": warning},
        "targets": [{"target": c, "measured": v, "met": ok} for c, v, ok in checks],
    })
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
