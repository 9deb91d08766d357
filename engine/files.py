"""File-system details shared by everything that writes files (photos, model files)."""

from __future__ import annotations

import os


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back): files written
    through a temporary file + rename get the mode a plain ``open(…, "w")`` would have given."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
