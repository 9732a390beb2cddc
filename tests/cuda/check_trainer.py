#!/usr/bin/env python3
"""train_gpt_cuda against train_gpt on the same data, flags and seed.

  check_trainer.py PREPARE_DATA TRAIN_GPT TRAIN_GPT_CUDA TEXT_FILE OUT_DIR

Prepares byte-level shards of TEXT_FILE, then:
  1. fp32 on the GPU follows the CPU run: every step's loss and the validation losses within
     1e-3 (relative) for a GPT-2-style LowRank model and a Llama-style dense one;
  2. checkpoints cross: a GPU run stopped half-way resumes in train_gpt, and a CPU run stopped
     half-way resumes in train_gpt_cuda, both to the straight CPU run's final loss (1e-3);
  3. bf16 trains: finite losses, the last within 5e-2 of the CPU run's;
  4. the CPU-only flags are rejected with a sentence (checked first, also without a GPU).
Without a CUDA device train_gpt_cuda must say so, and the check ends there (exit 0).
"""
import csv
import os
import shutil
import subprocess
import sys

prepare, train, train_cuda, text, out = sys.argv[1:6]
data = os.path.join(out, "bytes")
common = ["--train", f"{data}/train_*.bin", "--val", f"{data}/val_*.bin", "--tokenizer", "byte",
          "--layers", "2", "--d-model", "64", "--heads", "2", "--seq-len", "64", "--batch", "4",
          "--steps", "10", "--warmup", "2", "--eval-every", "5", "--eval-batches", "2",
          "--ckpt-every", "5", "--keep-ckpts", "4", "--sample-tokens", "8", "--threads", "2"]
gpt2_lowrank = ["--ffn", "lowrank", "--rank", "16"]
llama = ["--norm", "rmsnorm", "--pos", "rope", "--act", "swiglu", "--kv-heads", "1"]


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def run(binary, name, flags, expect_ok=True):
    """Runs a trainer into OUT/name and returns its output; expect_ok None: any exit status."""
    cmd = [binary] + common + flags + ["--out", os.path.join(out, name)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if expect_ok is not None and (p.returncode == 0) != expect_ok:
        fail(f"{' '.join(cmd)} exited with {p.returncode}:\n{p.stdout}")
    return p.stdout


def losses(name):
    """(training losses by step, validation losses by step) from OUT/name/metrics.csv."""
    train_rows, val_rows = {}, {}
    with open(os.path.join(out, name, "metrics.csv")) as f:
        for row in csv.DictReader(f):
            if row["loss"]:
                train_rows[int(row["step"])] = float(row["loss"])
            if row["val_loss"]:
                val_rows[int(row["step"])] = float(row["val_loss"])
    return train_rows, val_rows


def close(a, b, tol, what):
    if not abs(a - b) <= tol * abs(b):
        fail(f"{what}: {a} against {b} (tolerance {tol})")


def compare(gpu, cpu, tol):
    g_train, g_val = losses(gpu)
    c_train, c_val = losses(cpu)
    if sorted(g_train) != sorted(c_train) or sorted(g_val) != sorted(c_val):
        fail(f"{gpu} and {cpu} logged different steps")
    for step in c_train:
        close(g_train[step], c_train[step], tol, f"{gpu} step {step} loss")
    for step in c_val:
        close(g_val[step], c_val[step], tol, f"{gpu} step {step} validation loss")


shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
subprocess.run([prepare, text, "--documents", "blank-line", "--tokenizer", "byte", "-o", data], check=True,
               stdout=subprocess.DEVNULL)

for flags, word in ((["--sgt", "cosine"], "--sgt"), (["--sat-rate", "0.5"], "--sat-rate"),
                    (["--grow", "5:lemon:d=96"], "--grow"), (["--moe-experts", "2"], "--moe-experts")):
    said = run(train_cuda, "refused", gpt2_lowrank + flags, expect_ok=False)
    if word not in said or "CPU only" not in said:
        fail(f"{word} was not refused with a sentence:\n{said}")
print("the CPU-only flags are refused with a sentence")

probe = run(train_cuda, "probe", ["--stop-after", "1"], expect_ok=None)
if "no CUDA device" in probe:
    print("no CUDA device: train_gpt_cuda says so; the GPU comparison is skipped")
    sys.exit(0)
if "stopped after step 1 of 10" not in probe:  # what a working run prints after one step
    fail(f"the probe run did not train its step:\n{probe}")

for name, flags in (("gpt2_lowrank", gpt2_lowrank), ("llama", llama)):
    run(train, f"{name}_cpu", flags)
    run(train_cuda, f"{name}_gpu", flags + ["--precision", "fp32"])
    compare(f"{name}_gpu", f"{name}_cpu", 1e-3)
    print(f"{name}: fp32 on the GPU follows the CPU run")

# Checkpoints cross between the trainers.
straight = losses("gpt2_lowrank_cpu")[0][9]
run(train_cuda, "gpu_then_cpu", gpt2_lowrank + ["--precision", "fp32", "--stop-after", "5"])
run(train, "gpu_then_cpu", gpt2_lowrank + ["--resume"])
close(losses("gpu_then_cpu")[0][9], straight, 1e-3, "a GPU checkpoint resumed on the CPU")
run(train, "cpu_then_gpu", gpt2_lowrank + ["--stop-after", "5"])
run(train_cuda, "cpu_then_gpu", gpt2_lowrank + ["--precision", "fp32", "--resume"])
close(losses("cpu_then_gpu")[0][9], straight, 1e-3, "a CPU checkpoint resumed on the GPU")
print("checkpoints resume across train_gpt and train_gpt_cuda")

run(train_cuda, "gpt2_lowrank_bf16", gpt2_lowrank)
bf16 = losses("gpt2_lowrank_bf16")[0]
close(bf16[9], straight, 5e-2, "bf16 final loss")
print(f"bf16: final loss {bf16[9]:.4f} (fp32 CPU {straight:.4f})")

print("PASS")
