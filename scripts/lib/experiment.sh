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

# run_defaults: job_defaults, then --quick's smaller sizes (QUICK=1: fewer pairs and test images).
run_defaults() { job_defaults; if [ "${QUICK:-0}" = 1 ]; then MAX_SAMPLES=256 EVAL_IMAGES=50; fi; }

# train_images: enough training images for MAX_SAMPLES pairs (4-5 pairs per image).
train_images() { echo $(( MAX_SAMPLES / 4 + 10 )); }

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

# image_preferences WORLD OUT_DIR [GROUNDER [FILL]]: datagen (keywords -> regions -> noise, or
# FILL inpaint: the regions filled from their surroundings) over the world's training manifest;
# prints the manifest path.
image_preferences() {
  local world=$1 out=$2 grounder=${3:-regions} fill=${4:-noise}
  local args=(--manifest "$world/train.jsonl" --out "$out" --grounder "$grounder" --end "$MAX_SAMPLES")
  if [ "$fill" != noise ]; then args+=(--fill "$fill"); fi
  case $grounder in
    regions) args+=(--vocab "$world/vocab.txt") ;;
    model) args+=(--model "$SFT_BASELINE") ;;
  esac
  echo "== datagen ($grounder): mfpo perturb ${args[*]}" >&2
  "$MFPO" "${MFPO_ARGS[@]}" perturb "${args[@]}" >&2
  echo "$out/manifest-0-$MAX_SAMPLES.jsonl"
}

# stage TEXT: a progress heading with the seconds since the run began (T0).
stage() { echo; echo "== [$(( $(date +%s) - T0 )) s] $*"; }

# make_world DIR: the scene world of WORLD_SEED with TRAIN_IMAGES training and EVAL_IMAGES test
# images; a world already in DIR is kept when it is exactly that one and refused otherwise.
make_world() {
  local world=$1
  local want="seed=$WORLD_SEED train=$TRAIN_IMAGES test=$EVAL_IMAGES"
  if [ -e "$world/world.json" ]; then
    # The world this run would make (0.5 s), compared whole with the one found.
    local check; check=$(mktemp -d)
    "$MFPO" world --out "$check/world" --seed "$WORLD_SEED" --train "$TRAIN_IMAGES" --val 0 --test "$EVAL_IMAGES" >/dev/null
    if ! cmp -s "$check/world/world.json" "$world/world.json"; then
      rm -rf "$check"
      echo "$(basename "$0"): $world was made with other settings ($(tr -d ' \n' < "$world/world.json"); this run makes" \
        "$want): remove $(dirname "$world") or choose another --out" >&2
      exit 2
    fi
    rm -rf "$check"
    stage "world: kept $world ($want)"
  else
    stage "world: seed $WORLD_SEED ($WORLD_KIND), $TRAIN_IMAGES training and $EVAL_IMAGES test images"
    "$MFPO" world --out "$world" --seed "$WORLD_SEED" --train "$TRAIN_IMAGES" --val 0 --test "$EVAL_IMAGES"
  fi
}

# write_report COMMAND_LINE TITLE RUNS FOCUS [mfpo report flags...]: OUT/notes.md (how the run
# was made) and `mfpo report` into OUT/report. RUNS is LABEL@SEED=DIR,... as `mfpo report` takes.
write_report() {
  local command_line=$1 title=$2 runs=$3 focus=$4
  shift 4
  cat > "$OUT/notes.md" <<MD
## How this was made

\`$command_line\` ($(date -u +%Y-%m-%d), $(( $(date +%s) - T0 )) s).

- Starting model: \`$SFT_BASELINE\` (\`scripts/sft-baseline.sh\`: worlds of seeds 7, 0 and 1).
- World: seed $WORLD_SEED ($WORLD_KIND; hyper-parameters were chosen on the development world, seed
  $DEV_WORLD_SEED, and the report world, seed $REPORT_WORLD_SEED, was used for nothing else). The first
  $MAX_SAMPLES preference pairs of its training split; $EVAL_IMAGES test images, where the training
  split's co-occurrence and colour priors are broken.
- Jobs (specs next to each run directory): beta $BETA, lr $LR, micro-batch $MICRO_BATCH, $EPOCHS epoch,
  warm-up $WARMUP, curriculum $CURRICULUM ($TIERS tiers) unless the row says otherwise; training seeds
  $SEEDS; evaluation seed 0 for every run (the same POPE questions and noise); CPU threads per
  command: ${MFPO_ARGS[1]:-one per core}.
- mDPO's m' is a random crop (20-50% of each side); MFPO's is DDPM noise (t = 500) inside the regions of
  the chosen answer's keywords, global noise where no keyword has a region.
MD
  if [ -n "${NOTES_EXTRA:-}" ]; then printf '%s\n' "$NOTES_EXTRA" >> "$OUT/notes.md"; fi
  "$MFPO" report --runs "$runs" --out "$OUT/report" --notes "$OUT/notes.md" --overwrite --focus "$focus" "$@" \
    --title "$title$([ "$QUICK" = 1 ] && echo " (quick)")"
}
