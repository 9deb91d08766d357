#!/usr/bin/env bash
# Reproduces the shipped PIC default: `bash training/recipes/pic_defaults.sh [extra flags]`.
# Every command resumes when rerun, so this script can be killed and started again at any point.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-$HOME/.local/share/divcolor/runs}  # outside the work tree: reruns resume from here
MODELS=${MODELS:-resources/models}  # where the exported files go (MODELS=DIR stages them elsewhere)
RESULTS=${RESULTS:-docs/results}  # eval JSON and contact sheets
run="$RUNS/general-pic"
train=${TRAIN:-.venv/bin/divcolor-train}
"$train" pic --data "$DATA/natural64,$DATA/natural128*4" --out "$run" --preset cpu --threads 2 \
    --backbone-file "$MODELS/backbone_general_lite0.safetensors" --flips false "$@"
"$train" export --out "$run" --half --dest "$MODELS/pic_general.safetensors"
"$train" eval --checkpoint "$MODELS/pic_general.safetensors" --data "$DATA/natural128" --sample-limit 200 \
    --json "$RESULTS/pic_general_eval.json" --sheet "$RESULTS/pic_general_test.jpg" --demo "$DATA/bw_demo"
