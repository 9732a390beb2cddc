#!/usr/bin/env python3
"""Summarises a scripts/gpu_check.sh output folder: the CUDA test results, the FFN benchmark
(bench_cuda_ffn.json) beside PyTorch's numbers for the same shapes (torch.csv), the GPT-2 124M
training step (bench_cuda_gpt_step.json) beside PyTorch's, and the issue's speed targets with
whether each was met."""
import csv
import json
import os
import re
import sys

# Speed-up over dense that each structure must reach at d >= 2048 (forward and fwd+bwd).
TARGETS = {"lowrank_63": 1.4, "blockdense_63": 1.4, "lowrank_32": 2.6, "blockdense_32": 2.6,
           "blockshuffle_63": 1.2, "blockshuffle_32": 2.2}
# The GPT-2 124M dense training step: at least PyTorch eager's tokens/s, and this MFU (percent,
# FLOPs as model.training_flops counts them).
GPT_MFU_TARGET = 40.0


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


def load_gpt(folder):
    """The bench_cuda_gpt_step rows by name without Google Benchmark's suffixes (gpt2_124m/dense),
    in run order, and the run's context (device, batch, seq, peak_tflops)."""
    path = os.path.join(folder, "bench_cuda_gpt_step.json")
    rows = {}
    if not os.path.exists(path):
        return rows, {}
    data = json.load(open(path))
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue  # mean / median / stddev of --benchmark_repetitions
        name = re.sub(r"(/iterations:\d+|/repeats:\d+|/manual_time|/real_time)+$", "", b.get("run_name", b["name"]))
        if name.startswith("gpt2_124m"):
            rows[name] = b
    return rows, data.get("context", {})


def number(r, key):
    """A float from a CSV row, None when the cell is empty."""
    v = r.get(key, "")
    return float(v) if v not in ("", None) else None


def gpt_section(gpt, context, torch):
    """Prints the GPT-2 124M step table; returns (missed, unchecked) target lines."""
    missed, unchecked = [], []
    torch_rows = {k[4]: r for k, r in torch.items() if k[0] == "gpt2"}
    if not gpt and not torch_rows:
        return missed, unchecked
    batch, seq = context.get("batch", "16"), context.get("seq", "1024")
    print(f"\nGPT-2 124M training step, B={batch} T={seq}, bf16 "
          f"(MFU: % of {context.get('peak_tflops', '989')} TFLOP/s; MFU 6N: FLOPs as 6N + 12LdT per token, "
          "PyTorch's count)")
    print(f"  {'row':34} {'ms':>8} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6} {'MFU 6N':>7} {'params':>8} {'vs dense':>8}")
    dense = gpt.get("gpt2_124m/dense")
    for name, b in gpt.items():
        if b.get("error_occurred"):
            print(f"  {'bonsai ' + name:34} error: {b.get('error_message', '?')}")
            continue
        vs = ""
        if dense and not dense.get("error_occurred") and name.startswith("gpt2_124m/"):
            vs = f"{b['tokens_per_s'] / dense['tokens_per_s']:7.2f}x"
        print(f"  {'bonsai ' + name:34} {b['real_time']:8.2f} {b['tokens_per_s']:11,.0f} {b['TFLOPs']:8.1f} "
              f"{b['MFU_pct']:5.1f}% {b['MFU_6N_pct']:6.1f}% {b['params_M']:7.1f}M {vs:>8}")
    for backend in ("eager", "compile"):
        r = torch_rows.get(backend)
        if not r:
            continue
        if r.get("error") or number(r, "ms") is None:
            print(f"  {'torch ' + backend:34} error: {r.get('error') or 'no time'}")
            continue
        mfu = number(r, "mfu")
        print(f"  {'torch ' + backend + ' (vocab 50304)':34} {number(r, 'ms'):8.2f} {number(r, 'tokens_s'):11,.0f} "
              f"{number(r, 'tflops'):8.1f} {'-':>6} {'-' if mfu is None else format(100 * mfu, '6.1f') + '%':>7}")

    # The targets for the dense step.
    if not dense or dense.get("error_occurred"):
        unchecked.append("GPT-2 124M dense step: no bonsai row (bench_cuda_gpt_step.json)")
        return missed, unchecked
    eager = torch_rows.get("eager")
    eager_tps = number(eager, "tokens_s") if eager and not eager.get("error") else None
    if eager_tps is None:
        unchecked.append("GPT-2 dense step tokens/s >= PyTorch eager: no PyTorch eager row in torch.csv")
        line = "dense step tokens/s >= PyTorch eager: not checked (no PyTorch eager row in torch.csv)"
    else:
        ok = dense["tokens_per_s"] >= eager_tps
        line = (f"dense step tokens/s >= PyTorch eager: {dense['tokens_per_s']:,.0f} vs {eager_tps:,.0f} "
                f"({dense['tokens_per_s'] / eager_tps:.2f}x) {'met' if ok else 'MISSED'}")
        if not ok:
            missed.append(f"GPT-2 dense step: {dense['tokens_per_s']:,.0f} tokens/s < PyTorch eager {eager_tps:,.0f}")
    print("  check: " + line)
    ok = dense["MFU_pct"] >= GPT_MFU_TARGET
    print(f"  check: dense step MFU >= {GPT_MFU_TARGET:.0f}%: {dense['MFU_pct']:.1f}% {'met' if ok else 'MISSED'}")
    if not ok:
        missed.append(f"GPT-2 dense step: MFU {dense['MFU_pct']:.1f}% < {GPT_MFU_TARGET:.0f}%")
    return missed, unchecked


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
    gpt_missed, unchecked = gpt_section(*load_gpt(folder), torch)
    misses += gpt_missed
    print()
    print("speed targets: " + ("all met" if not misses else f"{len(misses)} missed")
          + (f" ({len(unchecked)} not checked)" if unchecked else ""))
    for m in misses:
        print("  missed: " + m)
    for u in unchecked:
        print("  not checked: " + u)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpu_check")
