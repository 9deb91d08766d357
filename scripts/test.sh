#!/usr/bin/env bash
# Installs divcolor with its test extra and runs the test suite (offscreen, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh -e ".[test]"
export QT_QPA_PLATFORM=offscreen
exec .venv/bin/python -m pytest "$@"
