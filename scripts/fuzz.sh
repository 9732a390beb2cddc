#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan + UBSan) and runs each for SECONDS
# (default 60) from its seed corpus in fuzz/corpus/; new inputs go to runs/fuzz/<target>/, and a
# crashing input to runs/fuzz/<target>/crash-*. Memory is capped (2 GiB resident, 1 GiB per
# allocation), so a file that makes a reader ask for more is reported too. Prints a table last;
# exits non-zero if any target found something.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(fuzz_safetensors fuzz_token_shard fuzz_llmc
                                       fuzz_tokenizer_files fuzz_tokenizer_encode fuzz_flags)

[[ -f data/gpt2/encoder.json ]] || bash scripts/fetch_data.sh  # the real GPT-2 tokenizer
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --parallel "$(nproc)"

rows=() failed=0
for t in "${targets[@]}"; do
  work=runs/fuzz/$t
  mkdir -p "$work"
  echo "== $t: ${seconds} s"
  rc=0
  build/fuzz/fuzz/"$t" "$work" "fuzz/corpus/$t" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$work/" \
    > "$work/log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
  corpus=$(find "$work" -maxdepth 1 -type f ! -name log ! -name 'crash-*' ! -name 'oom-*' \
             ! -name 'timeout-*' ! -name 'leak-*' | wc -l)
  if [[ $rc -eq 0 ]]; then result=clean; else
    result="FOUND (exit $rc): $(ls "$work" | grep -E '^(crash|oom|timeout|leak)-' | head -1)"
    failed=1
    grep -E 'ERROR|SUMMARY|property violated|what\(\)' "$work/log" | head -5 || true
  fi
  rows+=("| $t | $seconds | ${runs:-?} | ${rate:-?} | $corpus | $result |")
done

echo
echo "| target | seconds | executions | per second | new corpus inputs | result |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $failed
