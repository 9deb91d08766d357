#!/usr/bin/env bash
# Reproduces the shipped PIC default: `bash training/recipes/pic_defaults.sh [extra flags]`.
# Every command resumes when rerun, so this script can be killed and started again at any point.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
run=runs/general-pic
train=${TRAIN:-.venv/bin/divcolor-train}
"$train" pic --data "$DATA/natural64" --out "$run" --preset cpu --threads 2 "$@"
"$train" export --out "$run" --half
"$train" eval --data "$DATA/natural64" --out "$run" --sample-limit 0 --sheet "$run/contact_sheet.png"
"$train" export --out "$run" --half --dest resources/models/pic_general.safetensors
