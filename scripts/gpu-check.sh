#!/usr/bin/env bash
# The GPU path of data-parallel training (issue #12), on a machine with NVIDIA GPUs:
#
#   1. builds `mfpo` with -DMFPO_WITH_NCCL=ON against a CUDA LibTorch: $LIBTORCH (an unpacked
#      official libtorch 2.x archive) or the one inside Python's torch package;
#   2. runs an NCCL job on every visible GPU (one rank per GPU; on one GPU a group of one, whose
#      gradients still go through NCCL) of the `7b-shape` preset: LLaVA-1.5-7B's shapes (CLIP
#      ViT-L/14-336, Vicuna-7B hidden 4096 / MLP 11008 / 32 heads / 32064 words) with 2 layers
#      each, bf16 weights and autocast, MFPO objective, micro-batch 4;
#   3. prints the step time, tokens/s, the achieved TFLOP/s (6 x trainable parameters x tokens per
#      second, the frozen vision tower's forward left out) and its share of the GPU's bf16 peak.
#
#   bash scripts/gpu-check.sh [OUT_DIR]     (default out/gpu-check; about 5 minutes with the build)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu-check}
mkdir -p "$(dirname "$OUT")"
command -v nvidia-smi >/dev/null || { echo "gpu-check.sh: no nvidia-smi: this is not a GPU machine" >&2; exit 2; }
NGPU=$(nvidia-smi -L | grep -c '^GPU')
[ "$NGPU" -ge 1 ] || { echo "gpu-check.sh: nvidia-smi lists no GPU" >&2; exit 2; }
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
PY=$(command -v python3 || true)
PREFIX=${LIBTORCH:-}
if [ -z "$PREFIX" ] && [ -n "$PY" ]; then PREFIX=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true); fi
[ -n "$PREFIX" ] || { echo "gpu-check.sh: no CUDA LibTorch: set LIBTORCH=/path/to/libtorch or install Python's torch" >&2; exit 2; }
echo "== $NGPU x $GPU_NAME; LibTorch from $PREFIX"

echo "== build (MFPO_WITH_NCCL=ON)"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMFPO_WITH_NCCL=ON -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DMFPO_BUILD_TESTS=OFF -DMFPO_BUILD_BENCH=OFF > "$OUT.cmake.log" 2>&1 || { tail -20 "$OUT.cmake.log"; exit 1; }
cmake --build build-gpu --target mfpo > "$OUT.build.log" 2>&1 || { tail -30 "$OUT.build.log"; exit 1; }
M=build-gpu/cli/mfpo

rm -rf "$OUT"
mkdir -p "$OUT"
"$M" init-model --preset 7b-shape --seed 1 --out "$OUT/model" > /dev/null
"$M" world --out "$OUT/world" --seed 1 --train 64 --val 0 --test 0 --size 336 > /dev/null
PORT=$(( 20000 + RANDOM % 20000 ))
cat > "$OUT/job.yaml" <<YAML
output_dir: $OUT/run
model: {path: $OUT/model, dtype: bfloat16}
data: {train: $OUT/world/train.jsonl, max_samples: $(( 4 * NGPU * 12 ))}
objective: {variant: mfpo}
optimizer: {lr: 1.0e-5, micro_batch: 4, warmup_ratio: 0.1}
curriculum: {mode: end_to_end}
checkpoint: {keep_last: 1}
resources: {device: cuda, precision: bf16, workers: $NGPU, collective_timeout_s: 300}
YAML
echo "== train: $NGPU rank(s), NCCL"
if [ "$NGPU" -eq 1 ]; then
  "$M" train --spec "$OUT/job.yaml" --rank 0 --world-size 1 --rendezvous "127.0.0.1:$PORT"
else
  "$M" train --spec "$OUT/job.yaml"
fi
echo
/usr/bin/env python3 - "$OUT" "$NGPU" "$GPU_NAME" <<'PY'
import json, struct, sys, statistics
out, ngpu, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def numels(path):
    b = open(path, "rb").read(8); n = struct.unpack("<Q", b)[0]
    h = json.loads(open(path, "rb").read(8 + n)[8:])
    total = 0
    for k, v in h.items():
        if k == "__metadata__" or k.startswith("vision_tower"): continue
        c = 1
        for d in v["shape"]: c *= d
        total += c
    return total
trainable = numels(f"{out}/model/model.safetensors")
steps = [json.loads(l) for l in open(f"{out}/run/metrics.jsonl")]
steady = steps[2:] or steps
step_s = statistics.median(s["time"]["step_s"] for s in steady)
tokens = statistics.median(s["tokens"] for s in steady)
tflops = 6.0 * trainable * tokens / step_s / 1e12
peaks = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0, "L4": 121.0}
peak = next((v for k, v in peaks.items() if k in name), None)
print(f"trainable parameters {trainable/1e6:.0f} M; {ngpu} GPU(s); global batch {steady[0].get('world_size', 1) * 4} examples")
print(f"step time {step_s*1e3:.0f} ms (median of {len(steady)}); {tokens/step_s:,.0f} tokens/s "
      f"({tokens/step_s/ngpu:,.0f} per GPU)")
wait = statistics.median(s["time"]["allreduce_wait_s"] for s in steady)
print(f"exposed all-reduce wait {wait*1e3:.1f} ms per step")
if peak:
    print(f"achieved {tflops:.1f} TFLOP/s = {tflops/ngpu:.1f} per GPU = {tflops/ngpu/peak:.1%} of the {name} bf16 dense peak ({peak} TFLOP/s)")
else:
    print(f"achieved {tflops:.1f} TFLOP/s ({tflops/ngpu:.1f} per GPU); bf16 peak of '{name}' unknown to this script")
PY
