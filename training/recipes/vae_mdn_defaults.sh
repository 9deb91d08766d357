#!/usr/bin/env bash
# Reproduces a shipped VAE-MDN default: `bash training/recipes/vae_mdn_defaults.sh faces|general [extra flags]`.
# Every command resumes when rerun, so this script can be killed and started again at any point.
set -euo pipefail
cd "$(dirname "$0")/../.."
family=${1:?faces or general}; shift || true
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-$HOME/.local/share/divcolor/runs}  # outside the work tree: reruns resume from here
MODELS=${MODELS:-resources/models}  # where the exported files go (MODELS=DIR stages them elsewhere)
RESULTS=${RESULTS:-docs/results}  # eval JSON and contact sheets
case "$family" in
    faces)   data="$DATA/lfw64";     extra=(--latent-dim 32); limit=() ;;
    # natural128 (the photos general is judged on, Imagenette) drawn 4x as often as a natural64 photo:
    # best of 5 .0614 / first .0746 against .0627 / .0753 on natural64 alone (training/README.md).
    general) data="$DATA/natural64,$DATA/natural128*4"; extra=(--flips false --steps 1500); limit=(--limit 200) ;;
    *) echo "unknown family $family" >&2; exit 2 ;;
esac
run="$RUNS/$family"
train=${TRAIN:-.venv/bin/divcolor-train}
# Every head looks through its family's shared backbone (training/recipes/backbone_defaults.sh),
# whose encoder maps the feature cache already holds.
"$train" vae --data "$data" --out "$run" --preset cpu --backbone-file "$MODELS/backbone_${family}_lite0.safetensors" \
    --threads 2 "${extra[@]}" "$@"
"$train" mdn --data "$data" --out "$run" --preset cpu "$@"
"$train" export --out "$run" --method vae-mdn --half --dest "$MODELS/vae_mdn_$family.safetensors"
# Judged on the test split the issue names (natural128 for natural photos), beside the grey and
# true-tint baselines; contact sheets on the test split and on the historical photos.
test_data="$DATA/natural128"; [ "$family" = faces ] && test_data="$DATA/lfw64"
"$train" eval --checkpoint "$MODELS/vae_mdn_$family.safetensors" --data "$test_data" "${limit[@]}" \
    --json "$RESULTS/vae_mdn_${family}_eval.json" --sheet "$RESULTS/vae_mdn_${family}_test.jpg" --demo "$DATA/bw_demo"
