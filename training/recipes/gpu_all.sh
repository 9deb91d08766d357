#!/usr/bin/env bash
# Every shipped model on one borrowed GPU inside a fixed wall-clock budget (the stage plan, the
# shares and why are in gpu_timed.py):
#
#   bash training/recipes/gpu_all.sh DATA_DIR OUT_DIR [--minutes 8.5]
#   python3 training/recipes/gpu_timed.py pack OUT_DIR/models DEST   # ≤ 15 MiB parts to carry back
#
# DATA_DIR holds natural64_train_00/01 and lfw64_train_00 (about 59 MiB: small enough to carry with
# the work tree to a borrowed GPU box). OUT_DIR receives the run directories and models/ with the
# exported files and plan.json (what each stage measured and did). Evaluate them where the test
# splits are and ship those that beat the shipped ones: a head works only with the backbone it was
# trained on, which it names (backbone_wide.safetensors), so it can ship beside older heads.
#
# DRY_RUN=1 runs every stage for two steps on the CPU with a handful of images: the test suite
# does that (tests/test_recipes.py), so this script cannot rot between the rare GPU sessions.
set -euo pipefail
cd "$(dirname "$0")/../.."
dry=(); [ "${DRY_RUN:-0}" = 1 ] && dry=(--dry-run)
exec "${PY:-python3}" training/recipes/gpu_timed.py "$@" "${dry[@]}"
