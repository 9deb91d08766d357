#!/usr/bin/env bash
# Installs divcolor (only when pyproject.toml changed since the last install) and opens the app
# on the shipped default models. Before opening a window it checks that Qt's X11 plugin has
# its system libraries and, if not, prints the one apt-get/dnf line that installs them.
# Extra arguments go to `divcolor`, e.g. `scripts/run.sh colorize photo.jpg -o out/`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh -e .
case "${1:-}" in
    colorize | -h | --help | --version) ;;  # headless: no window, no Qt platform plugin
    *) bash scripts/check_qt_libs.sh || exit 1 ;;
esac
exec .venv/bin/divcolor "$@"
