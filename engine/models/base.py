"""What every model file has in common: a config dataclass stored in the checkpoint's metadata,
and inference parts whose weights are checked against that config before anything runs.

One loader for all methods, so a wrong, foreign or mismatched file fails the same way (and with
the same kind of message) whatever the method.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, Field, asdict, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from ..checkpoint import _REMEDY, Checkpoint, check_state_dict, json_type, load_checkpoint, state_dict_mismatch
from ..errors import CheckpointError

C = TypeVar("C", bound="ModelConfig")
M = TypeVar("M", bound="LoadableModel")


MAX_INT_FIELD = 1 << 16  # no size, width or count of any divcolor network comes near this
# Weights and buffers a model file may describe (~1.6 GB as float32): 20x the paper-size PIC,
# far below what a damaged width would ask for (a width of 10^6 is terabytes).
MAX_ELEMENTS = 400_000_000


def _field_range(f: Field, ranges: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The allowed closed range of a numeric field: declared (``RANGES`` or field metadata
    ``range``), else implied by its default: a positive default is a size, count or scale,
    so zero and negatives are refused; ints are capped at MAX_INT_FIELD."""
    if f.name in ranges:
        return ranges[f.name]
    if "range" in f.metadata:
        return f.metadata["range"]
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return None
    if isinstance(default, int):
        return (1 if default >= 1 else 0 if default >= 0 else -MAX_INT_FIELD, MAX_INT_FIELD)
    return (0.0, math.inf) if default >= 0 else None


def check_config_values(cls: type, d: Any) -> None:
    """Check a config dict from a file against the dataclass ``cls`` before anything is built:
    a JSON object, known field names, each value of its field's type and in its range.

    Raises ValueError with a message naming the field, the value and what was expected.
    """
    label = getattr(cls, "LABEL", "model")
    if not isinstance(d, dict):
        raise ValueError(f"the {label} config is {json_type(d)}, not an object of settings")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known), key=str)
    if unknown:
        raise ValueError(f"unknown {label} config fields: {unknown}")
    hints = typing.get_type_hints(cls)
    ranges: dict[str, tuple[float, float]] = getattr(cls, "RANGES", {})
    for name, value in d.items():
        kind = hints.get(name)
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"'{name}' is {shown} ({json_type(value)}), but must be true or false")
            continue
        if kind is str:
            if not isinstance(value, str):
                raise ValueError(f"'{name}' is {shown} ({json_type(value)}), but must be a string")
            continue
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"'{name}' is {shown} ({json_type(value)}), but must be a whole number")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"'{name}' is {shown} ({json_type(value)}), but must be a number")
            if not math.isfinite(value):
                raise ValueError(f"'{name}' is {shown}, but must be a finite number")
        else:
            continue  # other field types are checked by the config's own validate()
        bounds = _field_range(known[name], ranges)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            lo, hi = bounds
            want = f"at least {lo:g}" if hi == math.inf else f"between {lo:g} and {hi:g}"
            raise ValueError(f"'{name}' is {shown}, but must be {want}")


class ModelConfig:
    """Mixin for config dataclasses: dict round trip that refuses fields it does not know
    (a newer file's config must not be silently half-applied) and values of the wrong type or
    out of range (a file's config must never reach a constructor unchecked).

    Numeric ranges come from ``RANGES`` (field name -> (low, high)), a field's ``range``
    metadata, or else its default (see ``_field_range``).
    """

    LABEL: ClassVar[str] = "model"
    RANGES: ClassVar[dict[str, tuple[float, float]]] = {}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        check_config_values(cls, d)
        cfg = cls(**{k: float(v) if isinstance(v, int) and _is_float_field(cls, k) else v for k, v in d.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError if the fields do not describe a buildable network."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


def _is_float_field(cls: type, name: str) -> bool:
    return typing.get_type_hints(cls).get(name) is float


class LoadableModel(torch.nn.Module):
    """Base of the method classes: ``from_checkpoint`` is the only loader (nanoGPT-style: the
    file's config rebuilds the exact network). Subclasses set METHOD, CONFIG, LABEL and
    INFERENCE_PARTS (the sub-modules an exported file holds)."""

    METHOD: ClassVar[str]
    CONFIG: ClassVar[type]
    LABEL: ClassVar[str]
    INFERENCE_PARTS: ClassVar[tuple[str, ...]]
    REPORTS_PROGRESS: ClassVar[bool] = False  # colorize() takes progress= and cancel= (slow samplers)
    # A batch of n costs about what one sample does, so the app asks for the whole batch in one
    # call; otherwise one call per sample, each shown as soon as it is ready.
    BATCH_AT_ONCE: ClassVar[bool] = False
    meta: dict[str, Any]

    @classmethod
    def for_inference(cls: type[M], cfg: Any) -> M:
        """The network an exported file fills (without training-only parts)."""
        return cls(cfg)

    @classmethod
    def from_checkpoint(cls: type[M], path: str | Path) -> M:
        return cls.from_loaded(load_checkpoint(path, cls.METHOD), Path(path).name)

    @classmethod
    def from_loaded(cls: type[M], ck: Checkpoint, name: str) -> M:
        """Build from an already read file, checking its method, config and every weight."""
        if ck.method != cls.METHOD:
            raise CheckpointError(f"'{name}' is a '{ck.method or 'unknown'}' model, but a '{cls.METHOD}' model was expected.")
        try:
            cfg = cls.CONFIG.from_dict(ck.config)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"'{name}' has an invalid {cls.LABEL} config: {e}; {_REMEDY}.") from e
        cls._check_before_building(cfg, ck, name)
        model = cls.for_inference(cfg)
        for part in cls.INFERENCE_PARTS:
            check_state_dict(getattr(model, part), ck.subset(part), name, part)
        model.meta = ck.meta
        return model.eval()

    @classmethod
    def _check_before_building(cls, cfg: Any, ck: Checkpoint, name: str) -> None:
        """Build the network on the meta device (shapes only, nothing allocated) to check its
        size and its tensors against the file before the real build allocates anything: a
        damaged width once made loading ask for terabytes."""
        try:
            with torch.device("meta"):
                shell = cls.for_inference(cfg)
        except (TypeError, ValueError, RuntimeError, ZeroDivisionError, OverflowError) as e:
            raise CheckpointError(f"'{name}': its {cls.LABEL} config describes no network divcolor can build ({e}); {_REMEDY}.") from e
        elements = sum(t.numel() for t in shell.parameters()) + sum(t.numel() for t in shell.buffers())
        if elements > MAX_ELEMENTS:
            raise CheckpointError(
                f"'{name}': its {cls.LABEL} config describes a network of {elements:,} weights "
                f"({elements * 4 / 2**30:,.1f} GiB), more than divcolor loads ({MAX_ELEMENTS:,}); the file is damaged; {_REMEDY}."
            )
        for part in cls.INFERENCE_PARTS:
            problem = state_dict_mismatch(getattr(shell, part).state_dict(), ck.subset(part))
            if problem:
                raise CheckpointError(f"'{name}': the {part} weights do not match its config: {problem}; {_REMEDY}.")

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        """What an exported checkpoint holds: the inference parts' weights."""
        return {f"{p}.{k}": v for p in self.INFERENCE_PARTS for k, v in getattr(self, p).state_dict().items()}
