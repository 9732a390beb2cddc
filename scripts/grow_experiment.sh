#!/usr/bin/env bash
# Model growth in miniature, on the Brown corpus (GPT-2 tokenizer, T = 128, B = 8): the target
# model, 6 layers x d_model 256 (4 heads of 64, FFN 1024), trained from scratch for N steps
# (default 400), against runs that train a smaller model for the first quarter of the steps and
# grow it into the target with each growth preset:
#   width and depth, from 3 x 128 (2 heads):  net2net, fpi, aki, lemon, msg, ligo, mango
#   depth only, from 3 x 256 (4 heads):       stackbert, interpolate, mslt
# and two controls: small, the 3 x 128 model trained for all the steps without growing, and
# upcycle, the target trained from scratch whose FFNs become 8 experts (top 2, every other
# layer) at the same step. Every run has the same steps, learning-rate schedule and data order;
# growth carries the optimizer state of the old slice (--grow-state carry) and keeps the schedule
# (--grow-lr keep); MSG ramps its masks and MSLT trains only the new layers for an eighth of the
# steps (50 of 400); LiGO's and Mango's operators train for a sixteenth (25 of 400; the papers'
# 100 steps are a tiny part of much longer runs).
# Writes runs/grow/results.md (val loss, FLOPs, and the FLOPs each run needed to reach the
# from-scratch run's final val loss) and runs/grow/loss.png (val loss against training FLOPs);
# with N other than 400 the directory is runs/grow-N. METHODS picks the grown runs (all by
# default), THREADS the OpenMP threads of each run (0: all cores).
#   bash scripts/grow_experiment.sh [N]
#   METHODS="lemon msg" THREADS=1 bash scripts/grow_experiment.sh 1200
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps=${1:-400}
at=$((steps / 4))
methods=(${METHODS:-net2net fpi aki lemon msg ligo mango stackbert interpolate mslt small upcycle})

bash scripts/setup_brown.sh train_gpt
bin=build/cpu-release/examples
out=runs/grow
[[ $steps == 400 ]] || out=runs/grow-$steps
mkdir -p "$out"
common=(--train "data/brown/gpt2/train_*.bin" --val "data/brown/gpt2/val_*.bin" --tokenizer data/gpt2
        --seq-len 128 --batch 8 --steps "$steps" --warmup 20 --lr 1.5e-3 --ffn dense
        --shuffle --sample-tokens 0 --keep-ckpts 1 --ckpt-every $((steps / 8)) --eval-every $((steps / 16)) --eval-batches 16 --threads "${THREADS:-0}")
target=d=256,heads=4,layers=6
growth=(--grow-state carry --grow-lr keep --msg-steps $((steps / 8)) --mslt-steps $((steps / 8)))

# A finished run is kept; a stopped one resumes from its last checkpoint, so the script can be
# run again after an interruption and only does what is left.
run() {
  local name=$1; shift
  local resume=()
  if grep -qs '^validation loss' "$out/$name.log"; then echo "== $name (done)"; return; fi
  if compgen -G "$out/$name/ckpt_*[0-9]" > /dev/null; then resume=(--resume); else rm -rf "${out:?}/$name"; fi
  echo "== $name ${resume[*]}"
  "$bin/train_gpt" "${common[@]}" --out "$out/$name" "${resume[@]}" "$@" | tee -a "$out/$name.log" |
    grep -v '^step *[0-9]*/'
}
run scratch --layers 6 --d-model 256 --heads 4
for m in "${methods[@]}"; do
  case $m in
    stackbert|interpolate|mslt)
      run "$m" --layers 3 --d-model 256 --heads 4 --grow "$at:$m:layers=6" "${growth[@]}" ;;
    ligo|mango)
      run "$m" --layers 3 --d-model 128 --heads 2 \
        --grow "$at:$m:$target,ffn=1024,steps=$((steps / 16))" "${growth[@]}" ;;
    small) run small --layers 3 --d-model 128 --heads 2 ;;
    upcycle)
      run upcycle --layers 6 --d-model 256 --heads 4 --grow "$at:upcycle:experts=8,top_k=2" "${growth[@]}" ;;
    *) run "$m" --layers 3 --d-model 128 --heads 2 --grow "$at:$m:$target,ffn=1024" "${growth[@]}" ;;
  esac
done

names=(scratch "${methods[@]}")
python3 scripts/run_table.py --reach "$out/scratch" "${names[@]/#/$out/}" | tee "$out/results.md"
range="ymin=6.8; ymax=8.4;"  # the 400-step runs; longer ones go lower
[[ $steps == 400 ]] || range="ymin=6.4; ymax=8.4;"
gnuplot -e "runs='${names[*]/#/$out/}'; labels='${names[*]}'; out='$out/loss.png'; xcol='train_flops'; val_only=1; $range title='Brown, growth into 6x256 ($steps steps): validation loss against training FLOPs'" \
  scripts/plot_loss.gp
echo "table: $out/results.md, plot: $out/loss.png"
