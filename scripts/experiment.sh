#!/usr/bin/env bash
# The experiments of the result (needs the build: scripts/build.sh). From the shipped SFT
# baseline, on a fresh scene world:
#
#   main     DPO, mDPO and MFPO (the README's result table; command 1 runs it with one seed)
#   table4   MFPO's terms: text only (w_image 0, w_margin 0), image only (w_text 0, w_margin 0),
#            without the margin term (w_margin 0), full
#   table5   the margin target delta: 0, 0.2, 0.4 (L_margin = -log sigmoid(r_w - delta): a larger
#            delta asks for a larger reward of the chosen answer)
#   table7   easy-to-hard curriculum versus end-to-end (one shuffled phase), for MFPO and, to
#            see whether the curriculum's effect is MFPO's own, for DPO
#   table8   rejected images from the dataset's regions / the model's heat map / random boxes
#            (20% of the image) / global noise, and, beyond the paper, the regions inpainted
#            (filled from their surroundings) instead of noised
#
#   bash scripts/experiment.sh EXPERIMENT [--seeds "1 2 3"] [--world report|dev] [--quick]
#                              [--out DIR] [--model SFT_DIR] [--threads N] [--main DIR]
#
# Each seed is a training seed (data order, crops, noise); the evaluation questions are the same
# for every run. --world dev is the development world (seed 10) on which the hyper-parameters
# were chosen; the default, report (seed 11), is the one the README's numbers come from. Each
# run is a directory with its spec, metrics.jsonl and eval/; finished runs are kept on a rerun
# (the trainer resumes or refuses a changed spec). Writes OUT/report/report.md etc.
# --threads N caps each mfpo command's CPU threads (default: one per core), e.g. to run an
# ablation in the background of a build; results then differ from a full-core run by float
# summation order only. An ablation's row that is exactly one of the main experiment's jobs (e.g.
# MFPO with the full objective, delta 0, easy-to-hard, rejected images from regions) reuses the
# finished run in --main DIR (default: the main experiment's default --out for the same world
# and mode).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n 2,29p "$0" | sed 's/^# \{0,1\}//'; }
EXPERIMENT=${1:-}
case $EXPERIMENT in
  main|table4|table5|table7|table8) shift ;;
  -h|--help) usage; exit 0 ;;
  *) echo "experiment.sh: first argument must be main, table4, table5, table7 or table8" >&2; usage >&2; exit 2 ;;
esac
source scripts/lib/experiment.sh
SEEDS=1 WORLD_KIND=report QUICK=0 OUT= MAIN_OUT=
# value FLAG WHAT "$@": the flag's non-empty value (exits 2 when it is missing or empty).
value() { [ -n "${3:-}" ] || { echo "experiment.sh: $1 needs $2" >&2; exit 2; }; printf '%s' "$3"; }
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) SEEDS=$(value --seeds 'a list of seeds, e.g. "1 2 3"' "${2:-}") || exit 2; shift ;;
    --world) WORLD_KIND=$(value --world 'report or dev' "${2:-}") || exit 2; shift ;;
    --quick) QUICK=1 ;;
    --out) OUT=$(value --out 'a directory' "${2:-}") || exit 2; shift ;;
    --model) SFT_BASELINE=$(value --model 'a model directory' "${2:-}") || exit 2; shift ;;
    --main) MAIN_OUT=$(value --main 'a directory' "${2:-}") || exit 2; shift ;;
    --threads) case ${2:-} in ''|*[!0-9]*) echo "experiment.sh: --threads needs a number" >&2; exit 2 ;; esac
      MFPO_ARGS=(--threads "$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "experiment.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for s in $SEEDS; do case $s in *[!0-9]*) echo "experiment.sh: seeds must be non-negative integers" >&2; exit 2 ;; esac; done
[ -n "${SEEDS// /}" ] || { echo "experiment.sh: --seeds is empty" >&2; exit 2; }
DUP=$(tr ' ' '\n' <<<"$SEEDS" | sed '/^$/d' | sort | uniq -d | head -1)
[ -z "$DUP" ] || { echo "experiment.sh: seed $DUP is given twice in --seeds" >&2; exit 2; }
case $WORLD_KIND in
  report) WORLD_SEED=$REPORT_WORLD_SEED ;;
  dev) WORLD_SEED=$DEV_WORLD_SEED ;;
  *) echo "experiment.sh: --world must be report or dev" >&2; exit 2 ;;
esac
[ -x "$MFPO" ] || { echo "experiment.sh: $MFPO is missing: run scripts/build.sh first" >&2; exit 2; }
[ -e "$SFT_BASELINE/config.json" ] || { echo "experiment.sh: no model in $SFT_BASELINE" >&2; exit 2; }
# The defaults of every job of this run (quick: fewer pairs and test images).
run_defaults
TRAIN_IMAGES=$(train_images)
OUT=${OUT:-out/$EXPERIMENT-$WORLD_KIND$(if [ "$QUICK" = 1 ]; then echo -quick; fi)}
MAIN_OUT=${MAIN_OUT:-out/main-$WORLD_KIND$(if [ "$QUICK" = 1 ]; then echo -quick; fi)}
mkdir -p "$OUT"
T0=$(date +%s)

WORLD=$OUT/world
make_world "$WORLD"
stage "datagen: rejected images for the first $MAX_SAMPLES pairs (regions of the keywords)"
MANIFEST=$(image_preferences "$WORLD" "$OUT/datagen" regions)

RUNS=()  # LABEL@SEED=DIR for mfpo report
# run LABEL DIR_NAME [VAR=VALUE...]: one job per seed with the given settings.
run() {
  local label=$1 name=$2
  shift 2
  for s in $SEEDS; do
    stage "$label, seed $s"
    local dir
    dir=$( run_defaults
      SEED=$s MANIFEST_USED=$MANIFEST
      for kv in "$@"; do eval "$kv"; done
      # A row that is one of the main experiment's jobs (same spec but for its name and paths,
      # same world, byte-identical datagen manifest) reuses that finished run.
      MAIN_RUN=$MAIN_OUT/$VARIANT-s$s
      if [ "$EXPERIMENT" != main ] && [ -e "$MAIN_RUN/eval/report.json" ] && [ -e "$MAIN_RUN.yaml" ] &&
         cmp -s "$MANIFEST_USED" "$MAIN_OUT/datagen/$(basename "$MANIFEST_USED")" &&
         cmp -s "$WORLD/world.json" "$MAIN_OUT/world/world.json" &&
         preference_spec "main-$VARIANT-s$s" "$MAIN_RUN" "$MAIN_OUT/datagen/$(basename "$MANIFEST_USED")" "$MAIN_OUT/world" |
           cmp -s - "$MAIN_RUN.yaml"; then
        echo "== the main experiment's $VARIANT run of seed $s has this spec: reusing $MAIN_RUN" >&2
        echo "$MAIN_RUN"
      else
        preference_job "$EXPERIMENT-$name-s$s" "$OUT/$name-s$s" "$MANIFEST_USED" "$WORLD" >&2
        echo "$OUT/$name-s$s"
      fi )
    RUNS+=("$label@$s=$dir")
  done
}

FOCUS= CLAIM=()
case $EXPERIMENT in
  main)
    run "+ DPO" dpo VARIANT=dpo
    run "+ mDPO" mdpo VARIANT=mdpo
    run "+ MFPO" mfpo VARIANT=mfpo
    FOCUS="+ MFPO"
    # The issue's claim: below SFT and DPO on CHAIRs and CHAIRi, reliance gap above DPO's.
    CLAIM=(--claim_against "SFT,+ DPO" --claim_gap_over "+ DPO") ;;
  table4)
    run "text only" text-only W_IMAGE=0 W_MARGIN=0
    run "image only" image-only W_TEXT=0 W_MARGIN=0
    run "without margin" no-margin W_MARGIN=0
    run "full MFPO" full
    FOCUS="full MFPO" ;;
  table5)
    run "delta 0" delta-0 DELTA=0
    run "delta 0.2" delta-0.2 DELTA=0.2
    run "delta 0.4" delta-0.4 DELTA=0.4
    FOCUS="delta 0" ;;
  table7)
    run "DPO end-to-end" dpo-end-to-end VARIANT=dpo CURRICULUM=end_to_end
    run "DPO easy-to-hard" dpo-easy-to-hard VARIANT=dpo CURRICULUM=easy_to_hard
    run "end-to-end" end-to-end CURRICULUM=end_to_end
    run "easy-to-hard" easy-to-hard CURRICULUM=easy_to_hard
    FOCUS="easy-to-hard" ;;
  table8)
    for g in model random global; do
      M=$(image_preferences "$WORLD" "$OUT/datagen-$g" "$g")
      run "$g" "$g" "MANIFEST_USED=$M"
    done
    M=$(image_preferences "$WORLD" "$OUT/datagen-inpaint" regions inpaint)
    run "inpainted regions" inpaint "MANIFEST_USED=$M"
    run "regions" regions
    FOCUS="regions" ;;
esac

stage "the SFT baseline's evaluation and the report"
sft_eval "$WORLD" "$OUT/sft-eval"
SFT_RUNS=()
if [ "$EXPERIMENT" = main ]; then for s in $SEEDS; do SFT_RUNS+=("SFT@$s=$OUT/sft-eval"); done; fi
LIST=$(IFS=,; echo "${SFT_RUNS[*]}${SFT_RUNS[*]:+,}${RUNS[*]}")
TITLE=$(case $EXPERIMENT in main) echo "MFPO on the scene world" ;; table4) echo "Ablation (paper Table 4): MFPO's terms" ;;
  table5) echo "Ablation (paper Table 5): margin target delta" ;; table7) echo "Ablation (paper Table 7): curriculum" ;;
  table8) echo "Ablation (paper Table 8): how the rejected image is made" ;; esac)
write_report "bash scripts/experiment.sh $EXPERIMENT --seeds \"$SEEDS\" --world $WORLD_KIND$(if [ "$QUICK" = 1 ]; then echo " --quick"; fi) --out $OUT${MFPO_ARGS[*]:+ ${MFPO_ARGS[*]}}" \
  "$TITLE" "$LIST" "$FOCUS" "${CLAIM[@]}"
echo
echo "done in $(( $(date +%s) - T0 )) s: $OUT/report/report.md"
