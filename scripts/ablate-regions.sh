#!/usr/bin/env bash
# "Does the region construction matter?" (MFPO paper, Table 8) on the embedded world.
# From one SFT checkpoint, builds rejected images four ways and trains MFPO on each:
#   regions  noise inside the dataset's boxes of the chosen response's keywords
#   model    noise inside the SFT model's own heat-map regions (no boxes, no extra weights)
#   global   noise over the whole image
#   random   noise in a random box covering 20% of the image
# then evaluates each on the world's test split and prints CHAIRs / CHAIRi / POPE F1.
#
#   bash scripts/ablate-regions.sh SFT_CHECKPOINT WORLD_DIR OUT_DIR [MAX_SAMPLES] [EVAL_IMAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
SFT=${1:?SFT checkpoint directory}
WORLD=${2:?world directory (mfpo world)}
OUT=${3:?output directory}
N=${4:-2500}
EVAL=${5:-200}
MFPO=build/worker/mfpo
mkdir -p "$OUT"
for G in regions model global random; do
  echo "== $G: rejected images"
  ARGS=(--manifest "$WORLD/train.jsonl" --end "$N" --out "$OUT/data-$G" --grounder "$G")
  case $G in
    regions) ARGS+=(--vocab "$WORLD/vocab.txt") ;;
    model) ARGS+=(--model "$SFT") ;;
  esac
  "$MFPO" perturb "${ARGS[@]}"
  echo "== $G: MFPO from the SFT model"
  cat > "$OUT/job-$G.json" <<JSON
{"name": "ablate-$G", "output_dir": "$OUT/mfpo-$G",
 "model": {"path": "$SFT"},
 "data": {"train": "$OUT/data-$G/manifest-0-$N.jsonl"},
 "objective": {"variant": "mfpo", "beta": 0.1},
 "optimizer": {"lr": 1e-4, "micro_batch": 8, "epochs": 1, "warmup_ratio": 0.05},
 "curriculum": {"mode": "easy_to_hard", "tiers": 3},
 "checkpoint": {"keep_last": 1},
 "evaluation": {"data": "$WORLD", "limit": $EVAL, "max_new_tokens": 32, "suites": ["chair", "pope"]}}
JSON
  "$MFPO" train --spec "$OUT/job-$G.json"
done
/usr/bin/python3 - "$OUT" "$N" <<'PY'
import json, sys, os
out, n = sys.argv[1], sys.argv[2]
rows = []
for g in ["regions", "model", "global", "random"]:
    r = json.load(open(os.path.join(out, f"mfpo-{g}", "eval", "report.json")))
    m = [json.loads(l) for l in open(os.path.join(out, f"data-{g}", f"manifest-0-{n}.jsonl"))]
    fallback = sum(x["perturbation"]["fallback"] for x in m) / len(m)
    cover = sum(x["perturbation"]["coverage"] for x in m) / len(m)
    f1 = [100 * r["pope"][s]["f1"] for s in ("random", "popular", "adversarial")]
    rows.append(f"| {g} | {100*cover:.0f}% ({100*fallback:.0f}% global) | {100*r['chair']['chair_s']:.1f} | "
                f"{100*r['chair']['chair_i']:.1f} | {f1[0]:.1f} / {f1[1]:.1f} / {f1[2]:.1f} |")
table = ("| rejected image | mean noised area (fallbacks) | CHAIRs | CHAIRi | POPE F1 rand / pop / adv |\n"
         "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
open(os.path.join(out, "table8.md"), "w").write(table)
print(table)
PY
