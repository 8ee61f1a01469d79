#!/usr/bin/env bash
# README command 1 in its --quick mode, end to end through the job service: a local cluster
# (coordinator, 2 trainer agents, 1 datagen agent, Prometheus), the DPO, mDPO and MFPO jobs
# submitted and watched with mfpoctl, the SFT evaluation and the report. Then: the report is
# whole (4 models, every metric with its interval, the plots), no process is left running, the
# MFPO job equals the same job run offline bitwise, and a rerun finds the finished jobs in the
# coordinator's database and writes the same report.
#
#   bash tests/command1_test.sh SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
SRC=$1 BIN=$2 WORK=$3
PY=/usr/bin/python3
fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK"
PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUN=$WORK/run
# Anything of this run still alive: the cluster's processes name its port or its directory.
left() { pgrep -af "mfpo-(coordinator|worker|datagen) .*127[.]0[.]0[.]1:$PORT( |\$)|prometheus .*$RUN/cluster|mfpo .*$RUN/" || true; }
trap 'pkill -KILL -f "mfpo-(coordinator|worker|datagen) .*127[.]0[.]0[.]1:$PORT( |\$)" 2>/dev/null || true' EXIT
command1() { timeout -k 10 "$1" bash "$SRC/scripts/run-default.sh" --quick --no-build --build "$BIN" --out "$RUN" --port "$PORT"; }

T0=$(date +%s)
if ! command1 1300 > "$WORK/first.log" 2>&1; then
  tail -60 "$WORK/first.log"
  for f in "$RUN"/cluster/*.log; do echo "--- $f"; tail -20 "$f"; done
  fail "run-default.sh --quick failed (log: $WORK/first.log)"
fi
echo "command 1 --quick through the service: $(( $(date +%s) - T0 )) s"
[ -z "$(left)" ] || fail "processes left running after the run: $(left)"
grep -qF "local-cluster: coordinator 127.0.0.1:$PORT, 2 trainer(s)" "$WORK/first.log" || fail "no local cluster of 2 trainers in the log"
if [ -x /usr/bin/prometheus ]; then
  grep -q "local-cluster: Prometheus on http://127.0.0.1:" "$WORK/first.log" || fail "Prometheus was not started"
fi
# Each job went through its stages, watched live: MFPO's datagen, every job's phases and evaluation.
for what in "DATAGEN" "REFERENCE" "SCORING" "TRAINING easy" "TRAINING medium" "TRAINING hard" "EVALUATING"; do
  grep -q "$what" "$WORK/first.log" || fail "the watch output never shows $what"
done
[ "$(grep -c '] SUCCEEDED: ' "$WORK/first.log" || true)" -ge 3 ] || fail "fewer than 3 jobs SUCCEEDED in the watch output"
for f in report.md report.json table.png loss_terms.png reward_accuracy.png; do
  [ -s "$RUN/report/$f" ] || fail "$RUN/report/$f is missing"
done
$PY - "$RUN/report/report.json" <<'PY'
import json, math, sys
report = json.load(open(sys.argv[1]))
runs = report["runs"]
labels = [r["label"] for r in runs]
assert labels == ["SFT", "+ DPO", "+ mDPO", "+ MFPO"], labels
for r in runs:
    assert r["images"] == 50, (r["label"], r["images"])
    for m in ["chair_s", "chair_i", "chair_recall", "pope_f1_random", "pope_f1_popular", "pope_f1_adversarial",
              "amber_hal", "reliance_gap"]:
        iv = r["metrics"][m]
        v, lo, hi = iv["value"], iv["lo"], iv["hi"]
        assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in (v, lo, hi)), (r["label"], m, iv)
        assert lo <= v <= hi, (r["label"], m, iv)
    # The trained models logged their steps (the loss and reward-accuracy plots come from them).
    assert r["label"] == "SFT" or r["steps"] > 0, (r["label"], r["steps"])
assert "1" in report["claim"], report["claim"]
PY

# The service does not change the science: the MFPO job run without it (mfpo perturb, then
# mfpo train on its manifest, one thread as each trainer agent has) ends in bitwise the same weights.
OFF=$WORK/offline
"$BIN/cli/mfpo" --threads 1 perturb --manifest "$RUN/world/train.jsonl" --out "$OFF/datagen" --grounder regions \
  --end 256 --vocab "$RUN/world/vocab.txt" > "$OFF.log" 2>&1 || { tail -20 "$OFF.log"; fail "mfpo perturb failed"; }
$PY - "$RUN/mfpo-s1.yaml" "$OFF" <<'PY'
import sys, yaml
spec = yaml.safe_load(open(sys.argv[1]))
off = sys.argv[2]
spec["output_dir"] = off + "/mfpo-s1"
spec["data"]["train"] = off + "/datagen/manifest-0-256.jsonl"
for key in ("datagen", "evaluation", "resources"):
    spec.pop(key, None)
yaml.safe_dump(spec, open(off + "/mfpo-s1.yaml", "w"))
PY
"$BIN/cli/mfpo" --threads 1 train --spec "$OFF/mfpo-s1.yaml" >> "$OFF.log" 2>&1 || { tail -20 "$OFF.log"; fail "offline mfpo train failed"; }
SERVICE_CKPT=$(ls -d "$RUN"/mfpo-s1/checkpoints/step-* | tail -1)
OFFLINE_CKPT=$OFF/mfpo-s1/checkpoints/$(basename "$SERVICE_CKPT")
cmp "$SERVICE_CKPT/model.safetensors" "$OFFLINE_CKPT/model.safetensors" ||
  fail "the service's MFPO weights ($SERVICE_CKPT) differ from the same job run offline ($OFFLINE_CKPT)"
echo "the service's MFPO job equals mfpo perturb + mfpo train bitwise ($(basename "$SERVICE_CKPT"))"

# A rerun: the coordinator reloads its database, finds the 3 jobs finished and the report is the same.
cp "$RUN/report/report.json" "$WORK/first-report.json"
if ! command1 600 > "$WORK/second.log" 2>&1; then tail -40 "$WORK/second.log"; fail "the rerun failed"; fi
[ "$(grep -c 'submitted by an earlier run' "$WORK/second.log" || true)" = 3 ] || fail "the rerun submitted jobs again"
$PY - "$WORK/first-report.json" "$RUN/report/report.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert [r["metrics"] for r in a["runs"]] == [r["metrics"] for r in b["runs"]], "the rerun's numbers differ"
PY
[ -z "$(left)" ] || fail "processes left running after the rerun: $(left)"
echo "PASS"
