#!/usr/bin/env bash
# The main job on the embedded default. Until the end-to-end MFPO pipeline lands this is the
# smoke job: write the tiny LLaVA checkpoint, score and generate with it through the same
# commands a user runs on a Hugging Face LLaVA-1.5 checkpoint, write the embedded scene world
# and evaluate the model's hallucination metrics on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
OUT=${OUT:-out/default}
MFPO=build/worker/mfpo
IMAGE=tests/golden/images/wide.png
mkdir -p "$OUT"
echo "== mfpo init-model (tiny preset)"
"$MFPO" init-model --preset tiny --seed 0 --out "$OUT/tiny-llava"
echo "== mfpo logits"
"$MFPO" logits --model "$OUT/tiny-llava" --image "$IMAGE" \
  --prompt "What color is the cat?" --response "The cat is red." --out "$OUT/logits.safetensors"
echo "== mfpo generate"
"$MFPO" generate --model "$OUT/tiny-llava" --image "$IMAGE" \
  --prompt "Describe the image." --max_new_tokens 16 --json
echo "== mfpo world (embedded scene world)"
"$MFPO" world --out "$OUT/world" --seed 0
echo "== mfpo eval (hallucination metrics of the untrained tiny model on 50 test images)"
"$MFPO" eval --model "$OUT/tiny-llava" --data "$OUT/world" --out "$OUT/eval" --limit 50 --max-new-tokens 24
echo "done: outputs in $OUT (the tiny model is untrained, so its answers are noise; training lands with the trainer issue)"
