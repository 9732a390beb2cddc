#!/usr/bin/env bash
# The main demo: fetch the Brown corpus and GPT-2's tokenizer, build the examples, tokenize the
# corpus, and train a GPT on its bytes for a few minutes on the CPU: 6 layers x d_model 256 with
# LowRank FFNs (32% of the dense FFN's parameters) trained self-guided (dense guides blended
# away over the first fifth of the steps). It prints the validation loss falling from ln 256 =
# 5.5 nats per byte to about 2, a sample (mostly English words after 1800 steps of 1024 bytes),
# and draws the loss curve to runs/demo/loss.png. Extra arguments go to train_gpt (e.g. --steps
# 200).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup_brown.sh
bin=build/cpu-release/examples

rm -rf runs/demo
"$bin/train_gpt" --train "data/brown/byte/train_*.bin" --val "data/brown/byte/val_*.bin" \
  --tokenizer byte --layers 6 --d-model 256 --heads 4 --seq-len 128 --batch 8 \
  --ffn lowrank --ffn-params 0.32 --sgt cosine --sgt-ratio 0.2 \
  --steps 1800 --warmup 40 --lr 3e-3 --eval-every 200 --eval-batches 8 --ckpt-every 200 \
  --sample-tokens 200 --temperature 0.5 --prompt "The jury said" --out runs/demo "$@"

gnuplot -e "runs='runs/demo'; out='runs/demo/loss.png'" scripts/plot_loss.gp
echo "loss curve: runs/demo/loss.png; more samples: $bin/generate --ckpt runs/demo --tokenizer byte --prompt \"...\""
