#!/usr/bin/env bash
# Shared by the demo and the experiments: install dependencies, fetch the Brown corpus and
# GPT-2's tokenizer, build the given example targets (default: prepare_data train_gpt
# generate) and tokenize the corpus into llm.c shards once: GPT-2 tokens under data/brown/gpt2,
# bytes under data/brown/byte.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh
bash scripts/fetch_data.sh
cmake --preset cpu-release
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(prepare_data train_gpt generate)
cmake --build --preset cpu-release --parallel "$(nproc)" --target prepare_data "${targets[@]}"

if [[ ! -f data/brown/gpt2/train_000000.bin ]]; then
  build/cpu-release/examples/prepare_data data/brown/brown.txt --tokenizer data/gpt2 \
    --documents blank-line -o data/brown/gpt2
fi
if [[ ! -f data/brown/byte/train_000000.bin ]]; then
  build/cpu-release/examples/prepare_data data/brown/brown.txt --tokenizer byte \
    --documents blank-line -o data/brown/byte
fi
