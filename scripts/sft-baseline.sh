#!/usr/bin/env bash
# The SFT baseline of issue #4 (docs/examples/world-sft.yaml), every step in order; steps whose
# output already exists are skipped, so an interrupted run continues. About 1.5 hours on 2 cores:
# vision pre-training ~20 min, two SFT stages ~25 min each, evaluations ~3 min each. Needs the build (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
MFPO=build/worker/mfpo
step() { if [ -e "$1" ]; then echo "== skip ($1 exists): $2"; return 1; fi; echo "== $2"; }
if step out/init "init-model (tiny preset)"; then
  "$MFPO" init-model --preset tiny --seed 0 --out out/init
fi
if step out/vworld "world without priors for the vision tower (20,000 images)"; then
  "$MFPO" world --out out/vworld --seed 7 --train 20000 --val 500 --test 0 --colour_prior 0 --cooccur_prior 0
fi
if step out/vision-a "pretrain-vision, 8 epochs at lr 2e-3"; then
  "$MFPO" pretrain-vision --model out/init --data out/vworld --out out/vision-a --epochs 8 --lr 2e-3
fi
if step out/vision "pretrain-vision, 8 more epochs at lr 1e-3"; then
  "$MFPO" pretrain-vision --model out/vision-a --data out/vworld --out out/vision --epochs 8 --lr 1e-3 --seed 1
fi
if step out/sft-world "world with priors for instruction tuning (6,000 images)"; then
  "$MFPO" world --out out/sft-world --train 6000
fi
echo "== SFT stage 1 (resumes from its newest checkpoint) and evaluation"
"$MFPO" train --spec docs/examples/world-sft.yaml
if step out/sft-world2 "6,000 new images with the same priors for stage 2"; then
  "$MFPO" world --out out/sft-world2 --seed 1 --train 6000 --val 50 --test 0
fi
echo "== SFT stage 2 and evaluation"
"$MFPO" train --spec docs/examples/world-sft-stage2.yaml
echo "done: model out/sft-stage2/checkpoints/step-*, reports out/sft{,-stage2}/eval/report.md"
