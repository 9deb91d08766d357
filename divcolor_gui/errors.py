"""How any failure is put into words for the user (dialogs, gallery tiles, status bar)."""

from __future__ import annotations

from engine.errors import DivcolorError


def error_text(exc: BaseException) -> str:
    """User-facing errors verbatim; anything else is a bug, said plainly with what to do."""
    if isinstance(exc, DivcolorError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "There is not enough memory for this. Close other programs, or use a smaller photo or fewer samples."
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}. Check the folder exists and you can write to it."
    return (
        f"Something went wrong inside divcolor ({type(exc).__name__}: {exc}). Your work is still open; "
        "try again, and please report this with the steps that led to it."
    )
