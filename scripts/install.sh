#!/usr/bin/env bash
# Creates .venv beside the project and installs divcolor into it.
# Torch goes in first, pinned to 2.13.0, only when the venv has none: that pin is the
# CPU build available offline on our machines; with internet, pip fetches the same release.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet "$@"
