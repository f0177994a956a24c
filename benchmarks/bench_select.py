"""Selection cost of every method on tensors (no model): `make bench-select`.

Times ``vidcom2.apply`` per method on LLaVA-OV-like ([32, 196, 3584]) and LLaVA-Video-like ([64, 169, 3584]) inputs,
and VidCom2's selection and FCA's budgets against the frame count (32 ... 256 frames of 196 tokens: time, activation
memory, growth per doubling, ratio to one read of the features). Every figure is the median of interleaved rounds
after a warm-up, printed with the 95% bootstrap interval of the median; intervals wider than 10% of it are flagged and a noisy machine is warned about. Writes results/bench/select.json and prints Markdown tables. A benchmark, not a test: numbers depend on the
machine; compare ratios from one run.
"""

from __future__ import annotations

import argparse
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
    write_json,
)
from vidcom2.budget import frame_budgets
from vidcom2.registry import hparam_names


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
    if "global_features" in info.needs:  # FastVID's MAP-head vector per frame (the mean token stands in)
        kw["global_features"] = x.mean(dim=1)
    if "merge_ratio" in hparam_names(name):  # DyCoke's budget-matched TTM cannot go below its anchor floor: the
        kw["merge_ratio"] = 1 - ratio  # official K instead
    return lambda: vidcom2.apply(name, x, ratio, **kw)


LAYOUTS = {"llava_ov": (32, 196), "llava_video": (64, 169)}


def _method_table(args, dtype, rows) -> list:
    spreads = []
    for label in args.layouts:
        f, n = LAYOUTS[label]
        x, s, k = _inputs(f, n, args.dim, args.device, dtype)
        fns = {m: _call(m, x, s, k, args.ratio) for m in vidcom2.list_methods()}
        times = interleaved_times(fns, args.repeats, args.warmup, args.device)
        vs = paired_ratios(times, "vidcom2")
        table = []
        for m, ts in times.items():
            sec = Spread.of([t * 1e3 for t in ts])
            rows.append({"layout": f"{label} [{f},{n}]", "frames": f, "tokens_per_frame": n, "method": m,
                         "seconds": sec.median / 1e3, "ms_spread": sec.as_dict(), "vs_vidcom2": vs[m].as_dict()})
            table.append([label, m, sec.cell(2), vs[m].cell(2)])
            spreads.append(vs[m])
        print(f"\nSelection time per video [{f},{n},{args.dim}], r={args.ratio}, {args.dtype} on {args.device}; "
              f"median [95% bootstrap interval of the median] over {args.repeats} rounds, ! = interval > 10% of the "
              "median:\n")
        print(markdown_table(["layout", "method", "ms", "vs vidcom2 (paired)"], table))
    return spreads


def _growth_table(args, dtype) -> tuple[list[dict], list]:
    """VidCom2's whole selection and FCA's budgets alone against the frame count: time, activation memory, the
    growth factor per doubling of frames, and the ratio to one read of the features (a memory-bandwidth floor)."""
    fns, probes = {}, {}
    for f in args.growth_frames:
        x, _, _ = _inputs(f, 196, args.dim, args.device, dtype, seed=f)
        fns[("vidcom2", f)] = (lambda x=x: vidcom2.apply("vidcom2", x, args.ratio))
        fns[("fca", f)] = (lambda x=x: frame_budgets(x, args.ratio, "fca"))
        fns[("read", f)] = (lambda x=x: x.sum())
    times = interleaved_times(fns, args.repeats, args.warmup, args.device)
    for key, fn in fns.items():
        if key[0] != "read":
            with MemoryProbe(args.device) as probe:
                fn()
            probes[key] = probe.growth
    out, table, spreads = [], [], []
    for what in ("vidcom2", "fca"):
        prev = None
        for f in args.growth_frames:
            sec = Spread.of(times[(what, f)])
            floor = statistics.median(times[("read", f)])
            doubling = prev is not None and f == 2 * prev[0]
            growth = sec.median / prev[1] if doubling else None
            out.append({"what": what, "frames": f, "tokens": f * 196, "seconds": sec.as_dict(),
                        "peak_mem_growth_bytes": probes[(what, f)], "growth_per_doubling": growth,
                        "vs_one_read_of_features": sec.median / floor})
            table.append([what, f, f * 196, Spread.of([t * 1e3 for t in times[(what, f)]]).cell(2),
                          f"{probes[(what, f)] / 2**20:.1f}", f"{growth:.2f}" if growth else "–",
                          f"{sec.median / floor:.1f}"])
            spreads.append(sec)
            prev = (f, sec.median)
    print(f"\nSelection cost vs frame count (196 tokens per frame, D={args.dim}, r={args.ratio}; activation memory: "
          "CUDA allocator peak or sampled RSS growth; 'vs one read' = time / time of x.sum()):\n")
    print(markdown_table(["selection", "frames", "tokens", "ms", "activation MiB", "x per doubling", "vs one read"],
                         table))
    return out, spreads


def _vs_official(args, dtype) -> tuple[list[dict], list]:
    """VidCom2's selection (default = the official operations' results; ``fast``) against the official function's
    operations on the same input, plus a memory-bandwidth floor (one read of the features). Kept tokens are
    gathered in every variant, as the official function returns them."""
    from benchmarks.official_vidcom2 import official_select

    f, n = LAYOUTS["llava_ov"]
    x, _, _ = _inputs(f, n, args.dim, args.device, dtype)
    fast = vidcom2.get_method("vidcom2", fast=True)

    def gathered(method):
        return lambda: x.reshape(f * n, -1)[method(x, args.ratio).keep.reshape(-1)]

    fns = {"official": lambda: official_select(x, args.ratio), "vidcom2": gathered(vidcom2.get_method("vidcom2")),
           "vidcom2 fast": gathered(fast), "read": lambda: x.sum()}
    times = interleaved_times(fns, args.repeats, args.warmup, args.device)
    speed = {k: Spread.of([o / t for o, t in zip(times["official"], v)]) for k, v in times.items()}
    floor = {k: Spread.of([t / r for t, r in zip(v, times["read"])]) for k, v in times.items()}
    rows, table = [], []
    for k in fns:
        if k == "read":
            continue
        rows.append({"variant": k, "ms": statistics.median(times[k]) * 1e3, "speed_vs_official": speed[k].as_dict(),
                     "times_one_read": floor[k].as_dict()})
        table.append([k, f"{statistics.median(times[k]) * 1e3:.1f}", speed[k].cell(2), floor[k].cell(1)])
    print(f"\nVidCom2 selection vs the official function's operations, [{f},{n},{args.dim}] {args.dtype} on "
          f"{args.device}, r={args.ratio} (paired per round; 'x one read' = time / time of one read of the features):\n")
    print(markdown_table(["variant", "ms (median)", "speed vs official", "x one read"], table))
    agree = _mask_agreement(fast, x, args)
    rows.append({"variant": "fast mask agreement", **agree})
    print(f"\nfast vs default masks on this input and {agree['inputs'] - 1} more seeds, r in {agree['ratios']}: "
          f"{agree['identical_masks']}/{agree['masks']} identical masks, {agree['token_agreement']:.5f} of kept "
          f"tokens shared, per-frame budgets equal in {agree['equal_budgets']}/{agree['masks']}")
    return rows, [speed[k] for k in fns if k not in ("read", "official")]


def _mask_agreement(fast, x, args, seeds: int = 3) -> dict:
    """How often the fast formulation's masks equal the default's (the official results) at the bench shape."""
    default = vidcom2.get_method("vidcom2")
    ratios = (0.1, 0.15, 0.25, 0.5)
    inputs = [x] + [_inputs(*x.shape, args.device, x.dtype, seed=100 + s)[0] for s in range(seeds)]
    same = budgets = masks = 0
    shared = kept = 0
    for inp in inputs:
        for r in ratios:
            a, b = default(inp, r).keep, fast(inp, r).keep
            masks += 1
            same += bool(torch.equal(a, b))
            budgets += bool(torch.equal(a.sum(dim=1), b.sum(dim=1)))
            shared += int((a & b).sum())
            kept += int(a.sum())
    return {"inputs": len(inputs), "ratios": list(ratios), "masks": masks, "identical_masks": same,
            "equal_budgets": budgets, "token_agreement": shared / kept}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--dim", type=int, default=3584, help="hidden size (3584 = Qwen2-7B, the LLaVA-OV/Video LLM)")
    ap.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS),
                    help="per-method tables (none: skip)")
    ap.add_argument("--growth-frames", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--no-official", dest="official", action="store_false",
                    help="skip the comparison with the official function's operations")
    ap.add_argument("--out", default="results/bench/select.json")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rows: list[dict] = []
    spreads = _method_table(args, dtype, rows)
    growth, more = _growth_table(args, dtype)
    official, more2 = _vs_official(args, dtype) if args.official else ([], [])
    warning = noise_warning(spreads + more + more2, "timings")
    if warning:
        print(f"\n{warning}")
    write_json(args.out, {"machine": machine(args.device), "args": vars(args), "rows": rows, "growth": growth,
                          "vs_official": official, "noise_warning": warning})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
