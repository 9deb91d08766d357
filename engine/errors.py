"""One exception type per user-facing failure; each message says what is wrong and what to do.

The GUI shows ``str(exc)`` in a dialog and the CLI prints it, so messages are written for a
person, not a developer.
"""


class DivcolorError(Exception):
    """Base of every error divcolor reports to a user."""


class UnsupportedImage(DivcolorError):
    """A photo could not be read (corrupt, truncated, empty, too large, unknown format)."""


class CheckpointError(DivcolorError):
    """A model file is missing, corrupt, of the wrong kind, or from a newer divcolor."""


class StrokesError(DivcolorError):
    """A strokes file or stroke list is malformed."""


class Cancelled(DivcolorError):
    """The user cancelled a long-running job."""


class OutOfMemory(DivcolorError):
    """The device ran out of memory; the message suggests fewer samples or the CPU."""


class ConfigError(DivcolorError):
    """A setting (flag, config value, project or strokes file field) is out of range or names
    something that does not exist; the message names the value and the fix."""


class DataError(DivcolorError):
    """Training or evaluation data cannot be used (missing, corrupt, too many bad images)."""


class TrainingError(DivcolorError):
    """Training cannot go on (the loss diverged); the message says how to resume."""
