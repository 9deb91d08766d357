#!/usr/bin/env bash
# Reproduces a shipped VAE-MDN default: `bash training/recipes/vae_mdn_defaults.sh faces|general [extra flags]`.
# Every command resumes when rerun, so this script can be killed and started again at any point.
set -euo pipefail
cd "$(dirname "$0")/../.."
family=${1:?faces or general}; shift || true
DATA=${DATA:-../shared/data}
case "$family" in
    faces)   data="$DATA/lfw64";     extra=(--latent-dim 32) ;;
    general) data="$DATA/natural64"; extra=() ;;
    *) echo "unknown family $family" >&2; exit 2 ;;
esac
run="runs/$family"
train=${TRAIN:-.venv/bin/divcolor-train}
"$train" vae --data "$data" --out "$run" --preset cpu "${extra[@]}" "$@"
"$train" mdn --data "$data" --out "$run" --preset cpu "$@"
"$train" export --out "$run"
"$train" eval --data "$data" --out "$run" --sheet "$run/contact_sheet.png"
"$train" export --out "$run" --dest "resources/models/vae_mdn_$family.safetensors"
