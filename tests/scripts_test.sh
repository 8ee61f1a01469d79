#!/usr/bin/env bash
# The experiment scripts' argument handling: help, and bad arguments refused with exit 2 before
# anything runs (no world, no training). Usage: tests/scripts_test.sh SOURCE_DIR MFPO_BIN
set -uo pipefail
SRC=$1
export MFPO=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
expect() {  # expect CODE PATTERN -- command...
  local code=$1 pattern=$2
  shift 3
  local out
  out=$("$@" 2>&1)
  local got=$?
  if [ "$got" != "$code" ] || ! grep -q -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> exit $got (want $code), output:"; echo "$out" | head -5; fail=1
  else
    echo "ok: $*"
  fi
}
expect 0 "table4" -- bash "$SRC/scripts/experiment.sh" --help
expect 2 "first argument must be" -- bash "$SRC/scripts/experiment.sh" table9
expect 2 "unknown argument '--frobnicate'" -- bash "$SRC/scripts/experiment.sh" main --frobnicate
expect 2 "seeds must be non-negative integers" -- bash "$SRC/scripts/experiment.sh" main --seeds "1 x" --out "$TMP/a"
expect 2 "must be report or dev" -- bash "$SRC/scripts/experiment.sh" main --world test --out "$TMP/b"
expect 2 "no model in" -- bash "$SRC/scripts/experiment.sh" main --model "$TMP/none" --out "$TMP/c"
expect 2 "seed 1 is given twice" -- bash "$SRC/scripts/experiment.sh" main --seeds "1 2 1" --out "$TMP/f"
expect 2 "--seeds needs a list" -- bash "$SRC/scripts/experiment.sh" main --seeds "" --out "$TMP/g"
expect 2 "--out needs a directory" -- bash "$SRC/scripts/experiment.sh" main --out
expect 2 "threads needs a number" -- bash "$SRC/scripts/experiment.sh" main --threads two --out "$TMP/e"
expect 2 "--main needs a directory" -- bash "$SRC/scripts/experiment.sh" table4 --main
expect 0 "quick" -- bash "$SRC/scripts/run-default.sh" --help
expect 2 "unknown argument '--fast'" -- bash "$SRC/scripts/run-default.sh" --fast
# A world made with other settings in the output directory is refused, not silently reused.
mkdir -p "$TMP/d/world"
echo '{"colour_prior": 0.85, "cooccur_prior": 0.85, "max_objects": 3, "seed": 0, "size": 64, "test": 200, "train": 600, "val": 50}' > "$TMP/d/world/world.json"
expect 2 "was made with other settings" -- bash "$SRC/scripts/experiment.sh" main --out "$TMP/d"
# The same seed and split sizes but another image size: also another world.
"$MFPO" world --out "$TMP/h/world" --seed 11 --train 74 --val 0 --test 50 --size 32 >/dev/null
expect 2 "was made with other settings" -- bash "$SRC/scripts/experiment.sh" main --quick --out "$TMP/h"
# The GPU check on a machine without nvidia-smi says so instead of failing later.
if ! command -v nvidia-smi >/dev/null; then
  expect 2 "this is not a GPU machine" -- bash "$SRC/scripts/gpu-check.sh" "$TMP/gpu/out"
fi
[ ! -e "$TMP/a" ] && [ ! -e "$TMP/b" ] && [ ! -e "$TMP/e" ] && [ ! -e "$TMP/f" ] && [ ! -e "$TMP/g" ] || { echo "FAIL: a refused run created its output directory"; fail=1; }
exit $fail
