#!/usr/bin/env bash
# Trains a shipped backbone: `bash training/recipes/backbone_defaults.sh general|faces [extra flags]`.
# The run directory lives outside the work tree (RUNS, default the platformdirs data dir), so a
# cut-off run resumes when this script is started again; with the run directory gone, pass
# `--init resources/models/backbone_<family>.safetensors` to warm-start from the committed weights.
# faces fine-tunes the general backbone on lfw64 (its run starts from the general file in MODELS).
set -euo pipefail
cd "$(dirname "$0")/../.."
family=${1:?general or faces}; shift || true
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-$HOME/.local/share/divcolor/runs}
MODELS=${MODELS:-resources/models}  # where the exported files go (cpu_round.sh stages them elsewhere)
RESULTS=${RESULTS:-docs/results}  # eval JSON and contact sheets
train=${TRAIN:-.venv/bin/divcolor-train}
case "$family" in
    general) data="$DATA/natural64,$DATA/natural128,$DATA/cifar10"; extra=(--steps 16000) ;;
    faces)   data="$DATA/lfw64"; extra=(--steps 3000 --lr 3e-4 --warmup 100 --init "$MODELS/backbone_general.safetensors") ;;
    *) echo "unknown family $family" >&2; exit 2 ;;
esac
run="$RUNS/backbone-$family"
# --precision auto: bf16 where the CPU has it natively (AVX512-BF16/AMX: bf16 + channels-last 1.5x
# fp32 on the AMD EPYC box), fp32 elsewhere (emulated bf16 ran at 0.32x fp32 on an Intel Xeon
# without it; pass --channels-last false there: 0.94x). benchmarks/bench_backbone_train.py measures it.
"$train" backbone --data "$data" --out "$run" --preset cpu --precision auto --channels-last true --threads 2 \
    --log-every 50 "${extra[@]}" "$@"
"$train" export --out "$run" --half --dest "$MODELS/backbone_$family.safetensors"
test_data="$DATA/natural128"; [ "$family" = faces ] && test_data="$DATA/lfw64"
"$train" eval --checkpoint "$MODELS/backbone_$family.safetensors" --data "$test_data" \
    --json "$RESULTS/backbone_${family}_eval.json" --sheet "$RESULTS/backbone_${family}_test.jpg" \
    --demo "$DATA/bw_demo"
