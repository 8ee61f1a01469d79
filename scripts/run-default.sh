#!/usr/bin/env bash
# Command 1: installs what is missing, builds, and runs the main job on the embedded default.
#
# From the shipped SFT baseline (common/data/sft-baseline: the tiny LLaVA trained on the scene
# world by scripts/sft-baseline.sh), on a scene world that no tuning ever saw (seed 11):
#   datagen (mfpo perturb: keywords -> regions -> diffusion noise) -> DPO, mDPO and MFPO jobs
#   (mfpo train: reference pass, entropy difficulty, easy / medium / hard phases, evaluation)
#   -> the SFT model's own evaluation -> mfpo report: the table with 95% bootstrap intervals,
#   paired differences, report.md / report.json and PNG plots in out/default/report.
#
#   bash scripts/run-default.sh [--quick] [--seed N] [--no-build]
# About 20 minutes on 2 cores after the build; --quick (fewer pairs and test images) about 5.
# An interrupted run continues where it stopped; `rm -rf out/default` starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=() BUILD=1 SEED=1 OUT=out/default
while [ $# -gt 0 ]; do
  case $1 in
    --quick) ARGS+=(--quick); OUT=out/default-quick ;;
    --no-build) BUILD=0 ;;
    --seed) SEED=${2:?--seed needs a number}; shift ;;
    -h|--help) sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-default.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$BUILD" = 1 ]; then bash scripts/build.sh; fi
exec bash scripts/experiment.sh main --seeds "$SEED" --out "$OUT" "${ARGS[@]}"
