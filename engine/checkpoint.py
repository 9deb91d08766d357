"""Model files: ``.safetensors`` weights plus JSON metadata in the safetensors header.

Never pickle: a model file from the internet must not be able to run code. Loading checks the
format version, the method, the config and that every expected tensor is present with the
right shape, and says in plain words what is wrong otherwise.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .errors import CheckpointError
from .files import atomic_path

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
    with atomic_path(path) as tmp:  # engine.files: whole or not at all, no litter
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta)})
    return path


_REMEDY = "pick another model file, or export it again with `divcolor-train export`"
# Top-level metadata keys whose JSON type the engine relies on; other keys are informational.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,),
    "config": (dict,),
    "statistics": (dict,),
    "sampling": (dict,),
    "metrics": (dict, type(None)),
    "optimizer": (dict,),
    "step": (int,),
    "finished": (bool,),
}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true/false", type(None): "null"}


def json_type(value: Any) -> str:
    """How a JSON value's type reads in a message ("a list", "a string", …)."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _check_meta(meta: Any, name: str) -> dict[str, Any]:
    """The metadata's shape, checked before any code trusts it (a list where an object belongs
    used to surface as an AttributeError deep in the loader)."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"'{name}' has damaged metadata ({json_type(meta)} instead of an object); {_REMEDY}.")
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or (bool not in types and isinstance(meta[key], bool))):
            raise CheckpointError(
                f"'{name}' has damaged metadata: '{key}' is {json_type(meta[key])}, which divcolor never writes; {_REMEDY}."
            )
    if isinstance(meta.get("step"), int) and meta["step"] < 0:
        raise CheckpointError(f"'{name}' has damaged metadata: step {meta['step']} is negative; {_REMEDY}.")
    temperature = meta.get("sampling", {}).get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < 1e3:
        raise CheckpointError(
            f"'{name}' has damaged metadata: sampling temperature {temperature!r} is not a positive number; {_REMEDY}."
        )
    return meta


def _check_finite(tensors: dict[str, torch.Tensor], name: str) -> None:
    """NaN or infinite weights would load fine and colour every photo grey or black: refuse them."""
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"'{name}' holds {bad} non-finite values (NaN or infinity) in '{key}': the training run that wrote "
                f"it diverged or the file is damaged; {_REMEDY}."
            )


def load_checkpoint(path: str | Path, method: str | None = None) -> Checkpoint:
    """Read and validate a model file; ``method`` (e.g. "vae-mdn") is checked when given.

    Only the safetensors format is read (a header of JSON and raw tensor bytes), so nothing in
    the file is ever executed. Every failure is a CheckpointError whose message says what is
    wrong and what to do about it.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise CheckpointError(f"Model file '{path}' does not exist.")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"Model file '{path}' cannot be read ({e.strerror or e}); check its permissions.") from e
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
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError, MemoryError) as e:
        raise CheckpointError(
            f"'{name}' is not a valid .safetensors file (corrupt or truncated?): {e}; download or export it again."
        ) from e
    if _META_KEY not in header:
        raise CheckpointError(f"'{name}' is a safetensors file but not a divcolor model (no divcolor metadata).")
    try:
        meta = json.loads(header[_META_KEY])
    except (ValueError, RecursionError) as e:  # JSONDecodeError, 400-digit numbers, nesting too deep
        raise CheckpointError(f"'{name}' has corrupt metadata ({type(e).__name__}: {str(e)[:120]}); {_REMEDY}.") from e
    meta = _check_meta(meta, name)
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
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
    _check_finite(tensors, name)
    return Checkpoint(tensors, meta)


def state_dict_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """What differs between a module's expected tensors and a file's ("" when they match).

    Works on shapes alone, so ``expected`` may come from a module built on the meta device
    (nothing allocated) before the real one is built.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"shape mismatch for {k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
    return "; ".join(parts)


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str, what: str) -> None:
    """Load ``state`` into ``module`` strictly, turning mismatches into a CheckpointError."""
    expected = module.state_dict()
    problem = state_dict_mismatch(expected, state)
    if problem:
        raise CheckpointError(f"'{name}': the {what} weights do not match its config: {problem}; {_REMEDY}.")
    _check_number_kind(expected, state, name, what)
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def _check_number_kind(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], name: str, what: str) -> None:
    """Weights stored as whole numbers (int32, bool) where the network computes with fractions
    would be cast on load and lose everything below 1: the file loads and colours every photo
    flat grey. Refuse them, as non-finite weights are; float16 or bfloat16 is a fine storage."""
    wrong = sorted(k for k in expected if expected[k].is_floating_point() and not state[k].is_floating_point())
    if wrong:
        dtype = str(state[wrong[0]].dtype).removeprefix("torch.")
        raise CheckpointError(
            f"'{name}' stores {len(wrong)} of its {what} weight tensors as whole numbers ({dtype}, e.g. '{wrong[0]}') "
            f"where the network needs floating-point values, so every result would be flat grey; the file was "
            f"damaged or converted by another tool; {_REMEDY}."
        )
