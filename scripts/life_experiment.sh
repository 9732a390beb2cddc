#!/usr/bin/env bash
# One model's life in one run, on the Brown corpus in bytes (vocabulary 256, so the blocks are
# nearly all of the work): a 4 x 192 model (3 heads, LowRank FFNs of rank 48, 32% of the dense
# FFN's parameters) trained with self-guided training (its dense guides blended away over the
# first 20% of the steps), grown at step 0.3 N by LEMON (function-preserving) into 6 x 256
# (4 heads, FFN 1024, rank 64), then continued with sparsity-accelerated training from 0.35 N
# (half of every layer's heads and FFN channels omitted, then down the ladder to dense at 0.94 N).
# Against it, in the same script, with the same data order and T = 128, B = 8:
#   dense       the 6 x 256 dense model from scratch for the same N steps (the reference);
#   dense-flops the same model for the training FLOPs the life took (fewer steps, its own
#               schedule over them);
#   lowrank     the 6 x 256 LowRank model from scratch for N steps (structure alone).
# Writes runs/life/results.md (training FLOPs, wall time, tokens/s, final validation loss, and
# the FLOPs each run needed to reach the dense run's final loss) and runs/life/loss.png
# (validation loss against training FLOPs); with N other than 2000 the directory is
# runs/life-N. THREADS: the OpenMP threads of each run (0: all cores).
#   bash scripts/life_experiment.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps=${1:-2000}

bash scripts/setup_brown.sh train_gpt
bin=build/cpu-release/examples
out=runs/life
[[ $steps == 2000 ]] || out=runs/life-$steps
mkdir -p "$out"
common=(--train "data/brown/byte/train_*.bin" --val "data/brown/byte/val_*.bin" --tokenizer byte
        --seq-len 128 --batch 8 --warmup 40 --lr 2e-3 --shuffle --sample-tokens 0 --keep-ckpts 1
        --eval-batches 16 --structured-first-ffn --threads "${THREADS:-0}")
final=(--layers 6 --d-model 256 --heads 4)

# A finished run is kept; a stopped one resumes from its last checkpoint.
run() {
  local name=$1 n=$2; shift 2
  local resume=()
  if grep -qs '^validation loss' "$out/$name.log"; then echo "== $name (done)"; return; fi
  if compgen -G "$out/$name/ckpt_*[0-9]" > /dev/null; then resume=(--resume); else rm -rf "${out:?}/$name"; fi
  echo "== $name ${resume[*]}"
  "$bin/train_gpt" "${common[@]}" --steps "$n" --ckpt-every $((n / 8)) --eval-every $((n / 20)) \
    --out "$out/$name" "${resume[@]}" "$@" | tee -a "$out/$name.log" | grep -v '^step *[0-9]*/'
}

run life "$steps" --layers 4 --d-model 192 --heads 3 --ffn lowrank --ffn-params 0.32 \
  --sgt cosine --sgt-ratio 0.2 \
  --grow "$((steps * 3 / 10)):lemon:d=256,heads=4,ffn=1024,layers=6,rank=64" --grow-state carry \
  --sat-rate 0.5 --sat-start $((steps * 35 / 100))
run dense "$steps" "${final[@]}" --ffn dense
# The dense model's steps for the life's training FLOPs (its FLOPs per step from its first line).
life_flops=$(awk -F, 'NR > 1 && $10 != "" { f = $10 } END { print f }' "$out/life/metrics.csv")
dense_step=$(awk -F, 'NR > 1 && $2 != "" { print $10; exit }' "$out/dense/metrics.csv")
flops_steps=$(python3 -c "print(int(round($life_flops / $dense_step)))")
run dense-flops "$flops_steps" "${final[@]}" --ffn dense
run lowrank "$steps" "${final[@]}" --ffn lowrank --ffn-params 0.32

names=(dense life dense-flops lowrank)
python3 scripts/run_table.py --reach "$out/dense" "${names[@]/#/$out/}" | tee "$out/results.md"
gnuplot -e "runs='${names[*]/#/$out/}'; labels='${names[*]}'; out='$out/loss.png'; xcol='train_flops'; val_only=1; title='Brown in bytes, one life (SGT, growth into 6x256, SAT) against dense from scratch: validation loss against training FLOPs'" \
  scripts/plot_loss.gp
echo "table: $out/results.md, plot: $out/loss.png"
