#!/usr/bin/env bash
# A job-service cluster on this machine, on loopback: mfpo-coordinator, N trainer agents
# (mfpo-worker) and M datagen agents (mfpo-datagen --coordinator). Needs the build
# (scripts/build.sh).
#
#   bash scripts/local-cluster.sh start [--dir DIR] [--port 7070] [--trainers 2] [--datagen 1]
#                                       [--threads N] [--roots DIR[,DIR]] [--token-file F]
#   bash scripts/local-cluster.sh stop   [--dir DIR]
#   bash scripts/local-cluster.sh status [--dir DIR]
#   bash scripts/local-cluster.sh run [start flags] -- COMMAND [ARGS...]
#        starts the cluster, runs COMMAND (e.g. build/cli/mfpoctl submit job.yaml --watch), and
#        stops every process afterwards, also when COMMAND fails or on Ctrl-C.
#
# DIR (default out/cluster) holds the database (jobs.db), the logs (*.log) and the pids. --threads
# is each agent's CPU threads (default: the cores shared among the trainers). --roots are the
# directories job specs may name (default: this repository). Then: build/cli/mfpoctl --server
# 127.0.0.1:PORT list | submit | watch | workers.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
usage() { sed -n 2,20p "$0" | sed 's/^# \{0,1\}//'; }
ACTION=${1:-}
case $ACTION in
  start|stop|status|run) shift ;;
  -h|--help) usage; exit 0 ;;
  *) echo "local-cluster.sh: first argument must be start, stop, status or run" >&2; usage >&2; exit 2 ;;
esac
DIR=out/cluster PORT=7070 TRAINERS=2 DATAGEN=1 THREADS= ROOTS=$REPO TOKEN_FILE=
COMMAND=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=${2:?--dir needs a directory}; shift ;;
    --port) PORT=${2:?--port needs a number}; shift ;;
    --trainers) TRAINERS=${2:?--trainers needs a number}; shift ;;
    --datagen) DATAGEN=${2:?--datagen needs a number}; shift ;;
    --threads) THREADS=${2:?--threads needs a number}; shift ;;
    --roots) ROOTS=${2:?--roots needs directories}; shift ;;
    --token-file) TOKEN_FILE=${2:?--token-file needs a file}; shift ;;
    --) shift; COMMAND=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "local-cluster.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for n in "$PORT" "$TRAINERS" "$DATAGEN" ${THREADS:+"$THREADS"}; do
  case $n in ''|*[!0-9]*) echo "local-cluster.sh: '$n' is not a number" >&2; exit 2 ;; esac
done
BIN=build
PIDS=$DIR/pids

stop_cluster() {
  [ -f "$PIDS" ] || return 0
  local pids; pids=$(cat "$PIDS")
  # Agents first (their stages stop with them), then the coordinator.
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for p in $pids; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in $pids; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$PIDS"
  echo "local-cluster: stopped"
}

start_cluster() {
  for b in coordinator/mfpo-coordinator worker/mfpo-worker datagen/mfpo-datagen cli/mfpoctl; do
    [ -x "$BIN/$b" ] || { echo "local-cluster.sh: $BIN/$b is missing: run scripts/build.sh first" >&2; exit 2; }
  done
  mkdir -p "$DIR"
  if [ -f "$PIDS" ]; then
    for p in $(cat "$PIDS"); do
      if kill -0 "$p" 2>/dev/null; then echo "local-cluster.sh: a cluster already runs from $DIR (stop it first)" >&2; exit 2; fi
    done
    rm -f "$PIDS"
  fi
  local cores; cores=$(nproc)
  local threads=${THREADS:-$(( cores / (TRAINERS > 0 ? TRAINERS : 1) ))}
  [ "$threads" -ge 1 ] || threads=1
  local token=()
  [ -n "$TOKEN_FILE" ] && token=(--token_file "$TOKEN_FILE")
  rm -f "$DIR/port"
  setsid "$BIN/coordinator/mfpo-coordinator" --address "127.0.0.1:$PORT" --database "$DIR/jobs.db" --roots "$ROOTS" \
    --port_file "$DIR/port" "${token[@]}" > "$DIR/coordinator.log" 2>&1 &
  echo $! >> "$PIDS"
  for _ in $(seq 1 200); do [ -f "$DIR/port" ] && break; sleep 0.05; done
  if [ ! -f "$DIR/port" ]; then
    echo "local-cluster.sh: the coordinator did not start:" >&2; tail -5 "$DIR/coordinator.log" >&2; stop_cluster; exit 1
  fi
  for i in $(seq 0 $(( TRAINERS - 1 ))); do
    [ "$TRAINERS" -gt 0 ] || break
    setsid "$BIN/worker/mfpo-worker" --coordinator "127.0.0.1:$PORT" --name "trainer-$i" --threads "$threads" \
      --work_dir "$DIR/trainer-$i" "${token[@]}" > "$DIR/trainer-$i.log" 2>&1 &
    echo $! >> "$PIDS"
  done
  for i in $(seq 0 $(( DATAGEN - 1 ))); do
    [ "$DATAGEN" -gt 0 ] || break
    setsid "$BIN/datagen/mfpo-datagen" --coordinator "127.0.0.1:$PORT" --name "datagen-$i" --threads "$cores" \
      "${token[@]}" > "$DIR/datagen-$i.log" 2>&1 &
    echo $! >> "$PIDS"
  done
  # Ready when every agent has registered.
  local want=$(( TRAINERS + DATAGEN )) have=0
  for _ in $(seq 1 300); do
    have=$("$BIN/cli/mfpoctl" --server "127.0.0.1:$PORT" "${token[@]}" workers --json 2>/dev/null | grep -o '"state":"[a-z]*"' | grep -vc lost || true)
    [ "$have" -ge "$want" ] && break
    sleep 0.1
  done
  if [ "$have" -lt "$want" ]; then
    echo "local-cluster.sh: only $have of $want agents registered; logs in $DIR" >&2; stop_cluster; exit 1
  fi
  echo "local-cluster: coordinator 127.0.0.1:$PORT, $TRAINERS trainers ($threads threads each), $DATAGEN datagen; logs in $DIR"
}

case $ACTION in
  start) start_cluster ;;
  stop) stop_cluster ;;
  status)
    if [ -f "$DIR/port" ] && [ -f "$PIDS" ]; then "$BIN/cli/mfpoctl" --server "127.0.0.1:$(cat "$DIR/port")" workers; else echo "local-cluster: not running ($DIR)"; exit 1; fi ;;
  run)
    [ ${#COMMAND[@]} -gt 0 ] || { echo "local-cluster.sh run: give the command after --" >&2; exit 2; }
    trap 'stop_cluster' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_cluster
    "${COMMAND[@]}" ;;
esac
