# Shared by scripts/experiment.sh (and so scripts/run-default.sh), sourced, not run:
# one preference job (spec written from variables, `mfpo train`, which runs datagen's output
# through the reference pass, difficulty scoring, the curriculum phases and the evaluation).
#
# The hyper-parameters below were chosen on the development world (seed $DEV_WORLD_SEED) and are
# used unchanged on the report world (seed $REPORT_WORLD_SEED), which no tuning ever saw.
MFPO=${MFPO:-build/cli/mfpo}
SFT_BASELINE=${SFT_BASELINE:-common/data/sft-baseline}
MFPO_ARGS=()  # given to every mfpo command (experiment.sh --threads N: (--threads N))
DEV_WORLD_SEED=10
REPORT_WORLD_SEED=11

# Defaults of a job (override by setting the variable before calling `preference_job`).
# lr 2e-5: on the development world lr 1e-4 made every preference method degenerate (15-25% of
# descriptions like "There is a green There.", recall -11 to -18 points) and 4e-5 half as much;
# at 2e-5 no method loses more than 3.3 points of recall (docs/results.md has the numbers).
job_defaults() {
  VARIANT=mfpo BETA=0.1 DELTA=0 W_TEXT=1 W_IMAGE=1 W_MARGIN=1
  LR=2e-5 MICRO_BATCH=8 EPOCHS=1 WARMUP=0.05 CURRICULUM=easy_to_hard TIERS=3
  MAX_SAMPLES=1200 EVAL_IMAGES=200 SEED=1 EVAL_SUITES='["chair", "pope", "amber", "reliance"]'
}

# preference_spec NAME OUT_DIR MANIFEST WORLD [MODEL]: the job's spec on stdout.
preference_spec() {
  local name=$1 out=$2 manifest=$3 world=$4 model=${5:-$SFT_BASELINE}
  cat <<YAML
# Written by scripts/lib/experiment.sh ($name).
name: $name
output_dir: $out
seed: $SEED
model: {path: $model}
data: {train: $manifest, max_samples: $MAX_SAMPLES}
objective: {variant: $VARIANT, beta: $BETA, delta: $DELTA, w_text: $W_TEXT, w_image: $W_IMAGE, w_margin: $W_MARGIN}
optimizer: {lr: $LR, micro_batch: $MICRO_BATCH, epochs: $EPOCHS, warmup_ratio: $WARMUP}
curriculum: {mode: $CURRICULUM, tiers: $TIERS}
checkpoint: {keep_last: 1}
evaluation: {data: $world, limit: $EVAL_IMAGES, max_new_tokens: 32, batch_size: 64, suites: $EVAL_SUITES}
YAML
}

# preference_job NAME OUT_DIR MANIFEST WORLD [MODEL]: writes OUT_DIR.yaml and runs it.
preference_job() {
  local out=$2
  mkdir -p "$(dirname "$out")"
  preference_spec "$@" > "$out.yaml"
  echo "== $1: mfpo train --spec $out.yaml"
  "$MFPO" "${MFPO_ARGS[@]}" train --spec "$out.yaml"
}

# sft_eval WORLD OUT_DIR [MODEL]: the starting model's evaluation (the table's SFT row).
sft_eval() {
  local world=$1 out=$2 model=${3:-$SFT_BASELINE}
  # report.json is an evaluation's last file: a directory without it is redone.
  if [ -e "$out/report.json" ]; then echo "== SFT evaluation: kept $out"; return; fi
  echo "== SFT evaluation: mfpo eval --model $model"
  "$MFPO" "${MFPO_ARGS[@]}" eval --model "$model" --data "$world" --out "$out" --limit "$EVAL_IMAGES" --max_new_tokens 32 \
    --batch_size 64 --overwrite
}

# image_preferences WORLD OUT_DIR [GROUNDER]: datagen (keywords -> regions -> noise) over the
# world's training manifest; prints the manifest path.
image_preferences() {
  local world=$1 out=$2 grounder=${3:-regions}
  local args=(--manifest "$world/train.jsonl" --out "$out" --grounder "$grounder" --end "$MAX_SAMPLES")
  case $grounder in
    regions) args+=(--vocab "$world/vocab.txt") ;;
    model) args+=(--model "$SFT_BASELINE") ;;
  esac
  echo "== datagen ($grounder): mfpo perturb ${args[*]}" >&2
  "$MFPO" "${MFPO_ARGS[@]}" perturb "${args[@]}" >&2
  echo "$out/manifest-0-$MAX_SAMPLES.jsonl"
}
