#!/usr/bin/env bash
# The next round of the CPU defaults (issue 12) as one background job: the general backbone
# trained on from the shipped one, then every head retrained on it, faces after general.
#
#   nohup setsid bash training/recipes/cpu_round.sh > ~/logs/round.log 2>&1 &
#
# Everything goes to a staging folder (STAGE, default the platformdirs data dir's staging/):
# runs/, models/ and results/ (eval JSON and contact sheets, beside the baselines). Nothing in
# the work tree changes: a head refuses any backbone but its own, so a family's backbone and
# heads replace the shipped files together, and only once they are all done and beat them (compare
# STAGE/results/*_eval.json with docs/results/, then copy the family's files into
# resources/models/ and rerun the recipes' eval lines into docs/results/).
# Each recipe resumes from its run directory, so after a kill (or the end of a session) starting
# this script again goes on where it stopped; finished stages are skipped. Knobs: BACKBONE_STEPS
# (the general backbone's, default 9000), BACKBONE_FLAGS
# (e.g. "--channels-last false" on a CPU without native bf16), VAE_FLAGS, GCRF_FLAGS, PIC_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${STAGE:-$HOME/.local/share/divcolor/staging}
export RUNS="$STAGE/runs" MODELS="$STAGE/models" RESULTS="$STAGE/results"
mkdir -p "$RUNS" "$MODELS" "$RESULTS"
r=training/recipes
# The *_FLAGS knobs are word lists: unquoted on purpose.
# 9000 steps, not the first defaults' 16000: the heads are retrained on the new backbone a
# session sooner, and the batch loss stayed flat over the first 3650 steps at the peak rate,
# so what this round gains is expected from the decay. (A resumed run takes the new total.)
# A fresh machine has lost the staging runs: SAVED (a folder outside the repository, e.g. a
# release asset unpacked; none by default) may hold what an earlier round finished, which is then
# taken instead of being trained again (hours), but only where what it was trained on was taken
# too (a head refuses any backbone but its own), and VAE-MDN only with the G-CRF of its family
# (G-CRF starts from VAE-MDN's run directory).
SAVED=${SAVED:-}
fresh() { for d in "$@"; do [ ! -e "$RUNS/$d" ] || return 1; done; }
take() {  # take NAME...: all of SAVED/NAME.safetensors (and their evals) into MODELS, or none
    [ -n "$SAVED" ] || return 1
    for n in "$@"; do [ -f "$SAVED/$n.safetensors" ] || return 1; done
    for n in "$@"; do
        cp "$SAVED/$n.safetensors" "$MODELS/$n.safetensors"
        if [ -f "$SAVED/${n}_eval.json" ]; then cp "$SAVED/${n}_eval.json" "$RESULTS/"; fi
        echo "$n: the round's committed file ($SAVED), not retrained"
    done
}
general=0; faces=0  # 1: the family's backbone came from SAVED
if fresh backbone-general && take backbone_general; then general=1; else
    bash $r/backbone_defaults.sh general --init resources/models/backbone_general.safetensors --lr 5e-4 \
        --steps ${BACKBONE_STEPS:-9000} ${BACKBONE_FLAGS:-}
fi
if [ $general = 1 ] && fresh general general-gcrf && take vae_mdn_general gcrf_general; then :; else
    bash $r/vae_mdn_defaults.sh general ${VAE_FLAGS:---steps 1500}
    HINTS_STEPS=${HINTS_STEPS:-3000} bash $r/gcrf_defaults.sh general ${GCRF_FLAGS:---threads 2}
fi
if [ $general = 1 ] && fresh general-pic && take pic_general; then :; else
    bash $r/pic_defaults.sh ${PIC_FLAGS:-}
fi
if [ $general = 1 ] && fresh backbone-faces && take backbone_faces; then faces=1; else
    bash $r/backbone_defaults.sh faces ${BACKBONE_FLAGS:-}
fi
if [ $faces = 1 ] && fresh faces faces-gcrf && take vae_mdn_faces gcrf_faces; then :; else
    bash $r/vae_mdn_defaults.sh faces ${VAE_FLAGS:---steps 1500}
    HINTS_STEPS=${FACES_HINTS_STEPS:-600} bash $r/gcrf_defaults.sh faces ${GCRF_FLAGS:---threads 2}
fi
echo "round staged in $MODELS (evaluations in $RESULTS)"
