"""Selection cost of every method on tensors (no model): `make bench-select`.

Times ``vidcom2.apply`` per method on LLaVA-OV-like ([32, 196, 3584]) and LLaVA-Video-like ([64, 169, 3584]) inputs,
and VidCom2 against the frame count (8 ... 256 frames of 196 tokens). Medians of interleaved repeats after a
warm-up. Writes results/bench/select.json and prints Markdown tables. A benchmark, not a test: numbers depend on the
machine; compare ratios from one run.
"""

from __future__ import annotations

import argparse

import torch

import vidcom2
from benchmarks.common import interleaved_medians, machine, markdown_table, write_json


def _inputs(f, n, d, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(f, n, d, generator=g).to(device=device, dtype=dtype)
    scores = torch.rand(f, n, generator=g).to(device)
    keys = torch.randn(f, n, 64, generator=g).to(device=device, dtype=dtype)
    return x, scores, keys


def _call(name, x, scores, keys, ratio):
    info = vidcom2.get_method(name).info
    kw = {}
    if "scores" in info.needs:
        kw["scores"] = scores
    if "keys" in info.needs:
        kw["keys"] = keys
    if name == "dycoke_ttm":  # the budget-matched TTM cannot go below its anchor floor: use the official K instead
        kw["merge_ratio"] = 1 - ratio
    return lambda: vidcom2.apply(name, x, ratio, **kw)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--dim", type=int, default=3584, help="hidden size (3584 = Qwen2-7B, the LLaVA-OV/Video LLM)")
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 32, 128, 256])
    ap.add_argument("--out", default="results/bench/select.json")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rows, table = [], []
    for label, (f, n) in {"llava_ov [32,196]": (32, 196), "llava_video [64,169]": (64, 169)}.items():
        x, s, k = _inputs(f, n, args.dim, args.device, dtype)
        fns = {m: _call(m, x, s, k, args.ratio) for m in vidcom2.list_methods()}
        med = interleaved_medians(fns, args.repeats, args.warmup, args.device)
        for m, sec in med.items():
            rows.append({"layout": label, "frames": f, "tokens_per_frame": n, "method": m, "seconds": sec})
            table.append([label, m, f"{sec * 1e3:.2f}", f"{sec / med['vidcom2']:.2f}"])
    print(f"\nSelection time per video, r={args.ratio}, D={args.dim}, {args.dtype} on {args.device}:\n")
    print(markdown_table(["layout", "method", "ms (median)", "vs vidcom2"], table))
    scaling = []
    fns = {}
    for f in args.frames:
        x, _, _ = _inputs(f, 196, args.dim, args.device, dtype, seed=f)
        fns[f] = (lambda x=x: vidcom2.apply("vidcom2", x, args.ratio))
    med = interleaved_medians(fns, args.repeats, args.warmup, args.device)
    for f in args.frames:
        rows.append({"layout": "scaling", "frames": f, "tokens_per_frame": 196, "method": "vidcom2", "seconds": med[f]})
        scaling.append([f, f * 196, f"{med[f] * 1e3:.2f}", f"{med[f] / med[args.frames[0]]:.2f}"])
    print("\nVidCom2 vs frame count (196 tokens per frame):\n")
    print(markdown_table(["frames", "tokens", "ms (median)", f"vs {args.frames[0]} frames"], scaling))
    write_json(args.out, {"machine": machine(args.device), "args": vars(args), "rows": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
