#!/usr/bin/env python3
"""PyTorch reference timings for the structured FFN pair and a GPT-2 124M training step.

Part "ffn" measures, in PyTorch on one GPU, the workloads of bench/cuda/bench_ffn: the FFN pair
of a GPT block -- up map d -> 4d, + bias, tanh-GELU, down map 4d -> d, + bias -- for every
structure at the paper's two budgets, with T = 30720 flattened tokens, bf16 parameters and
activations, d in {2048, 4096, 5120}. Structures (both maps, in -> out):

  dense            y = x W^T, W (out, in)
  lowrank_63/_32   y = (x V^T) U^T, V (R, in), U (out, R), R = d/2 / d/4
  blockdense_63/32 y = U blockdiag(V_0..V_3) x, V_i (R/4, in/4), U (out, R), R = 3d/4 / 3d/8
  blockshuffle_63  Monarch-style y = P_{B,s} blockdiag(U) P_{q,B} blockdiag(V) x, B = 2
  blockshuffle_32  the same with B = 4 (m = min(in, out), p = in/B, q = m/B, s = out/B)

as in bonsai::block_dense / bonsai::block_shuffle. Modes: "fwd" (forward of the pair, run under
torch.no_grad) and "fwd_bwd" (forward, then y.backward(dy) into x and every parameter).
FLOPs are counted as in the C++ benchmarks: 2 x T x (weights of both maps, biases excluded)
for fwd, x3 for fwd_bwd; the speed-up is over the dense pair of the same d, mode and backend,
which is measured first. Each configuration runs eagerly and under the default torch.compile();
the time is the median of --iters CUDA-event-timed iterations after a warm-up (compilation
happens in the warm-up). The raw bf16 GEMM rate (torch.matmul of (T, d) x (d, 4d) for each d,
and 8192^3) gives the ceiling the dense pair is measured against.

Part "gpt2" times one training step (forward + backward + fused AdamW) of GPT-2 124M: 12 layers,
12 heads, n_embd 768, vocabulary 50257 padded to 50304 (as llm.c does, for GEMM-friendly
shapes), block size 1024, batch 16 x 1024, fp32 master weights under bf16 autocast, tied
embeddings, pre-LN, causal F.scaled_dot_product_attention, tanh-GELU. MFU uses model FLOPs per
token 6 N + 12 L C T (nanoGPT's form; llm.c's train_gpt2.cu counts the attention term as
6 L C T), with N every parameter except the position embeddings (the tied token embedding counted
once, padded rows included); peak is --peak-tflops (989.4 = H100 SXM bf16 dense).
"""
import argparse
import csv
import gc
import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F

DEV, BF16 = "cuda", torch.bfloat16
STRUCTURES = ["dense", "lowrank_63", "lowrank_32", "blockdense_63", "blockdense_32",
              "blockshuffle_63", "blockshuffle_32"]
FIELDS = ["part", "d", "structure", "mode", "backend", "ms", "tflops", "speedup", "tokens_s", "mfu", "error"]


# ----------------------------------------------------------------------------- structured maps
def weight(*shape):
    return nn.Parameter(torch.empty(*shape, device=DEV, dtype=BF16).normal_(0.0, 0.02))


def bias(n):
    return nn.Parameter(torch.zeros(n, device=DEV, dtype=BF16))


def block_diag(x, w):
    """blockdiag(w_0..w_{B-1}) applied to x (T, B p), w (B, q, p): returns (B, T, q), block i read
    from x[:, i p:(i+1) p]. torch.bmm on the strided (B, T, p) view of x, which cuBLAS takes as a
    strided batch without copying x; torch.einsum("tbp,bqp->btq") lowers to the same bmm."""
    b, _, p = w.shape
    return torch.bmm(x.view(x.shape[0], b, p).transpose(0, 1), w.transpose(1, 2))


class Dense(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.w, self.b = weight(n_out, n_in), bias(n_out)

    def forward(self, x):
        return F.linear(x, self.w, self.b)


class LowRank(nn.Module):
    def __init__(self, n_in, n_out, rank):
        super().__init__()
        self.v, self.u, self.b = weight(rank, n_in), weight(n_out, rank), bias(n_out)

    def forward(self, x):
        return F.linear(F.linear(x, self.v), self.u, self.b)


class BlockDense(nn.Module):
    def __init__(self, n_in, n_out, rank, blocks):
        super().__init__()
        self.v = weight(blocks, rank // blocks, n_in // blocks)
        self.u, self.b = weight(n_out, rank), bias(n_out)

    def forward(self, x):
        h = block_diag(x, self.v)  # (B, T, R/B) -> concatenated blocks (T, R)
        return F.linear(h.transpose(0, 1).reshape(x.shape[0], -1), self.u, self.b)


class BlockShuffle(nn.Module):
    """y = P_{B,s} blockdiag(U) P_{q,B} blockdiag(V) x, (P_{a,b} v)[j a + i] = v[i b + j]."""

    def __init__(self, n_in, n_out, blocks):
        super().__init__()
        m = min(n_in, n_out)
        self.nb, self.q, self.s = blocks, m // blocks, n_out // blocks
        assert self.q % blocks == 0, "the one-copy P_{q,B} below needs B | q"
        self.v, self.u = weight(blocks, self.q, n_in // blocks), weight(blocks, self.s, self.q)
        self.b = bias(n_out)

    def forward(self, x):
        t, nb, q = x.shape[0], self.nb, self.q
        hb = block_diag(x, self.v)  # hb[i, t, k] = h[t, i q + k]
        # P_{q,B}: block c of the second stage reads h[t, i B + c], i < q. Writing k = k1 B + c
        # gives i = i_blk (q/B) + k1, so it is one permute of hb (one copy, no (T, m) detour).
        h2 = hb.view(nb, t, q // nb, nb).permute(3, 1, 0, 2).reshape(nb, t, q)
        zb = torch.bmm(h2, self.u.transpose(1, 2))  # zb[c, t, j] = z[t, c s + j]
        # P_{B,s}: y[t, j B + c] = z[t, c s + j] = zb[c, t, j].
        return zb.permute(1, 2, 0).reshape(t, -1) + self.b


def make_map(structure, n_in, n_out, d):
    if structure == "dense":
        return Dense(n_in, n_out)
    kind, budget = structure.split("_")
    big = budget == "63"
    if kind == "lowrank":
        return LowRank(n_in, n_out, d // 2 if big else d // 4)
    if kind == "blockdense":
        return BlockDense(n_in, n_out, 3 * d // 4 if big else 3 * d // 8, 4)
    return BlockShuffle(n_in, n_out, 2 if big else 4)


class FfnPair(nn.Module):
    def __init__(self, structure, d):
        super().__init__()
        self.up, self.down = make_map(structure, d, 4 * d, d), make_map(structure, 4 * d, d, d)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))

    def weight_count(self):  # biases are the only 1-D parameters
        return sum(p.numel() for p in self.parameters() if p.dim() > 1)


# ----------------------------------------------------------------------------- GPT-2 124M
class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.c_attn, self.attn_proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.c_fc, self.mlp_proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        for proj in (self.attn_proj, self.mlp_proj):  # GPT-2's scaled init of residual projections
            proj.is_residual = True

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.attn_proj(a)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, vocab=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied embeddings
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                std = 0.02 / (2 * n_layer) ** 0.5 if getattr(m, "is_residual", False) else 0.02
                nn.init.normal_(m.weight, 0.0, std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1))


# ----------------------------------------------------------------------------- measurement
def free():
    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def median_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def first_line(e):
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:160]


class Report:
    """Rows, speed-ups against a reference row measured earlier, progress lines and the CSV."""

    def __init__(self, csv_path):
        self.rows, self.ref_ms = [], {}
        self.csv_file = open(csv_path, "w", newline="") if csv_path else None
        self.csv = csv.DictWriter(self.csv_file, FIELDS) if self.csv_file else None
        if self.csv:
            self.csv.writeheader()

    def add(self, row, ref_key=None, is_ref=False, run=None, flops=None, tokens=None, peak=None):
        """Time run() (ms), derive the rates, record the row; on an error keep its first line."""
        row = {f: "" for f in FIELDS} | row
        try:
            ms = run()
            row.update(ms=ms, tflops=flops / ms * 1e-9)
            if tokens:
                row["tokens_s"] = tokens / ms * 1e3
            if peak:
                row["mfu"] = row["tflops"] / peak
            if is_ref:
                self.ref_ms[ref_key] = ms
            if ref_key in self.ref_ms:
                row["speedup"] = self.ref_ms[ref_key] / ms
        except Exception as e:  # a failed compile or an OOM: report it and go on
            row["error"] = first_line(e)
        free()
        self.rows.append(row)
        if self.csv:
            self.csv.writerow(row)
            self.csv_file.flush()
        print("  " + self.format(row), flush=True)

    @staticmethod
    def format(r):
        head = f"{r['part']:<5} {r['d']:>5} {r['structure']:<24} {r['mode']:<10} {r['backend']:<8}"
        if r["error"]:
            return f"{head} {r['error']}"
        num = lambda v, f: format(v, f) if v != "" else "-"
        return (f"{head} {r['ms']:>9.3f} {r['tflops']:>8.1f} {num(r['speedup'], '>7.2f'):>7} "
                f"{num(r['tokens_s'], '>12,.0f'):>12} {num(r['mfu'], '>6.1%'):>6}")

    def table(self):
        print(f"\n{'part':<5} {'d':>5} {'structure':<24} {'mode':<10} {'backend':<8} "
              f"{'ms':>9} {'TFLOP/s':>8} {'speedup':>7} {'tokens/s':>12} {'MFU':>6}")
        for r in self.rows:
            print(self.format(r))
        if self.csv_file:
            self.csv_file.close()


def run_gemm(rep, args):
    shapes = [(args.tokens, d, 4 * d) for d in args.dims] + [(8192, 8192, 8192)]
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=DEV, dtype=BF16), torch.randn(k, n, device=DEV, dtype=BF16)
        rep.add(dict(part="gemm", d=k, structure=f"matmul {m}x{k}x{n}", mode="fwd", backend="eager"),
                run=lambda: median_ms(lambda: torch.matmul(a, b), args.warmup, args.iters), flops=2 * m * k * n)
        del a, b


def run_ffn(rep, args, backends):
    t = args.tokens
    for d in args.dims:
        for structure in STRUCTURES:
            torch.manual_seed(1005)
            ffn = FfnPair(structure, d)
            params = list(ffn.parameters())
            x = torch.randn(t, d, device=DEV, dtype=BF16, requires_grad=True)
            dy = torch.randn(t, d, device=DEV, dtype=BF16)
            print(f"[ffn] d={d} {structure}: {ffn.weight_count() / (8 * d * d):.1%} of dense", flush=True)
            for mode in ("fwd", "fwd_bwd"):
                for backend in backends:
                    def run():
                        model = torch.compile(ffn) if backend == "compile" else ffn

                        def step():
                            if mode == "fwd":
                                with torch.no_grad():
                                    model(x)
                                return
                            for p in params + [x]:
                                p.grad = None
                            model(x).backward(dy)

                        return median_ms(step, args.warmup, args.iters)

                    rep.add(dict(part="ffn", d=d, structure=structure, mode=mode, backend=backend),
                            ref_key=(d, mode, backend), is_ref=structure == "dense", run=run,
                            flops=2 * t * ffn.weight_count() * (3 if mode == "fwd_bwd" else 1), tokens=t)
            del ffn, params, x, dy
            free()


def run_gpt2(rep, args, backends):
    b, t, n_layer, n_embd = 16, 1024, 12, 768
    for backend in backends:
        torch.manual_seed(1005)
        model = GPT2(n_layer=n_layer, n_embd=n_embd).to(DEV)  # fp32 master weights
        n_params = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
        flops_per_token = 6 * n_params + 12 * n_layer * n_embd * t
        groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                  {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
        data = torch.randint(0, 50257, (b, t + 1), device=DEV)  # random tokens of the real vocabulary
        x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
        print(f"[gpt2] {backend}: N = {n_params:,} (no wpe), {flops_per_token:,} FLOP/token", flush=True)

        def run():
            fwd = torch.compile(model) if backend == "compile" else model

            def step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=BF16):
                    loss = fwd(x, y)
                loss.backward()
                opt.step()

            return median_ms(step, max(args.warmup, 3), args.iters)

        rep.add(dict(part="gpt2", d=n_embd, structure="gpt2_124M B16xT1024", mode="train_step", backend=backend),
                ref_key="gpt2", is_ref=backend == "eager", run=run, flops=flops_per_token * b * t,
                tokens=b * t, peak=args.peak_tflops)
        del model, opt, groups, data, x, y
        free()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["ffn", "gpt2", "all"], default="all")
    ap.add_argument("--dims", default="2048,4096,5120", help="comma-separated model widths d")
    ap.add_argument("--tokens", type=int, default=30720, help="flattened tokens T of the FFN part")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations (the median is reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations first (compilation included)")
    ap.add_argument("--backends", default="eager,compile",
                    help="comma-separated subset of eager,compile")
    ap.add_argument("--peak-tflops", type=float, default=989.4, help="peak bf16 dense TFLOP/s for MFU")
    ap.add_argument("--csv", help="write every row to this CSV file")
    args = ap.parse_args()
    args.dims = [int(v) for v in args.dims.split(",") if v]

    torch.backends.cuda.matmul.allow_tf32 = True
    backends = [b for b in args.backends.split(",") if b]
    if not backends or any(b not in ("eager", "compile") for b in backends):
        ap.error("--backends takes eager, compile or both")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, "
          f"peak {args.peak_tflops} TFLOP/s", flush=True)

    rep = Report(args.csv)
    if args.part in ("ffn", "all"):
        run_gemm(rep, args)
        run_ffn(rep, args, backends)
    if args.part in ("gpt2", "all"):
        run_gpt2(rep, args, backends)
    rep.table()
    print("speedup: ffn over dense (same d, mode, backend); gpt2 over eager. "
          "TFLOP/s counts weight FLOPs only (ffn), 6N + 12LCT per token (gpt2).")


if __name__ == "__main__":
    main()
