"""The colorization methods, found by module: adding a method is adding one module here.

A method module defines ``MODEL``, a :class:`~engine.models.base.LoadableModel` subclass that
implements :class:`engine.types.SamplingModel`; its ``METHOD`` names it in checkpoints and
``LABEL`` in the app. :func:`registry` imports every module of this package once and collects
them; modules without ``MODEL`` (shared parts: ``base``, the backbone) are skipped.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

__all__ = ["registry", "model_class", "labels"]


@lru_cache(maxsize=1)
def registry() -> dict[str, type]:
    """{method name: model class}, in the order the app lists methods (``ORDER``, then the rest)."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        cls = vars(module).get("MODEL")
        if cls is not None:
            found[cls.METHOD] = cls
    first = [m for m in ORDER if m in found]
    return {m: found[m] for m in [*first, *sorted(set(found) - set(first))]}


ORDER = ("vae-mdn", "pic", "gcrf")
"""Display order of the shipped methods (the others follow, by name)."""


def model_class(method: str) -> type | None:
    """The class that loads ``method``'s files, or None if this divcolor has no such method."""
    return registry().get(method)


def labels() -> dict[str, str]:
    """{method: label shown to users}."""
    return {m: cls.LABEL for m, cls in registry().items()}
