#!/usr/bin/env bash
# Reproduces a shipped G-CRF default from the finished VAE-MDN run of the same family:
# `bash training/recipes/gcrf_defaults.sh faces|general [extra flags]`. Resumable: rerun after a kill.
set -euo pipefail
cd "$(dirname "$0")/../.."
family=${1:?faces or general}; shift || true
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-$HOME/.local/share/divcolor/runs}  # outside the work tree: reruns resume from here
MODELS=${MODELS:-resources/models}  # where the exported files go (MODELS=DIR stages them elsewhere)
RESULTS=${RESULTS:-docs/results}  # eval JSON and contact sheets
case "$family" in
    faces)   data="$DATA/lfw64";     tune="$data"; reveal=(); hint_tune=() ;;
    # The mix its VAE-MDN run trained on (vae_mdn_defaults.sh); export tunes β on natural64 alone.
    general) data="$DATA/natural64,$DATA/natural128*4"; tune="$DATA/natural64"
             reveal=(--reveal-data "$DATA/natural128"); hint_tune=(--hint-data "$DATA/natural128") ;;
    *) echo "unknown family $family" >&2; exit 2 ;;
esac
run="$RUNS/$family-gcrf"
train=${TRAIN:-.venv/bin/divcolor-train}
"$train" gcrf-unary --data "$data" --out "$run" --init-from "$RUNS/$family"
"$train" gcrf-mdn --data "$data" --out "$run" --preset cpu "$@"
"$train" gcrf-hoc --data "$data" --out "$run" --preset cpu ${HOC_STEPS:+--steps $HOC_STEPS} "$@"
# The learned hint branch (Zhang et al. 2017) on the finished model: strokes colour their object.
"$train" gcrf-hints --data "$data" --out "$run" "$@" --steps "${HINTS_STEPS:-5500}"
"$train" export --out "$run" --data "$tune" "${hint_tune[@]}" --half --dest "$MODELS/gcrf_$family.safetensors"
test_data="$DATA/natural128"; [ "$family" = faces ] && test_data="$DATA/lfw64"
"$train" eval --checkpoint "$MODELS/gcrf_$family.safetensors" --data "$test_data" "${reveal[@]}" \
    --json "$RESULTS/gcrf_${family}_eval.json" --sheet "$RESULTS/gcrf_${family}_test.jpg" --demo "$DATA/bw_demo" \
    ${EVAL_LIMIT:+--limit $EVAL_LIMIT}
