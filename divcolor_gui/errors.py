"""How any failure is put into words for the user (dialogs, gallery tiles, status bar)."""

from __future__ import annotations

from engine.errors import DivcolorError, OutOfMemory

OUT_OF_MEMORY_TEXT = (
    "divcolor ran out of memory. Ask for fewer samples (the gallery's count), or open a smaller "
    "version of the photo; closing other programs also helps. Your work is still open."
)

# What allocators say when they fail: torch's CPU allocator raises a RuntimeError
# ("DefaultCPUAllocator: can't allocate memory: you tried to allocate … bytes" or "not enough
# memory"), CUDA and MPS say "out of memory"; numpy raises a MemoryError subclass.
_OOM_WORDS = ("can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory",
              "defaultcpuallocator", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for every way running out of memory reaches Python (Python, numpy, torch CPU/GPU)."""
    if isinstance(exc, (MemoryError, OutOfMemory)):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch here
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(w in text for w in _OOM_WORDS)
    return False


def user_facing(exc: BaseException) -> BaseException:
    """The exception to hand to the GUI for ``exc``: out of memory becomes one
    :class:`~engine.errors.OutOfMemory` with a sentence saying what to do, and nothing of the
    failed call (its traceback and the frames that hold the arrays that did not fit) is kept,
    so the memory is free again before the dialog shows. Anything else is returned as is."""
    if not is_out_of_memory(exc):
        return exc
    exc.__traceback__ = None
    return OutOfMemory(str(exc) if isinstance(exc, OutOfMemory) else OUT_OF_MEMORY_TEXT)


def error_text(exc: BaseException) -> str:
    """User-facing errors verbatim; anything else is a bug, said plainly with what to do."""
    if isinstance(exc, DivcolorError):
        return str(exc)
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY_TEXT
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}. Check the folder exists and you can write to it."
    return (
        f"Something went wrong inside divcolor ({type(exc).__name__}: {exc}). Your work is still open; "
        "try again, and please report this with the steps that led to it."
    )
