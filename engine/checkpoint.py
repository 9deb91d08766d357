"""Model files: ``.safetensors`` weights plus JSON metadata in the safetensors header.

Never pickle: a model file from the internet must not be able to run code. Loading checks the
format version, the method, the config and that every expected tensor is present with the
right shape, and says in plain words what is wrong otherwise.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .errors import CheckpointError
from .files import current_umask

FORMAT_VERSION = 1
_META_KEY = "divcolor"
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, zip (torch.save)


@dataclass
class Checkpoint:
    """Weights and metadata of one trained model (or one training state)."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.meta.get("method", "")

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})

    def subset(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix.`` with the prefix stripped (a module's state_dict)."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.tensors.items() if k.startswith(p)}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash mid-write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "created": now_iso(), **meta}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta)})
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a model file is as shareable as any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, method: str | None = None) -> Checkpoint:
    """Read and validate a model file; ``method`` (e.g. "vae-mdn") is checked when given."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise CheckpointError(f"Model file '{path}' does not exist.")
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    looks_safetensors = len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size
    if not looks_safetensors and (path.suffix in {".pt", ".pth", ".ckpt", ".pkl"} or head.startswith(_PICKLE_MAGIC)):
        raise CheckpointError(
            f"'{name}' looks like a pickled PyTorch file. divcolor only loads .safetensors "
            "model files, because pickles can run arbitrary code; export the model with "
            "`divcolor-train export`."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"'{name}' is not a valid .safetensors file (corrupt or truncated?): {e}") from e
    if _META_KEY not in header:
        raise CheckpointError(f"'{name}' is a safetensors file but not a divcolor model (no divcolor metadata).")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"'{name}' has corrupt metadata: {e}") from e
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"'{name}' has no format version; it was not written by divcolor.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{name}' was written by a newer divcolor (model format {version}, this version reads "
            f"up to {FORMAT_VERSION}); update divcolor to load it."
        )
    if method is not None and meta.get("method") != method:
        raise CheckpointError(
            f"'{name}' is a '{meta.get('method', 'unknown')}' model, but a '{method}' model was expected."
        )
    return Checkpoint(tensors, meta)


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str, what: str) -> None:
    """Load ``state`` into ``module`` strictly, turning mismatches into a CheckpointError."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch for {k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
        raise CheckpointError(f"'{name}': the {what} weights do not match its config: " + "; ".join(parts) + ".")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
