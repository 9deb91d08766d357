#!/usr/bin/env bash
# Creates .venv beside the project and installs divcolor into it (editable: the checkout is
# the code that runs, so a `git pull` needs no reinstall unless pyproject.toml changed).
# Torch goes in first, pinned to 2.13.0, only when the venv has none: that pin is the
# CPU build available offline on our machines; with internet, pip fetches the same release.
#
# The install is skipped when nothing changed since the last one with the same arguments:
# a stamp in .venv records the hash of pyproject.toml and the arguments, and the installed
# packages must still import. This is what makes the second `scripts/run.sh` instant.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

hash_of() { # stdin -> hex digest, with whichever tool the system has
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
    else shasum -a 256 | cut -d' ' -f1; fi
}

args_key=$(printf '%s\n' "$@" | hash_of | cut -c1-16)
stamp=".venv/.divcolor-install-$args_key"
want=$( { cat pyproject.toml; printf '%s\n' "$@"; } | hash_of)

if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && .venv/bin/python -c "import divcolor_gui, engine, training" >/dev/null 2>&1; then
    exit 0  # installed from this very pyproject.toml with these arguments: nothing to do
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
# pip's build backend prints pages of deprecation warnings: keep them for when something fails
if ! .venv/bin/python -m pip install --quiet "$@" 2> .venv/install.log; then
    cat .venv/install.log >&2
    exit 1
fi
printf '%s' "$want" > "$stamp"
