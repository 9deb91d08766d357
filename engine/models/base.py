"""What every model file has in common: a config dataclass stored in the checkpoint's metadata,
and inference parts whose weights are checked against that config before anything runs.

One loader for all methods, so a wrong, foreign or mismatched file fails the same way (and with
the same kind of message) whatever the method.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from ..checkpoint import Checkpoint, check_state_dict, load_checkpoint
from ..errors import CheckpointError

C = TypeVar("C", bound="ModelConfig")
M = TypeVar("M", bound="LoadableModel")


class ModelConfig:
    """Mixin for config dataclasses: dict round trip that refuses fields it does not know
    (a newer file's config must not be silently half-applied)."""

    LABEL: ClassVar[str] = "model"

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.LABEL} config fields: {sorted(unknown)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError if the fields do not describe a buildable network."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


class LoadableModel(torch.nn.Module):
    """Base of the method classes: ``from_checkpoint`` is the only loader (nanoGPT-style: the
    file's config rebuilds the exact network). Subclasses set METHOD, CONFIG, LABEL and
    INFERENCE_PARTS (the sub-modules an exported file holds)."""

    METHOD: ClassVar[str]
    CONFIG: ClassVar[type]
    LABEL: ClassVar[str]
    INFERENCE_PARTS: ClassVar[tuple[str, ...]]
    REPORTS_PROGRESS: ClassVar[bool] = False  # colorize() takes progress= and cancel= (slow samplers)
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
            raise CheckpointError(f"'{name}' has an invalid {cls.LABEL} config: {e}") from e
        model = cls.for_inference(cfg)
        for part in cls.INFERENCE_PARTS:
            check_state_dict(getattr(model, part), ck.subset(part), name, part)
        model.meta = ck.meta
        return model.eval()

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        """What an exported checkpoint holds: the inference parts' weights."""
        return {f"{p}.{k}": v for p in self.INFERENCE_PARTS for k, v in getattr(self, p).state_dict().items()}
