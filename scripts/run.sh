#!/usr/bin/env bash
# Installs divcolor (if needed) and opens the app on the shipped default models.
# Extra arguments go to `divcolor`, e.g. `scripts/run.sh colorize photo.jpg -o out/`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh .
exec .venv/bin/divcolor "$@"
