#!/usr/bin/env python3
"""Turn bench_structured_ffn's Google Benchmark JSON into a Markdown table.

Usage: bench_table.py bench.json [more.json ...]

One row per (width, structure): parameters as % of the dense FFN pair, then GFLOP/s, tokens/s
and speed-up over dense for forward and forward+backward. With repetitions, medians are used.
"""
import json
import sys
from collections import OrderedDict


def load(paths):
    rows = OrderedDict()
    context = {}
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"bench_table.py: cannot read {path}: {e}")
        context = data.get("context", {})
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            name = b.get("run_name", b["name"])
            parts = name.split("/")
            if len(parts) < 3 or not parts[1].startswith("d:"):
                continue
            mode, width, structure = parts[0], int(parts[1][2:]), parts[2]
            row = rows.setdefault((width, structure), {})
            # Prefer the median aggregate when repetitions were run.
            if mode in row and b.get("run_type") != "aggregate":
                continue
            row[mode] = b
    return rows, context


def fmt(b, key, spec):
    if b is None or key not in b:
        return "–"
    return format(b[key], spec)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows, context = load(sys.argv[1:])
    if not rows:
        sys.exit("bench_table.py: no FFN benchmarks found")
    gemm = context.get("gemm", "?")
    threads = context.get("threads", "?")
    print(f"FFN pair (d -> 4d, bias + GELU, 4d -> d, bias), 2048 tokens, fp32, "
          f"{threads} threads, GEMM: {gemm}\n")
    print("| d | structure | params | fwd GFLOP/s | fwd ms | fwd speed-up | fwd+bwd GFLOP/s "
          "| fwd+bwd ms | fwd+bwd tokens/s | fwd+bwd speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (width, structure), modes in rows.items():
        f, t = modes.get("ffn_fwd"), modes.get("ffn_fwd_bwd")
        any_b = f or t
        params = f"{any_b['params_pct']:.1f}%" if any_b and "params_pct" in any_b else "–"
        print(f"| {width} | {structure} | {params} | {fmt(f, 'GFLOPs', '.0f')} | "
              f"{fmt(f, 'real_time', '.1f')} | {fmt(f, 'speedup', '.2f')}× | "
              f"{fmt(t, 'GFLOPs', '.0f')} | {fmt(t, 'real_time', '.1f')} | "
              f"{fmt(t, 'tokens_per_s', '.0f')} | {fmt(t, 'speedup', '.2f')}× |")


if __name__ == "__main__":
    main()
