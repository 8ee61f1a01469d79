#!/usr/bin/env bash
# A job-service cluster on this machine, on loopback: mfpo-coordinator, N trainer agents
# (mfpo-worker) and M datagen agents (mfpo-datagen --coordinator). Needs the build
# (scripts/build.sh).
#
#   bash scripts/local-cluster.sh start [--dir DIR] [--port 7070] [--trainers 2] [--datagen 1]
#                                       [--threads N] [--roots DIR[,DIR]] [--token-file F] [--build DIR]
#                                       [--metrics] [--prometheus [PORT]]
#   bash scripts/local-cluster.sh stop   [--dir DIR]
#   bash scripts/local-cluster.sh status [--dir DIR]
#   bash scripts/local-cluster.sh run [start flags] -- COMMAND [ARGS...]
#        starts the cluster, runs COMMAND (e.g. build/cli/mfpoctl submit job.yaml --watch), and
#        stops every process afterwards, also when COMMAND fails or on Ctrl-C.
#
# DIR (default out/cluster) holds the database (jobs.db), the logs (*.log) and the pids. --threads
# is each agent's CPU threads (default: the cores shared among the trainers). --roots are the
# directories job specs may name (default: this repository). --build is the build directory
# (default build). --metrics serves every process's /metrics on a free loopback port (listed in
# DIR/targets); --prometheus also starts Debian's Prometheus (/usr/bin/prometheus) on PORT
# (default 9090, or a free port when it is taken) scraping them with deploy/prometheus/rules.yml,
# its data in DIR/prometheus. Then: build/cli/mfpoctl --server 127.0.0.1:PORT list | submit |
# watch | workers.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
# value FLAG WHAT VALUE: the flag's non-empty value (exits 2 when it is missing).
value() { [ -n "${3:-}" ] || { echo "local-cluster.sh: $1 needs $2" >&2; exit 2; }; printf '%s' "$3"; }
ACTION=${1:-}
case $ACTION in
  start|stop|status|run) shift ;;
  -h|--help) usage; exit 0 ;;
  *) echo "local-cluster.sh: first argument must be start, stop, status or run" >&2; usage >&2; exit 2 ;;
esac
DIR=out/cluster PORT=7070 TRAINERS=2 DATAGEN=1 THREADS= ROOTS=$REPO TOKEN_FILE= BIN=build METRICS=0 PROMETHEUS=
COMMAND=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=$(value --dir 'a directory' "${2:-}") || exit 2; shift ;;
    --port) PORT=$(value --port 'a number' "${2:-}") || exit 2; shift ;;
    --trainers) TRAINERS=$(value --trainers 'a number' "${2:-}") || exit 2; shift ;;
    --datagen) DATAGEN=$(value --datagen 'a number' "${2:-}") || exit 2; shift ;;
    --threads) THREADS=$(value --threads 'a number' "${2:-}") || exit 2; shift ;;
    --roots) ROOTS=$(value --roots 'directories' "${2:-}") || exit 2; shift ;;
    --token-file) TOKEN_FILE=$(value --token-file 'a file' "${2:-}") || exit 2; shift ;;
    --build) BIN=$(value --build 'a directory' "${2:-}") || exit 2; shift ;;
    --metrics) METRICS=1 ;;
    --prometheus) METRICS=1 PROMETHEUS=9090
      case ${2:-} in ''|-*) ;; *) PROMETHEUS=$2; shift ;; esac ;;
    --) shift; COMMAND=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "local-cluster.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for n in "$PORT" "$TRAINERS" "$DATAGEN" ${THREADS:+"$THREADS"} ${PROMETHEUS:+"$PROMETHEUS"}; do
  case $n in ''|*[!0-9]*) echo "local-cluster.sh: '$n' is not a number" >&2; exit 2 ;; esac
done
[ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || { echo "local-cluster.sh: --port must be in [1, 65535]" >&2; exit 2; }
PIDS=$DIR/pids
TOKEN=()
[ -n "$TOKEN_FILE" ] && TOKEN=(--token_file "$TOKEN_FILE")

# The cluster's processes: the pids it started that still run an mfpo binary (a pid reused by
# another program is left alone), and any mfpo process serving or talking to its port (a
# coordinator restarted by hand on the same port).
# cmdline_of PID: the process's command line (empty when it is gone).
cmdline_of() { { tr '\0' ' ' < "/proc/$1/cmdline"; } 2>/dev/null || true; }

cluster_pids() {
  local p port
  if [ -f "$PIDS" ]; then
    for p in $(cat "$PIDS"); do
      if cmdline_of "$p" | grep -q "mfpo-\|prometheus.*$DIR"; then echo "$p"; fi
    done
  fi
  port=$(cat "$DIR/port" 2>/dev/null || true)
  if [ -n "$port" ]; then pgrep -f "mfpo-(coordinator|worker|datagen) .*127[.]0[.]0[.]1:$port( |\$)" || true; fi
}

# stop_pids PID...: SIGTERM, then SIGKILL (with its process group) after 10 s.
stop_pids() {
  [ $# -gt 0 ] || return 0
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for p in "$@"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; fi
  done
}

stop_cluster() {
  local pids; pids=$(cluster_pids | sort -u)
  if [ -z "$pids" ]; then rm -f "$PIDS"; return 0; fi
  # Agents first, while the coordinator runs: each stops its stage and tells the coordinator it
  # leaves, so their jobs wait for trainers instead of counting a failure. Then, after two
  # scheduler ticks (the jobs written), the coordinator and Prometheus.
  local agents=() others=() p
  for p in $pids; do
    if cmdline_of "$p" | grep -q "mfpo-worker\|mfpo-datagen"; then agents+=("$p"); else others+=("$p"); fi
  done
  stop_pids "${agents[@]}"
  if [ ${#agents[@]} -gt 0 ]; then sleep 0.6; fi
  stop_pids "${others[@]}"
  rm -f "$PIDS"
  echo "local-cluster: stopped"
}

# free_port: a TCP port of 127.0.0.1 that nothing listens on now.
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# metrics_flag NAME JOB: --metrics_address for one process (with --metrics), noted in DIR/targets.
metrics_flag() {
  [ "$METRICS" = 1 ] || return 0
  local port; port=$(free_port)
  echo "$2 127.0.0.1:$port $1" >> "$DIR/targets"
  printf '%s\n' --metrics_address "127.0.0.1:$port"
}

start_prometheus() {
  local prom=/usr/bin/prometheus
  if [ ! -x "$prom" ]; then
    echo "local-cluster: no Prometheus ($prom; scripts/install-deps.sh installs Debian's prometheus): metrics are served without it"
    return 0
  fi
  local web=$PROMETHEUS
  if (exec 3<>"/dev/tcp/127.0.0.1/$web") 2>/dev/null; then web=$(free_port); fi
  local config=$DIR/prometheus.yml
  {
    echo "# Written by scripts/local-cluster.sh: scrapes this cluster's processes (their ports: $DIR/targets)."
    echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
    echo "rule_files: [$REPO/deploy/prometheus/rules.yml]"
    echo "scrape_configs:"
    for job in mfpo-coordinator mfpo-trainer mfpo-datagen; do
      local targets; targets=$(awk -v j="$job" '$1 == j { printf "%s\"%s\"", (n++ ? ", " : ""), $2 }' "$DIR/targets")
      [ -n "$targets" ] && echo "  - {job_name: $job, static_configs: [{targets: [$targets]}]}"
    done
  } > "$config"
  setsid "$prom" --config.file="$config" --storage.tsdb.path="$DIR/prometheus" --web.listen-address="127.0.0.1:$web" \
    --log.level=warn > "$DIR/prometheus.log" 2>&1 &
  echo $! >> "$PIDS"
  local up=0
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$web") 2>/dev/null; then up=1; break; fi
    sleep 0.1
  done
  if [ "$up" = 0 ]; then
    echo "local-cluster.sh: Prometheus did not start:" >&2; tail -5 "$DIR/prometheus.log" >&2; stop_cluster; exit 1
  fi
  echo "$web" > "$DIR/prometheus-port"
  echo "local-cluster: Prometheus on http://127.0.0.1:$web (e.g. /graph?g0.expr=mfpo_train_steps_total)"
}

start_cluster() {
  for b in coordinator/mfpo-coordinator worker/mfpo-worker datagen/mfpo-datagen cli/mfpoctl; do
    [ -x "$BIN/$b" ] || { echo "local-cluster.sh: $BIN/$b is missing: run scripts/build.sh first" >&2; exit 2; }
  done
  mkdir -p "$DIR"
  if [ -n "$(cluster_pids)" ]; then
    echo "local-cluster.sh: a cluster already runs from $DIR (stop it first)" >&2; exit 2
  fi
  rm -f "$PIDS"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "local-cluster.sh: something already listens on 127.0.0.1:$PORT (choose another --port)" >&2; exit 2
  fi
  local cores; cores=$(nproc)
  local threads=${THREADS:-$(( cores / (TRAINERS > 0 ? TRAINERS : 1) ))}
  [ "$threads" -ge 1 ] || threads=1
  rm -f "$DIR/port" "$DIR/targets" "$DIR/prometheus-port"
  touch "$DIR/targets"
  local m
  mapfile -t m < <(metrics_flag coordinator mfpo-coordinator)
  setsid "$BIN/coordinator/mfpo-coordinator" --address "127.0.0.1:$PORT" --database "$DIR/jobs.db" --roots "$ROOTS" \
    --port_file "$DIR/port" "${TOKEN[@]}" "${m[@]}" > "$DIR/coordinator.log" 2>&1 &
  echo $! >> "$PIDS"
  for _ in $(seq 1 200); do [ -f "$DIR/port" ] && break; sleep 0.05; done
  if [ ! -f "$DIR/port" ]; then
    echo "local-cluster.sh: the coordinator did not start:" >&2; tail -5 "$DIR/coordinator.log" >&2; stop_cluster; exit 1
  fi
  for i in $(seq 0 $(( TRAINERS - 1 ))); do
    [ "$TRAINERS" -gt 0 ] || break
    mapfile -t m < <(metrics_flag "trainer-$i" mfpo-trainer)
    setsid "$BIN/worker/mfpo-worker" --coordinator "127.0.0.1:$PORT" --name "trainer-$i" --threads "$threads" \
      --work_dir "$DIR/trainer-$i" "${TOKEN[@]}" "${m[@]}" > "$DIR/trainer-$i.log" 2>&1 &
    echo $! >> "$PIDS"
  done
  for i in $(seq 0 $(( DATAGEN - 1 ))); do
    [ "$DATAGEN" -gt 0 ] || break
    mapfile -t m < <(metrics_flag "datagen-$i" mfpo-datagen)
    setsid "$BIN/datagen/mfpo-datagen" --coordinator "127.0.0.1:$PORT" --name "datagen-$i" --threads "$cores" \
      "${TOKEN[@]}" "${m[@]}" > "$DIR/datagen-$i.log" 2>&1 &
    echo $! >> "$PIDS"
  done
  # Ready when every agent has registered.
  local want=$(( TRAINERS + DATAGEN )) have=0
  for _ in $(seq 1 300); do
    have=$("$BIN/cli/mfpoctl" workers --server "127.0.0.1:$PORT" "${TOKEN[@]}" --json 2>/dev/null | grep -o '"state":"[a-z]*"' | grep -vc lost || true)
    [ "$have" -ge "$want" ] && break
    sleep 0.1
  done
  if [ "$have" -lt "$want" ]; then
    echo "local-cluster.sh: only $have of $want agents registered; logs in $DIR" >&2; stop_cluster; exit 1
  fi
  echo "local-cluster: coordinator 127.0.0.1:$PORT, $TRAINERS trainer(s) ($threads thread(s) each), $DATAGEN datagen; logs in $DIR"
  if [ "$METRICS" = 1 ]; then echo "local-cluster: metrics at $(awk '{ printf "%s%s (%s)", (n++ ? ", " : ""), $2, $3 }' "$DIR/targets")"; fi
  if [ -n "$PROMETHEUS" ]; then start_prometheus; fi
}

case $ACTION in
  start) start_cluster ;;
  stop) stop_cluster ;;
  status)
    if [ -n "$(cluster_pids)" ]; then
      if ! pgrep -f "mfpo-coordinator .*127[.]0[.]0[.]1:$(cat "$DIR/port" 2>/dev/null)( |\$)" > /dev/null; then
        echo "local-cluster: the coordinator of $DIR is not running, but some of its processes are:" \
          "$(cluster_pids | tr '\n' ' ')(see $DIR/coordinator.log; '$0 stop --dir $DIR' stops them)"
        exit 1
      fi
      "$BIN/cli/mfpoctl" workers --server "127.0.0.1:$(cat "$DIR/port")" "${TOKEN[@]}"
    else
      echo "local-cluster: not running ($DIR)"; exit 1
    fi ;;
  run)
    [ ${#COMMAND[@]} -gt 0 ] || { echo "local-cluster.sh run: give the command after --" >&2; exit 2; }
    trap 'stop_cluster' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_cluster
    "${COMMAND[@]}" ;;
esac
