#!/usr/bin/env python3
"""Summarises a scripts/gpu_check.sh output folder: the CUDA test results, the FFN benchmark
(bench_cuda_ffn.json) beside PyTorch's numbers for the same shapes (torch.csv), and the
issue's speed targets with whether each was met."""
import csv
import json
import os
import re
import sys

# Speed-up over dense that each structure must reach at d >= 2048 (forward and fwd+bwd).
TARGETS = {"lowrank_63": 1.4, "blockdense_63": 1.4, "lowrank_32": 2.6, "blockdense_32": 2.6,
           "blockshuffle_63": 1.2, "blockshuffle_32": 2.2}


def load_bench(folder):
    path = os.path.join(folder, "bench_cuda_ffn.json")
    rows = {}
    if not os.path.exists(path):
        return rows
    for b in json.load(open(path))["benchmarks"]:
        m = re.match(r"(ffn_fwd_bwd|ffn_fwd)/d:(\d+)/(\w+)", b["name"])
        if m:
            mode = "fwd_bwd" if m.group(1) == "ffn_fwd_bwd" else "fwd"
            rows[(int(m.group(2)), m.group(3), mode)] = b
        elif b["name"].startswith("gemm/"):
            rows[b["name"]] = b
    return rows


def load_torch(folder):
    path = os.path.join(folder, "torch.csv")
    rows = {}
    if os.path.exists(path):
        for r in csv.DictReader(open(path)):
            if r["part"] == "ffn" and r["ms"]:
                rows[(int(r["d"]), r["structure"], r["mode"], r["backend"])] = r
            elif r["part"] in ("gemm", "gpt2"):
                rows[(r["part"], r["d"], r["structure"], r["mode"], r["backend"])] = r
    return rows


def main(folder):
    tests = os.path.join(folder, "tests.txt")
    if os.path.exists(tests):
        print("CUDA tests:")
        for line in open(tests):
            if line.startswith("==") or "test cases:" in line:
                print("  " + line.rstrip())
    bench, torch = load_bench(folder), load_torch(folder)
    for key, b in bench.items():
        if isinstance(key, str):
            print(f"{key:34s} {b['real_time']:8.3f} ms  {b['TFLOPs']:7.1f} TFLOP/s (bonsai cuda::gemm)")
    for key, r in torch.items():
        if key[0] == "gemm":
            print(f"torch {key[2]:28s} {float(r['ms']):8.3f} ms  {float(r['tflops']):7.1f} TFLOP/s")
    print()
    print("FFN pair, 30720 tokens, bf16: ms / TFLOP/s / speed-up over dense (target)")
    header = f"{'d':>5} {'structure':16} {'mode':8} {'bonsai':>24} {'torch eager':>24} {'torch compile':>24}"
    print(header)
    misses = []
    for (d, structure, mode), b in sorted((k, v) for k, v in bench.items() if not isinstance(k, str)):
        cells = [f"{b['real_time']:7.2f} {b['TFLOPs']:6.1f} {b.get('speedup', 0):5.2f}x"]
        target = TARGETS.get(structure)
        if target and d >= 2048 and b.get("speedup", 0) < target:
            misses.append(f"d={d} {structure} {mode}: {b.get('speedup', 0):.2f}x < {target}x")
        if structure == "dense" and mode == "fwd" and "pct_of_gemm" in b:
            cells[0] += f" ({b['pct_of_gemm']:.0f}% of GEMM)"
            if d == 4096 and b["pct_of_gemm"] < 70:
                misses.append(f"d=4096 dense fwd: {b['pct_of_gemm']:.0f}% of the GEMM rate < 70%")
        for backend in ("eager", "compile"):
            r = torch.get((d, structure, mode, backend))
            cells.append(f"{float(r['ms']):7.2f} {float(r['tflops']):6.1f} {float(r['speedup'] or 0):5.2f}x"
                         if r else "-")
        print(f"{d:>5} {structure:16} {mode:8} " + " ".join(f"{c:>24}" for c in cells))
    gpt2 = [r for k, r in torch.items() if k[0] == "gpt2"]
    if gpt2:
        print("\nGPT-2 124M training step, B=16 T=1024 (PyTorch):")
        for r in gpt2:
            print(f"  {r['backend']:8} {float(r['ms']):8.2f} ms  {float(r['tokens_s']):10.0f} tokens/s  MFU {r['mfu']}")
    print()
    print("speed targets: " + ("all met" if not misses else f"{len(misses)} missed"))
    for m in misses:
        print("  missed: " + m)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpu_check")
