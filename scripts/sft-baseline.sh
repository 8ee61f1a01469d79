#!/usr/bin/env bash
# Reproduces the shipped SFT baseline, common/data/sft-baseline (docs/examples/world-sft.yaml),
# every step in order; steps whose output already exists are skipped, so an interrupted run
# continues. About 1.5 hours on 2 cores: vision pre-training ~20 min, two SFT stages ~25 min each,
# evaluations ~3 min each. Needs the build (scripts/build.sh). The last step converts the final
# checkpoint to bfloat16 into OUT_MODEL (default common/data/sft-baseline) and writes its SHA-256
# next to it (OUT_MODEL.sha256, checked by the test `sft_baseline_sha256`). Seeds: init-model 0,
# vision world 7, pretrain-vision 0 then 1, SFT worlds 0 and 1, SFT jobs 0. Bit-identical weights
# need the same thread count (2) and BLAS (OpenBLAS 0.3.21); elsewhere the numbers agree within noise.
set -euo pipefail
cd "$(dirname "$0")/.."
MFPO=build/cli/mfpo
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
FINAL=$(ls -d out/sft-stage2/checkpoints/step-* | sort | tail -1)
OUT_MODEL=${OUT_MODEL:-common/data/sft-baseline}
echo "== bfloat16 copy of $FINAL -> $OUT_MODEL"
"$MFPO" convert-model --model "$FINAL" --out "$OUT_MODEL" --dtype bfloat16 --overwrite
( cd "$(dirname "$OUT_MODEL")" && sha256sum "$(basename "$OUT_MODEL")"/* > "$(basename "$OUT_MODEL").sha256" )
cat > "$OUT_MODEL.md" <<MD
# $(basename "$OUT_MODEL"): the SFT baseline of the embedded scene world

Made by \`bash scripts/sft-baseline.sh\` ($(date -u +%Y-%m-%d), $(nproc) threads, BLAS $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)):
the tiny preset (\`mfpo init-model --preset tiny --seed 0\`), its vision tower pre-trained on a
prior-free world (seed 7, 20,000 images; pretrain-vision seeds 0 and 1), then two SFT stages with
the tower frozen (docs/examples/world-sft.yaml on the world of seed 0, world-sft-stage2.yaml on
the world of seed 1; job seed 0), converted to bfloat16 from \`$FINAL\`.
SHA-256 of every file: \`$OUT_MODEL.sha256\` (checked by the test \`sft_baseline_sha256\`).

Evaluation of the fp32 checkpoint on the test split of the world of seed 0 (200 images, priors broken):

$(sed -n '/^| Metric/,$p' out/sft-stage2/eval/report.md)
MD
echo "done: model $OUT_MODEL (SHA-256 in $OUT_MODEL.sha256), reports out/sft{,-stage2}/eval/report.md"
