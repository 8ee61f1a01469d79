#!/usr/bin/env bash
# Builds the libFuzzer targets (`cmake --preset fuzz`: clang, ASan + UBSan, coverage; build-fuzz/)
# and runs each for SECONDS_PER_TARGET (default 60) over a working corpus in
# build-fuzz/fuzz-work/<target>/corpus, seeded from tests/fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (targets: fuzz_safetensors_header,
#                                                         fuzz_preference_record, fuzz_job_spec,
#                                                         fuzz_image; default all four)
#   MFPO_FUZZ_KEEP_GOING=1 scripts/fuzz.sh ...  keeps fuzzing after a crash (libFuzzer -fork=1
#                                               -ignore_crashes ...), collecting every artifact.
#
# Inputs that crash, hang (-timeout=10) or exhaust memory (-rss_limit_mb=4096) are copied into
# tests/fuzz/corpus/<target>/ (crash-*, timeout-*, oom-*, leak-* as libFuzzer names them; rename
# them crash-<short description> when triaged), where the normal test suite replays them
# (ctest -R fuzz_replay). Exit status: 0 when no target found anything, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(fuzz_safetensors_header fuzz_preference_record fuzz_job_spec fuzz_image)
seconds="${1:-60}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then targets=("${ALL_TARGETS[@]}"); fi
for t in "${targets[@]}"; do
  if [[ ! " ${ALL_TARGETS[*]} " =~ " $t " ]]; then
    echo "fuzz.sh: unknown target '$t' (one of: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
done

jobs="$(nproc)"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -- -j"$jobs"  # the preset builds the fuzz targets only

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one LibTorch thread: stable exec/s on small machines
export OPENCV_LOG_LEVEL="${OPENCV_LOG_LEVEL:-SILENT}"  # the decoders' complaints about broken files

is_artifact() { [[ "$(basename "$1")" =~ ^(crash|timeout|oom|leak)- ]]; }

# What went wrong with input $2, reproduced: the sanitizer's or libFuzzer's verdict (numbers
# dropped) and the first two frames in this repository's sources.
signature() {
  local out kind frames
  out=$("$1" -rss_limit_mb=4096 -timeout=10 "$2" 2>&1 || true)
  kind=$(grep -aoE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [a-z-]+( [a-z-]+)?|runtime error: [^0-9]*|json\.exception\.[a-z_.]+' <<<"$out" | head -1 || true)
  frames=$(grep -aE '^ +#[0-9]+ 0x[0-9a-f]+ in ' <<<"$out" |
           grep -aE " $PWD/(common|datagen|worker|coordinator|proto)/" |
           sed -E 's/\(anonymous namespace\)/(anon)/g; s/^ +#[0-9]+ 0x[0-9a-f]+ in ([^(]*(\(anon\)[^(]*)?).* [^ ]*\/([^/: ]+:[0-9]+)(:[0-9]+)?$/\1 (\3)/' |
           head -2 | paste -sd' ' - || true)
  echo "${kind:-no failure on rerun (flaky: slow or memory-bound)} at ${frames:-?}"
}

found_total=0
summary=()
for t in "${targets[@]}"; do
  bin="build-fuzz/tests/fuzz/$t"
  seeds="tests/fuzz/corpus/$t"
  work="build-fuzz/fuzz-work/$t"
  mkdir -p "$work/corpus" "$work/artifacts" "$seeds"
  rm -f "$work/artifacts/"*

  # Seed the working corpus. Known crash inputs join it only once they no longer crash (a
  # crashing input in the initial corpus would end the run before it starts).
  still_crashing=()
  declare -A kept=()  # failure signature -> the corpus input showing it
  for f in "$seeds"/*; do
    [[ -f "$f" ]] || continue
    if is_artifact "$f"; then
      if "$bin" -rss_limit_mb=4096 -timeout=10 "$f" >/dev/null 2>&1; then
        cp "$f" "$work/corpus/"
      else
        still_crashing+=("$(basename "$f")")
        kept[$(signature "$bin" "$f")]="$(basename "$f")"
      fi
    else
      cp "$f" "$work/corpus/"
    fi
  done
  corpus_before=$(find "$work/corpus" -type f | wc -l)

  flags=(-max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1
         -artifact_prefix="$work/artifacts/")
  if [[ "${MFPO_FUZZ_KEEP_GOING:-0}" == 1 ]]; then
    flags+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  echo "== $t: ${seconds}s (log: $work/log)"
  start=$(date +%s)
  set +e
  "$bin" "${flags[@]}" "$work/corpus" >"$work/log" 2>&1
  rc=$?
  set -e
  elapsed=$(( $(date +%s) - start ))

  # Executions and coverage from libFuzzer's status lines ("#N ... cov: C" / "#N: cov: C").
  execs=$(grep -aoE '^stat::number_of_executed_units: *[0-9]+' "$work/log" | grep -oE '[0-9]+$' | tail -1 || true)
  if [[ -z "$execs" ]]; then
    execs=$(grep -aoE '^#[0-9]+' "$work/log" | tr -d '#' | sort -n | tail -1 || true)
  fi
  cov_start=$(grep -aE '^#[0-9]+:?[[:space:]]+(INITED|cov:)' "$work/log" | grep -aoE 'cov: [0-9]+' | head -1 | grep -oE '[0-9]+' || true)
  cov_end=$(grep -aoE 'cov: [0-9]+' "$work/log" | tail -1 | grep -oE '[0-9]+' || true)
  new_units=$(( $(find "$work/corpus" -type f | wc -l) - corpus_before ))
  new_cov=$(( ${cov_end:-0} - ${cov_start:-0} ))

  # One artifact per distinct failure (the smallest input), none for a failure that a corpus
  # input already shows: -fork mode in particular finds the same bug again and again.
  artifacts=()
  known_hits=0
  while IFS= read -r f; do
    [[ -n "$f" ]] || continue
    sig=$(signature "$bin" "$f")
    if [[ -n "${kept[$sig]:-}" ]]; then
      [[ "${kept[$sig]}" == new ]] || known_hits=$(( known_hits + 1 ))
      continue
    fi
    kept[$sig]=new
    artifacts+=("$(basename "$f")")
    cp -n "$f" "$seeds/"
    echo "   $(basename "$f"): $sig"
  done < <(for f in "$work/artifacts/"*; do
             [[ -f "$f" ]] && is_artifact "$f" && printf '%s %s\n' "$(stat -c %s "$f")" "$f"
           done | sort -n | cut -d' ' -f2-)
  unset kept
  found_total=$(( found_total + ${#artifacts[@]} ))
  line="$t: ${elapsed}s, ${execs:-?} executions, coverage ${cov_start:-?} -> ${cov_end:-?} (+${new_cov} edges, ${new_units} new inputs), exit ${rc}, ${#artifacts[@]} new artifact(s)"
  if [[ ${#artifacts[@]} -gt 0 ]]; then line+=": ${artifacts[*]} (copied to $seeds/)"; fi
  if [[ $known_hits -gt 0 ]]; then
    line+="; $known_hits more input(s) failing like a known corpus input"
    found_total=$(( found_total + known_hits ))
  fi
  if [[ $rc -ne 0 && ${#artifacts[@]} -eq 0 && $known_hits -eq 0 ]]; then
    line+=" -- libFuzzer failed without an artifact, see $work/log"
    found_total=$(( found_total + 1 ))
  fi
  if [[ ${#still_crashing[@]} -gt 0 ]]; then
    line+="; corpus inputs still failing: ${still_crashing[*]}"
    found_total=$(( found_total + ${#still_crashing[@]} ))
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [[ $found_total -gt 0 ]]; then
  echo "fuzz.sh: artifacts found; reproduce with build-fuzz/tests/fuzz/<target> FILE, and the normal suite replays them (ctest -R fuzz_replay)" >&2
  exit 1
fi
