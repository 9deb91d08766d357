#!/usr/bin/env bash
# Every shipped model on one GPU in about ten minutes: the backbones (general, then faces
# fine-tuned from it) and the five heads on them, at the papers' widths (`--preset paper`).
#
#   bash training/recipes/gpu_all.sh DATA_DIR OUT_DIR
#
# DATA_DIR holds natural64_train_00/01, natural64_test_00, lfw64_train_00 and lfw64_test_00 (about
# 60 MiB: small enough to carry with the work tree to a borrowed GPU box). OUT_DIR receives the
# run directories and models/ with the exported files; copy those that beat the CPU models (see
# their eval JSON beside them) into resources/models/ together — heads only work with the
# backbone they were trained on. Reruns resume. Step counts are env knobs (BACKBONE_STEPS, …).
#
# DRY_RUN=1 runs every command for two steps on the CPU with a handful of images: the test suite
# does that (tests/test_recipes.py), so this script cannot rot between the rare GPU sessions. The
# heads' commands are the same for both families, so a dry run trains the general family's only
# (paper-width heads are slow even for two steps on a CPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?DATA_DIR}; OUT=${2:?OUT_DIR}
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DIVCOLOR_CACHE=${DIVCOLOR_CACHE:-$OUT/cache}
if [ "${DRY_RUN:-0}" = 1 ]; then
    common=(--device cpu --threads 1 --limit 12 --batch-size 4 --log-every 1)
    BACKBONE_STEPS=2 FACES_STEPS=2 VAE_STEPS=2 MDN_STEPS=2 GCRF_STEPS=2 HINTS_STEPS=2 PIC_STEPS=2
    evalopt=(--limit 2 --samples 2)
    tune=(--tune-images 2 --hint-tune-images 2 --beta-tune-images 2)  # G-CRF tuning: 4096² inverses per image
    pic_tune=(--tune-images 2)  # PIC's temperature: 7 temperatures x 2 raster-order samples per image
    families=(general)
else
    common=(--device cuda --log-every 100)
    evalopt=(--limit 500)
    tune=()
    pic_tune=()
    families=(general faces)
fi
train() { "$PY" -m training.cli "$@"; }
runs="$OUT/runs"; models="$OUT/models"; mkdir -p "$models"
nat="$DATA/natural64"; faces="$DATA/lfw64"

# Backbones: general on natural photos, faces fine-tuned from it.
train backbone --data "$nat" --out "$runs/backbone-general" --preset paper --steps "${BACKBONE_STEPS:-6000}" "${common[@]}"
train export --out "$runs/backbone-general" --half --dest "$models/backbone_general.safetensors"
train backbone --data "$faces" --out "$runs/backbone-faces" --preset paper --steps "${FACES_STEPS:-1000}" --lr 3e-4 \
    --warmup 50 --init "$models/backbone_general.safetensors" "${common[@]}"
train export --out "$runs/backbone-faces" --half --dest "$models/backbone_faces.safetensors"

for family in "${families[@]}"; do
    data=$nat; [ "$family" = faces ] && data=$faces
    bb="$models/backbone_$family.safetensors"
    run="$runs/$family"
    train vae --data "$data" --out "$run" --preset paper --steps "${VAE_STEPS:-3000}" --backbone-file "$bb" "${common[@]}"
    train mdn --data "$data" --out "$run" --preset paper --steps "${MDN_STEPS:-3000}" "${common[@]}"
    train export --out "$run" --dest "$models/vae_mdn_$family.safetensors"
    grun="$runs/$family-gcrf"
    train gcrf-unary --data "$data" --out "$grun" --init-from "$run"
    train gcrf-mdn --data "$data" --out "$grun" --preset paper --steps "${MDN_STEPS:-3000}" "${common[@]}"
    train gcrf-hoc --data "$data" --out "$grun" --preset paper --steps "${GCRF_STEPS:-2000}" "${common[@]}"
    train gcrf-hints --data "$data" --out "$grun" --steps "${HINTS_STEPS:-2000}" "${common[@]}"
    train export --out "$grun" --data "$data" --half "${tune[@]}" --dest "$models/gcrf_$family.safetensors"
done
# PIC at the backbone's 64 px (the paper's 128 px needs a 128 px backbone).
train pic --data "$nat" --out "$runs/general-pic" --preset paper --size 64 --subsample 2 --steps "${PIC_STEPS:-4000}" \
    --backbone-file "$models/backbone_general.safetensors" "${common[@]}"
train export --out "$runs/general-pic" --half "${pic_tune[@]}" --dest "$models/pic_general.safetensors"

for m in pic_general "${families[@]/#/vae_mdn_}" "${families[@]/#/gcrf_}"; do
    data=$nat; case $m in *faces) data=$faces ;; esac
    train eval --checkpoint "$models/$m.safetensors" --data "$data" "${evalopt[@]}" --json "$models/${m}_eval.json"
done
echo "models in $models"
