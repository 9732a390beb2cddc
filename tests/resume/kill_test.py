#!/usr/bin/env python3
"""Kill test: a training run killed with SIGKILL at random moments (during steps and during
checkpoint writes) and resumed each time must end with the same parameters, optimizer state and
logs, byte for byte, as the run that was never interrupted; and after every kill each directory
with a checkpoint's name must be a complete, readable checkpoint.

    kill_test.py TRAIN_GPT SHARD_DIR SCRATCH_DIR [KILLS] [SEED]
"""
import json
import os
import pathlib
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

train, data, scratch = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
kills = int(sys.argv[4]) if len(sys.argv) > 4 else 20
rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 1005)
steps = 40
args = [train, "--train", str(data / "train_*.bin"), "--val", str(data / "val_*.bin"),
        "--tokenizer", "byte", "--layers", "2", "--d-model", "32", "--heads", "2", "--seq-len", "32",
        "--batch", "2", "--grad-accum", "2", "--steps", str(steps), "--warmup", "2", "--eval-every", "4",
        "--eval-batches", "2", "--sample-tokens", "0", "--ffn", "lowrank", "--rank", "8", "--shuffle",
        "--ckpt-every", "1", "--keep-ckpts", "2", "--threads", "1"]
checkpoint_name = re.compile(r"ckpt_\d{8,}$")


def fail(message):
    sys.exit(f"kill test: {message}")


def check_safetensors(path):
    blob = path.read_bytes()
    if len(blob) < 8:
        fail(f"{path} has {len(blob)} bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    end = max([t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"], default=0)
    if 8 + n + end != len(blob):
        fail(f"{path}: the header covers {8 + n + end} bytes but the file has {len(blob)}")


def check_checkpoints(run):
    """Every entry with a checkpoint's name is a complete checkpoint."""
    for entry in run.iterdir() if run.exists() else []:
        if not checkpoint_name.match(entry.name):
            continue
        for f in ("DONE", "model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json"):
            if not (entry / f).is_file():
                fail(f"{entry} has no {f}: a half-written checkpoint is visible")
        check_safetensors(entry / "model.safetensors")
        check_safetensors(entry / "optimizer.safetensors")
        json.loads((entry / "trainer_state.json").read_text())
        json.loads((entry / "config.json").read_text())


def run_to_end(out, extra=()):
    r = subprocess.run(args + ["--out", str(out), *extra], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"train_gpt failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


shutil.rmtree(scratch, ignore_errors=True)
scratch.mkdir(parents=True)
straight, killed = scratch / "straight", scratch / "killed"
t0 = time.monotonic()
run_to_end(straight)
duration = time.monotonic() - t0

survived = during_save = finished = 0
while survived < kills:
    extra = ["--resume"] if killed.exists() else []
    p = subprocess.Popen(args + ["--out", str(killed), *extra], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        p.wait(timeout=rng.uniform(0.1, 1.0) * duration)
        if p.returncode != 0:
            fail(f"train_gpt failed ({p.returncode}): {p.stderr.read().decode()}")
        finished += 1  # it got to the end before the kill came: start again from nothing
        shutil.rmtree(killed)
        continue
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        survived += 1
    leftovers = [e.name for e in killed.iterdir() if ".tmp" in e.name or ".old." in e.name] \
        if killed.exists() else []
    during_save += bool(leftovers)
    check_checkpoints(killed)
run_to_end(killed, ["--resume"])
check_checkpoints(killed)

final = f"ckpt_{steps:08d}"
for f in (f"{final}/model.safetensors", f"{final}/optimizer.safetensors", "main.log", "metrics.csv"):
    a, b = (straight / f).read_bytes(), (killed / f).read_bytes()
    if f == "metrics.csv":  # timings differ; the rest must not
        strip = lambda text: [",".join(l.split(",")[:5] + l.split(",")[8:]) for l in text.decode().splitlines()]
        a, b = strip(a), strip(b)
    if a != b:
        fail(f"the killed-and-resumed run differs from the straight one in {f}")
left = sorted(e.name for e in killed.iterdir() if ".tmp" in e.name or ".old." in e.name)
if left:
    fail(f"leftovers of interrupted saves remain: {left}")
print(f"kill test: {survived} kills survived ({during_save} of them inside a checkpoint write or removal; "
      f"{finished} runs finished before their kill and started over); the final checkpoint and "
      f"logs equal the uninterrupted run's")
