#!/usr/bin/env bash
# Data-parallel scaling on this machine: the small model (6 layers x d_model 384, 6 heads, T 256,
# B 4 per micro-batch) on the Brown corpus, the same global batch of 2 micro-batches run three
# ways on two cores:
#   1 process  x 1 thread,  2 micro-batches  (the baseline for the scaling)
#   2 ranks    x 1 thread,  1 micro-batch each (mpirun; one all-reduce of the gradient per step)
#   1 process  x 2 threads, 2 micro-batches  (the same cores used by OpenMP instead)
# with the GPT-2 tokenizer (VOCAB=gpt2: 30M parameters, most in the embedding, so the all-reduce
# is large) or bytes (VOCAB=byte: 11M). Prints tokens/s (median over the steps after the first
# two) and the all-reduce's share of the step. Needs train_gpt built with MPI.
#   bash scripts/mpi_scaling.sh [STEPS=12]
#   VOCAB=byte bash scripts/mpi_scaling.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps=${1:-12}
vocab=${VOCAB:-gpt2}
bash scripts/setup_brown.sh train_gpt
bin=build/cpu-release/examples
tokenizer=data/gpt2
[[ $vocab == byte ]] && tokenizer=byte
out=runs/mpi_scaling_$vocab
rm -rf "$out"
mkdir -p "$out"
common=(--train "data/brown/$vocab/train_*.bin" --val "data/brown/$vocab/val_*.bin"
        --tokenizer "$tokenizer" --layers 6 --d-model 384 --heads 6 --seq-len 256 --batch 4
        --steps "$steps" --warmup 2 --eval-every 0 --eval-batches 1 --sample-tokens 0)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

echo "== 1 process x 1 thread, 2 micro-batches"
"$bin/train_gpt" "${common[@]}" --threads 1 --grad-accum 2 --out "$out/1x1" > "$out/1x1.log"
echo "== 2 ranks x 1 thread, 1 micro-batch each"
mpirun -np 2 --bind-to core "$bin/train_gpt" "${common[@]}" --threads 1 --grad-accum 1 \
    --out "$out/2x1" > "$out/2x1.log"
echo "== 1 process x 2 threads, 2 micro-batches"
"$bin/train_gpt" "${common[@]}" --threads 2 --grad-accum 2 --out "$out/1x2" > "$out/1x2.log"

python3 - "$out" <<'PY'
import csv, statistics, sys, re
out = sys.argv[1]
def tps(run):
    rows = list(csv.DictReader(open(f"{out}/{run}/metrics.csv")))
    return statistics.median(float(r["tokens_per_s"]) for r in rows[2:] if r["tokens_per_s"])
def comm(run):
    m = re.search(r"all-reduce ([\d.]+) ms per step \(([\d.]+)% of the step\)", open(f"{out}/{run}.log").read())
    return f"{m.group(1)} ms ({m.group(2)}%)" if m else "-"
base = tps("1x1")
print(f"\n| run | tokens/s | vs 1 process x 1 thread | all-reduce per step |\n|---|---:|---:|---:|")
for run, name in [("1x1", "1 process x 1 thread"), ("2x1", "2 ranks x 1 thread (mpirun)"),
                  ("1x2", "1 process x 2 threads")]:
    t = tps(run)
    print(f"| {name} | {t:.0f} | {t / base:.2f}x | {comm(run)} |")
PY
