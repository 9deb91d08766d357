#!/usr/bin/env bash
# Reproduces a shipped G-CRF default from the finished VAE-MDN run of the same family:
# `bash training/recipes/gcrf_defaults.sh faces|general [extra flags]`. Resumable: rerun after a kill.
set -euo pipefail
cd "$(dirname "$0")/../.."
family=${1:?faces or general}; shift || true
DATA=${DATA:-../shared/data}
case "$family" in
    faces)   data="$DATA/lfw64";     reveal=() ;;
    general) data="$DATA/natural64"; reveal=(--reveal-data "$DATA/natural128") ;;
    *) echo "unknown family $family" >&2; exit 2 ;;
esac
run="runs/$family-gcrf"
train=${TRAIN:-.venv/bin/divcolor-train}
"$train" gcrf-unary --data "$data" --out "$run" --init-from "runs/$family"
"$train" gcrf-mdn --data "$data" --out "$run" --preset cpu "$@"
"$train" gcrf-hoc --data "$data" --out "$run" --preset cpu "$@"
"$train" export --out "$run" --data "$data" --half
"$train" eval --data "$data" --out "$run" --sheet "$run/contact_sheet.png" "${reveal[@]}" ${EVAL_LIMIT:+--limit $EVAL_LIMIT}
"$train" export --out "$run" --data "$data" --half --dest "resources/models/gcrf_$family.safetensors"
