#!/usr/bin/env bash
# Runs every benchmark of the project (build/bench/, see bench/README.md) and prints one table of
# the ratios each measures against its baseline (measured in the same run) and its target.
# Needs the build (scripts/build.sh). About 10 minutes on 2 cores (the load benchmark writes a
# 1 GiB checkpoint to /tmp/mfpo_bench_ckpt on first use). Full logs: OUT_DIR (default out/bench).
#
#   bash scripts/bench-all.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/bench}
B=build/bench
mkdir -p "$OUT"
for exe in mfpo_bench_load mfpo_bench_step mfpo_bench_train_step mfpo_bench_datagen mfpo_bench_data_parallel \
    mfpo_bench_coordinator mfpo_bench_lora; do
  [ -x "$B/$exe" ] || { echo "bench-all.sh: $B/$exe is missing: run scripts/build.sh first" >&2; exit 2; }
done
run() {
  local name=$1
  shift
  echo "== $name: $*"
  if ! "$@" > "$OUT/$name.log" 2>&1; then
    echo "bench-all.sh: $name failed; see $OUT/$name.log" >&2
    tail -5 "$OUT/$name.log" >&2
    exit 1
  fi
  grep -v '^RESULT' "$OUT/$name.log" | sed 's/^/   /'
}
run load "$B/mfpo_bench_load"
run step "$B/mfpo_bench_step"
run train_step_tiny "$B/mfpo_bench_train_step" tiny
run train_step_medium "$B/mfpo_bench_train_step" medium
run datagen "$B/mfpo_bench_datagen"
run data_parallel "$B/mfpo_bench_data_parallel"
run coordinator "$B/mfpo_bench_coordinator"
run lora "$B/mfpo_bench_lora" medium
echo
{
  printf '| benchmark | measured | ratio | baseline (same run) | target |\n|---|---|---|---|---|\n'
  cat "$OUT"/*.log | grep '^RESULT' | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6 }'
} | tee "$OUT/table.md"
echo "(table also in $OUT/table.md)"
