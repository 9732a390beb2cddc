#!/usr/bin/env python3
"""train_gpt under mpirun against one process running the same micro-batches.

  check_data_parallel.py MPIEXEC "MPIEXEC_FLAGS" TRAIN_GPT SHARD_DIR OUT_DIR

Two ranks of one micro-batch each must reproduce one process of two micro-batches bit for bit:
the loss log (main.log) and every checkpoint's parameters and AdamW moments, on a plain run, an
SGT run whose guides are released mid-run, a growth event (LEMON, with its split noise) and SAT
with measured activation scores. A run of 2 ranks stopped half-way resumes on 1 process (and
the other way round) to the same end; a resume with another number of micro-batches per step is
refused. Four ranks agree with one process of four micro-batches to rounding. Every checkpoint
of a multi-rank run also checks that all ranks hold identical parameters and moments.
"""
import os
import shutil
import subprocess
import sys

mpiexec, mpiflags, train, data, out = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4], sys.argv[5]
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           ASAN_OPTIONS="detect_leaks=0")
common = ["--train", f"{data}/train_*.bin", "--val", f"{data}/val_*.bin", "--tokenizer", "byte",
          "--layers", "2", "--d-model", "32", "--heads", "2", "--seq-len", "32", "--batch", "2",
          "--steps", "6", "--warmup", "2", "--eval-every", "3", "--eval-batches", "2",
          "--ckpt-every", "1", "--keep-ckpts", "10", "--sample-tokens", "0", "--threads", "1",
          "--shuffle"]
structured = ["--ffn", "lowrank", "--rank", "8"]


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def run(name, ranks, flags, expect_ok=True):
    """Runs train_gpt on `ranks` processes (1: without mpiexec) into OUT/name; returns the output."""
    cmd = [train] + common + flags + ["--out", os.path.join(out, name)]
    if ranks > 1:
        cmd = [mpiexec, "-n", str(ranks)] + mpiflags + cmd
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    if expect_ok and p.returncode != 0:
        fail(f"{name}: {' '.join(cmd)} exited with {p.returncode}:\n{p.stdout}")
    if not expect_ok and p.returncode == 0:
        fail(f"{name}: {' '.join(cmd)} should have failed:\n{p.stdout}")
    return p.stdout


def read(path):
    with open(path, "rb") as f:
        return f.read()


def same_run(a, b, steps=range(1, 7)):
    """Byte-identical main.log and checkpoints (parameters, moments) of runs a and b."""
    for f in ["main.log"] + [f"ckpt_{s:08d}/{t}.safetensors" for s in steps for t in ("model", "optimizer")]:
        pa, pb = os.path.join(out, a, f), os.path.join(out, b, f)
        if read(pa) != read(pb):
            fail(f"{a} and {b} differ in {f}")


def losses(name):
    """The training losses of metrics.csv, by step."""
    lines = read(os.path.join(out, name, "metrics.csv")).decode().splitlines()
    head = lines[0].split(",")
    step, loss = head.index("step"), head.index("loss")
    return {int(c[step]): float(c[loss]) for c in (l.split(",") for l in lines[1:]) if c[loss]}


shutil.rmtree(out, ignore_errors=True)
cases = {
    "plain": structured,
    "sgt": structured + ["--sgt", "cosine", "--sgt-ratio", "0.5", "--sgt-reduce-flop"],
    "growth": structured + ["--structured-first-ffn", "--grow", "3:lemon:d=48,heads=3,layers=3,rank=12",
                            "--grow-state", "carry"],
    "sat": structured + ["--sat-rate", "0.5", "--sat-ladder", "3,5,2", "--sat-score", "activation"],
}
for name, flags in cases.items():
    run(f"{name}_1x2", 1, flags + ["--grad-accum", "2"])
    text = run(f"{name}_2x1", 2, flags + ["--grad-accum", "1"])
    if "data parallel: 2 ranks x 1 micro-batches" not in text:
        fail(f"{name}: the 2-rank run does not say it is data parallel:\n{text}")
    same_run(f"{name}_1x2", f"{name}_2x1")
    print(f"{name}: 2 ranks x 1 micro-batch == 1 process x 2 micro-batches, bit for bit")

# Resume across rank counts, the batch given in tokens (2 micro-batches of 2 x 32).
tokens = ["--total-batch-tokens", "128"] + structured
run("resume_2to1", 2, tokens + ["--stop-after", "3"])
run("resume_2to1", 1, tokens + ["--resume"])
run("resume_1to2", 1, tokens + ["--stop-after", "3"])
run("resume_1to2", 2, tokens + ["--resume"])
same_run("plain_1x2", "resume_2to1", steps=[6])
same_run("plain_1x2", "resume_1to2", steps=[6])
print("resume: 2 ranks -> 1 process and 1 process -> 2 ranks end where the straight run ends")
text = run("resume_2to1", 2, structured + ["--grad-accum", "2", "--resume"], expect_ok=False)
if "Keep their product" not in text:
    fail(f"a resume with 4 micro-batches per step instead of 2 was not refused with a sentence:\n{text}")

# Four ranks: the library's reduction order, so equal to rounding.
run("np4_1x4", 1, structured + ["--grad-accum", "4"])
run("np4_4x1", 4, structured + ["--grad-accum", "1"])
a, b = losses("np4_1x4"), losses("np4_4x1")
if a.keys() != b.keys() or not a:
    fail(f"4 ranks logged steps {sorted(b)}, 1 process {sorted(a)}")
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
if worst > 1e-5:
    fail(f"4 ranks and 1 process of 4 micro-batches differ by {worst:.2e} in the loss (tolerance 1e-5)")
print(f"4 ranks x 1 micro-batch ~ 1 process x 4 micro-batches: loss within {worst:.1e} relative")
