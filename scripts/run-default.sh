#!/usr/bin/env bash
# Command 1: installs what is missing, builds, and runs the main job on the embedded default
# through the job service, as a cluster would run it.
#
# From the shipped SFT baseline (common/data/sft-baseline: the tiny LLaVA trained on the scene
# world by scripts/sft-baseline.sh), on a scene world that no tuning ever saw (seed 11):
#   a local cluster on loopback (scripts/local-cluster.sh: mfpo-coordinator, 2 trainer agents,
#   1 datagen agent, Prometheus scraping them when Debian's prometheus is installed)
#   -> DPO, mDPO and MFPO jobs submitted with mfpoctl and watched live (the coordinator runs the
#   MFPO job's datagen: keywords -> regions -> diffusion noise, then for each job the reference
#   pass, entropy difficulty, easy / medium / hard phases and the evaluation)
#   -> the SFT model's own evaluation -> mfpo report: the table with 95% bootstrap intervals,
#   paired differences, report.md / report.json and PNG plots in OUT/report.
# Every process of the cluster is stopped at the end, also on failure or Ctrl-C.
#
#   bash scripts/run-default.sh [--quick] [--seed N] [--no-build] [--out DIR] [--port P]
#                               [--prometheus-port P] [--build DIR] [--offline]
#
# About 11 minutes on 2 cores after the build; --quick (fewer pairs and test images) about 3.
# OUT defaults to out/default (out/default-quick). An interrupted run continues where it stopped
# (the coordinator resumes its jobs from OUT/cluster/jobs.db); `rm -rf OUT` starts afresh.
# --port is the coordinator's (default 7070), --prometheus-port Prometheus's (default 9090, or a
# free port when taken); --build the build directory (default build). --offline runs the same
# jobs without the service (scripts/experiment.sh main --threads 1: one process per stage) and
# gives the same numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
QUICK=0 BUILD=1 SEEDS=1 OUT= PORT=7070 PROMETHEUS_PORT=9090 OFFLINE=0 BIN=build
COMMAND_LINE="bash scripts/run-default.sh $*"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --seed) SEEDS=${2:-}; shift
      case $SEEDS in ''|*[!0-9]*) echo "run-default.sh: --seed needs a number" >&2; exit 2 ;; esac ;;
    --out) OUT=${2:-}; shift; [ -n "$OUT" ] || { echo "run-default.sh: --out needs a directory" >&2; exit 2; } ;;
    --port) PORT=${2:-}; shift
      case $PORT in ''|*[!0-9]*) echo "run-default.sh: --port needs a number" >&2; exit 2 ;; esac ;;
    --prometheus-port) PROMETHEUS_PORT=${2:-}; shift
      case $PROMETHEUS_PORT in ''|*[!0-9]*) echo "run-default.sh: --prometheus-port needs a number" >&2; exit 2 ;; esac ;;
    --offline) OFFLINE=1 ;;
    --build) BIN=${2:-}; shift; [ -n "$BIN" ] || { echo "run-default.sh: --build needs a directory" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run-default.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-out/default$(if [ "$QUICK" = 1 ]; then echo -quick; fi)}
for p in "$PORT" "$PROMETHEUS_PORT"; do
  [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || { echo "run-default.sh: port $p is not in [1, 65535]" >&2; exit 2; }
done
if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then echo "run-default.sh: --out $OUT exists and is not a directory" >&2; exit 2; fi
if ! mkdir -p "$OUT" 2>/dev/null || [ ! -w "$OUT" ]; then echo "run-default.sh: cannot write to --out $OUT" >&2; exit 2; fi
if [ "$BUILD" = 1 ]; then bash scripts/build.sh; fi
export MFPO=$BIN/cli/mfpo MFPOCTL=$BIN/cli/mfpoctl
if [ "$OFFLINE" = 1 ]; then
  exec bash scripts/experiment.sh main --seeds "$SEEDS" --out "$OUT" --threads 1 $([ "$QUICK" = 1 ] && echo --quick)
fi

source scripts/lib/experiment.sh
for b in "$MFPO" "$MFPOCTL"; do
  [ -x "$b" ] || { echo "run-default.sh: $b is missing: run scripts/build.sh first" >&2; exit 2; }
done
WORLD_KIND=report WORLD_SEED=$REPORT_WORLD_SEED
# One CPU thread per trainer agent and for the SFT evaluation: with 2 trainers the 2 cores are
# shared as `experiment.sh main --threads 1` shares them, so both give the same numbers.
MFPO_ARGS=(--threads 1)
run_defaults
TRAIN_IMAGES=$(train_images)
OUT=$(cd "$OUT" && pwd)  # the service takes absolute paths
T0=$(date +%s)
make_world "$OUT/world"

CLUSTER=$OUT/cluster
SERVER=127.0.0.1:$PORT
ctl() { "$MFPOCTL" --server "$SERVER" "$@"; }
SFT_PID= WATCHDOG_PID= STARTED=0
cleanup() {
  local code=$?
  for p in $SFT_PID $WATCHDOG_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  # Only a cluster this run started is stopped (a refused start leaves another run's alone).
  if [ "$STARTED" = 1 ]; then bash scripts/local-cluster.sh stop --dir "$CLUSTER" --build "$BIN" >/dev/null || true; fi
  if [ "$code" != 0 ] && [ "$STARTED" = 1 ]; then
    echo "run-default.sh: stopped (exit $code); every process of the cluster is stopped; logs in $CLUSTER." \
      "Run the same command again to continue where it stopped." >&2
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stage "local cluster: coordinator on $SERVER, 2 trainer agents, 1 datagen agent (logs in $CLUSTER)"
bash scripts/local-cluster.sh start --dir "$CLUSTER" --port "$PORT" --trainers 2 --datagen 1 --threads 1 \
  --roots "$(pwd),$OUT" --build "$BIN" --prometheus "$PROMETHEUS_PORT"
STARTED=1
# Nothing restarts a process of the local cluster that dies (on Kubernetes its controller would):
# say so at once instead of letting the jobs wait silently.
watchdog() {
  local p names=()
  for p in $(cat "$CLUSTER/pids"); do
    names+=("$p:$({ tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null | sed -E 's/.*--name ([^ ]+).*/\1/; s/^([^ ]*\/)?(mfpo-coordinator|prometheus) .*/\2/')")
  done
  local reported=" "
  while sleep 2; do
    for entry in "${names[@]}"; do
      p=${entry%%:*}
      if ! kill -0 "$p" 2>/dev/null && [ "${reported/ $p /}" = "$reported" ]; then
        reported+="$p "
        echo "run-default.sh: ${entry#*:} (pid $p) of the local cluster exited (logs in $CLUSTER); its jobs wait" \
          "for a replacement: press Ctrl-C and run the same command again to restart the cluster and continue" >&2
      fi
    done
  done
}
watchdog &
WATCHDOG_PID=$!

# job_id NAME: the id of the job of that name the coordinator has and that did not fail or get
# cancelled (a rerun watches it instead of submitting again), or nothing.
job_id() {
  ctl list --json --limit 1000 | /usr/bin/python3 -c '
import json, sys
jobs = json.loads(sys.stdin.read() or "{}").get("jobs", [])
live = [j["id"] for j in jobs if j.get("name") == sys.argv[1] and j.get("state") not in ("FAILED", "CANCELLED")]
print(live[-1] if live else "")' "$1"
}

# submit LABEL NAME PRIORITY [VAR=VALUE...]: writes OUT/NAME.yaml and submits it (or finds the
# job a previous run submitted); prints the job id.
IDS=()
submit() {
  local label=$1 name=$2 priority=$3
  shift 3
  local dir=$OUT/$name-s$SEEDS
  ( run_defaults
    SEED=$SEEDS
    for kv in "$@"; do eval "$kv"; done
    preference_spec "default-$name-s$SEEDS" "$dir" "$OUT/world/train.jsonl" "$OUT/world" "$(pwd)/$SFT_BASELINE"
    # MFPO's rejected images: the coordinator leases the records to the datagen agent first.
    if [ "$VARIANT" = mfpo ]; then echo "datagen: {grounder: regions, vocabulary: $OUT/world/vocab.txt}"; fi
    echo "resources: {workers: 1}" ) > "$dir.yaml"
  local id; id=$(job_id "default-$name-s$SEEDS")
  if [ -n "$id" ]; then
    echo "== $label: $id (submitted by an earlier run)"
  else
    id=$(ctl submit "$dir.yaml" --priority "$priority")
    echo "== $label: mfpoctl submit $dir.yaml -> $id"
  fi
  IDS+=("$id")
}
stage "jobs: DPO, mDPO and MFPO from $SFT_BASELINE, training seed $SEEDS, $MAX_SAMPLES pairs"
# MFPO first: its datagen runs on the datagen agent while DPO and mDPO train.
submit "+ MFPO" mfpo 1 VARIANT=mfpo
submit "+ DPO" dpo 0 VARIANT=dpo
submit "+ mDPO" mdpo 0 VARIANT=mdpo
# The report's rows in the result's order.
RUNS=("SFT@$SEEDS=$OUT/sft-eval" "+ DPO@$SEEDS=$OUT/dpo-s$SEEDS" "+ mDPO@$SEEDS=$OUT/mdpo-s$SEEDS" "+ MFPO@$SEEDS=$OUT/mfpo-s$SEEDS")

# The SFT row (no training) runs beside the jobs, one thread, as experiment.sh runs it.
sft_eval "$OUT/world" "$OUT/sft-eval" > "$OUT/sft-eval.log" 2>&1 &
SFT_PID=$!
stage "mfpoctl watch ${IDS[*]} (Prometheus: http://127.0.0.1:$(cat "$CLUSTER/prometheus-port" 2>/dev/null || echo '-'))"
if ! ctl watch "${IDS[@]}"; then
  for id in "${IDS[@]}"; do
    state=$(ctl get "$id" --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin).get("state", "?"))' || echo "?")
    if [ "$state" != SUCCEEDED ]; then echo "run-default.sh: $id did not succeed:" >&2; ctl get "$id" >&2 || true; fi
  done
  echo "run-default.sh: run the same command again to resubmit the jobs that failed (finished ones are kept)" >&2
  exit 1
fi
stage "the SFT baseline's evaluation (log: $OUT/sft-eval.log)"
if ! wait "$SFT_PID"; then SFT_PID=; echo "run-default.sh: the SFT evaluation failed:" >&2; tail -5 "$OUT/sft-eval.log" >&2; exit 1; fi
SFT_PID=
tail -1 "$OUT/sft-eval.log"

stage "the report"
NOTES_EXTRA="- Run through the job service: a local cluster of mfpo-coordinator, 2 trainer agents (one thread
  each, one job per agent) and 1 datagen agent; jobs submitted with mfpoctl (specs: $OUT/*.yaml).
  \`bash scripts/run-default.sh --offline\` runs the same jobs without the service."
write_report "$COMMAND_LINE" \
  "MFPO on the scene world" "$(IFS=,; echo "${RUNS[*]}")" "+ MFPO" \
  --claim_against "SFT,+ DPO" --claim_gap_over "+ DPO"
echo
echo "done in $(( $(date +%s) - T0 )) s: $OUT/report/report.md"
