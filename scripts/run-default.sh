#!/usr/bin/env bash
# The main job on the embedded default, end to end on one machine (the coordinator issue will
# drive the same stages over gRPC): the scene world -> a tiny LLaVA -> its vision tower pre-trained
# on the world's captions and boxes -> a short SFT -> image-
# preference data (keywords -> regions -> diffusion noise) -> MFPO (reference pass, entropy
# curriculum easy/medium/hard) -> hallucination evaluation (CHAIR, POPE, AMBER, reliance).
# About 5 minutes on 2 cores after the build; outputs in out/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
OUT=out/default
MFPO=build/worker/mfpo
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== 1/7 mfpo world (embedded scene world, 600 training images)"
"$MFPO" world --out "$OUT/world" --seed 0 --train 600 --val 50 --test 200 --colour_prior 0.2
echo "== 2/7 mfpo init-model (tiny preset)"
"$MFPO" init-model --preset tiny --seed 0 --out "$OUT/init"
echo "== 3/7 mfpo pretrain-vision: the tower learns shapes and colours (standing in for CLIP)"
"$MFPO" pretrain-vision --model "$OUT/init" --data "$OUT/world" --out "$OUT/vision" --epochs 12 --lr 2e-3
echo "== 4/7 mfpo train: short SFT, tower frozen (docs/examples/default-sft.yaml)"
"$MFPO" train --spec docs/examples/default-sft.yaml
# The MFPO spec starts from out/default/sft/final: a link to the SFT run's last checkpoint.
ln -sfn "$(realpath "$(ls -d "$OUT"/sft/checkpoints/step-* | sort | tail -1)")" "$OUT/sft/final"
echo "== 5/7 mfpo perturb: rejected images from the chosen responses' keywords and regions"
"$MFPO" perturb --manifest "$OUT/world/train.jsonl" --out "$OUT/perturbed" \
  --vocab "$OUT/world/vocab.txt" --grounder regions
echo "== 6/7 mfpo train: MFPO + evaluation (docs/examples/default-mfpo.yaml)"
"$MFPO" train --spec docs/examples/default-mfpo.yaml
echo "== 7/7 mfpo generate with the aligned model"
"$MFPO" generate --model "$(ls -d "$OUT"/mfpo/checkpoints/step-* | sort | tail -1)" --image "$OUT/world/images/test-0.png" \
  --prompt "Describe the image." --max_new_tokens 24
echo "done: report in $OUT/mfpo/eval/report.md (a few minutes of CPU training: the numbers show the"
echo "pipeline works, not a converged model; docs/examples/world-*.yaml are the full runs)"
