#!/usr/bin/env bash
# Install dependencies, build the cpu-release preset and run the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh
bash scripts/fetch_data.sh  # GPT-2 tokenizer files for the tokenizer tests
cmake --preset cpu-release
cmake --build --preset cpu-release --parallel "$(nproc)"
ctest --preset cpu-release --output-on-failure -j2
