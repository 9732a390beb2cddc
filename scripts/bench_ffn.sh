#!/usr/bin/env bash
# Build the Release benchmarks and print the structured-FFN results as a Markdown table.
# Extra arguments go to the benchmark, e.g. scripts/bench_ffn.sh --benchmark_filter=d:768
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh
cmake --preset cpu-release -DBONSAI_BUILD_BENCHMARKS=ON
cmake --build --preset cpu-release --parallel "$(nproc)" --target bench_structured_ffn

./build/cpu-release/bench/bench_structured_ffn \
  --benchmark_out=build/bench_ffn.json --benchmark_out_format=json "$@"

# Debian's interpreter (the one deps.sh installs), not whatever python3 is first on PATH.
python=/usr/bin/python3
[[ -x "$python" ]] || python=python3
"$python" scripts/bench_table.py build/bench_ffn.json
