"""Stage configuration: one dataclass per stage is the single source of its defaults.

``divcolor-train STAGE --help`` is generated from the dataclass; presets (``cpu``, ``paper``)
are named dicts of overrides over the same fields, never copies of code.

Every value is checked at the boundary (``config_from_args``), so a bad setting is answered by
one sentence naming the flag, the value and the fix, never by a traceback from deep inside a
stage (``--batch-size 0`` used to fail in the sampler, ``--steps -5`` "finished" at step 0).
Ranges live in ``FIELD_RANGES`` (by field name: the run-control fields every stage has and
fields several stages declare with one meaning) or in a field's metadata
(``field(default=…, metadata={"range": Range(…)})``); other numeric fields get a range implied
by their default (see ``range_of``).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import MISSING, Field, asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import ConfigError, DataError


@dataclass(frozen=True)
class Range:
    """A closed (or, with ``low_open``, half-open) numeric range for a setting."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False

    def contains(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return (v > self.low if self.low_open else v >= self.low) and v <= self.high

    def describe(self) -> str:
        lo = f"greater than {num(self.low)}" if self.low_open else f"at least {num(self.low)}"
        if self.high == math.inf:
            return f"a finite number {lo}" if self.low_open or isinstance(self.low, float) else lo
        if self.low == -math.inf:
            return f"at most {num(self.high)}"
        if self.low_open:
            return f"{lo} and at most {num(self.high)}"
        return f"between {num(self.low)} and {num(self.high)}"


def num(x: float) -> str:
    """A number as a person reads it: whole numbers in full, others in short form."""
    if isinstance(x, int) or (math.isfinite(x) and x == int(x) and abs(x) < 1e15):
        return str(int(x))
    return f"{x:g}"


MAX_SEED = 2**32 - 1  # the loop seeds torch with seed * 1_000_003 + step: larger seeds overflow it
MAX_COUNT = 1 << 16  # widths, sizes, components: no divcolor network comes near this
MAX_STEPS = 10**9

# Fields that several stages declare with the same meaning (by name, so a stage that redeclares
# a field with its own default, e.g. ``steps: int = 2000``, keeps the range).
FIELD_RANGES: dict[str, Range] = {
    "seed": Range(0, MAX_SEED),
    "steps": Range(1, MAX_STEPS),
    "batch_size": Range(1, MAX_COUNT),
    "log_every": Range(1, MAX_STEPS),
    "checkpoint_minutes": Range(0.0, 1e6),
    "max_minutes": Range(0.0, 1e9),
    "stop_after": Range(0, MAX_STEPS),
    "limit": Range(0, 10**9),
    "threads": Range(0, 1024),
    "lr": Range(0.0, 10.0, low_open=True),
    "decoder_lr": Range(0.0, 10.0, low_open=True),
    "dropout": Range(0.0, 0.99),
    "polyak": Range(0.0, 1.0),
    "lr_decay": Range(0.0, 1.0, low_open=True),
    "kl_weight": Range(0.0, 1e6),
    "mdn_sigma": Range(0.0, 10.0, low_open=True),
    "beta_train": Range(0.0, 1e6, low_open=True),
    "beta_test": Range(0.0, 1e6, low_open=True),
    "stroke_base": Range(0.0, 1e6),
    "size": Range(8, 1024),
    "hoc_train_size": Range(4, 1024),
    "warmup": Range(0, MAX_STEPS),
    "weight_decay": Range(0.0, 10.0),
    "rebalance": Range(0.0, 1.0),
    "degrade": Range(0.0, 1.0),
    "min_crop": Range(0.0, 1.0, low_open=True),
    "ema": Range(0.0, 1.0),
    "blocks_s4": Range(0, 64),
    "blocks_s8": Range(0, 64),
    "blocks_dec": Range(0, 64),
    "encoder_size": Range(64, 512),
}


@dataclass
class StageConfig:
    data: str = ""  # shard prefix (e.g. ../shared/data/lfw64), .npz file or image folder; a stage that trains: a mix "a,b*4"
    out: str = ""  # run directory; rerunning the same command resumes there
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    log_every: int = 20
    checkpoint_minutes: float = 3.0  # save the training state this often
    max_minutes: float = 0.0  # stop (resumably) after this wall time; 0 = no limit
    stop_after: int = 0  # stop (resumably) after this many steps in this invocation; 0 = no limit
    limit: int = 0  # use only the first N training images (0 = all); for tests
    threads: int = 0  # torch CPU threads (0 = torch's default)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    HELP: ClassVar[dict[str, str]] = {}

    def public(self) -> dict[str, Any]:
        """The settings recorded in a checkpoint (the run directory is the user's business)."""
        d = asdict(self)
        d.pop("out", None)
        return d


def add_config_args(parser: argparse.ArgumentParser, cls: type[StageConfig]) -> None:
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        kind = type(default) if default is not None else str
        flag = "--" + f.name.replace("_", "-")
        help_ = cls.HELP.get(f.name, "") + f" (default: {default!r})"
        if kind is bool:
            parser.add_argument(flag, type=_parse_bool, default=None, metavar="BOOL", help=help_)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_)
    presets = ", ".join(cls.PRESETS) or "none"
    parser.add_argument("--preset", choices=list(cls.PRESETS) or None, default=None, help=f"named overrides: {presets}")


def config_from_args(cls: type[StageConfig], args: argparse.Namespace, check_paths: bool = True) -> StageConfig:
    """The stage config from parsed flags (over a preset, over the defaults), every value checked.

    Raises ConfigError with one sentence naming the flag, the value and the fix. With
    ``check_paths`` it also checks what the settings point at: the data exists, the run
    directory is writable, the device is there.
    """
    values: dict[str, Any] = {}
    if getattr(args, "preset", None):
        values.update(cls.PRESETS[args.preset])
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    cfg = cls(**values)
    check_values(cfg)
    if check_paths:
        check_device(cfg.device)
        check_data_path(cfg.data)
        check_out_dir(cfg.out)
    return cfg


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def range_of(f: Field) -> Range | None:
    """A field's range: its metadata, then FIELD_RANGES, then one implied by its default (ints:
    a positive default is a size or count, so at least 1; zero means "off", so at least 0;
    floats: a non-negative default means a non-negative, finite value)."""
    if "range" in f.metadata:
        return f.metadata["range"]
    if f.name in FIELD_RANGES:
        return FIELD_RANGES[f.name]
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return None
    if isinstance(default, int):
        return Range(1 if default >= 1 else 0 if default >= 0 else -MAX_COUNT, MAX_COUNT)
    return Range(0.0, math.inf) if default >= 0 else Range(-math.inf, math.inf)


def check_values(cfg: StageConfig) -> None:
    """Every numeric setting in its range, then the model config the stage would build."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        r = range_of(f)
        if r is not None and not r.contains(v):
            default = f.default if f.default is not MISSING else None
            hint = f" (the default is {num(default)})" if isinstance(default, (int, float)) and not isinstance(default, bool) else ""
            raise ConfigError(f"{flag(f.name)} {num(v)} is out of range: it must be {r.describe()}{hint}.")
    if cfg.device not in {"auto", "cpu", "cuda"} and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"--device {cfg.device!r} is not a device: use auto, cpu or cuda.")
    model_config = getattr(cfg, "model_config", None)
    if model_config is not None:
        try:
            model_config().validate()
        except TypeError:
            pass  # a stage whose model config needs an earlier stage's (gcrf-hoc): checked when built
        except ValueError as e:
            raise ConfigError(f"These settings describe no network divcolor can build: {e}; change the flag it names.") from e


def check_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available here; use --device cpu (or auto).")


def check_data_path(data: str) -> None:
    """``--data`` names an image folder, an .npz shard or a shard prefix with a train split
    (or several of them, comma-separated and each optionally weighted ``*K``: ``training.data.mix``)."""
    if "," in data or "*" in data:
        from .data import mix

        try:
            sets = mix(data)
        except DataError as e:
            raise ConfigError(str(e)) from None
        if len(sets) > 1 or sets[0][0] != data:
            for name, _ in sets:
                check_data_path(name)
            return
    if not data:
        raise ConfigError("--data is required: give a folder of images, an .npz shard or a shard prefix such as ../shared/data/lfw64.")
    p = Path(data)
    if p.is_dir() or (p.suffix == ".npz" and p.is_file()):
        return
    if p.suffix == ".npz":
        raise ConfigError(f"--data {data}: no such file; check the path.")
    if p.exists():
        raise ConfigError(f"--data {data} is a file, not a folder of images, an .npz shard or a shard prefix.")
    if not p.parent.is_dir():
        raise ConfigError(f"--data {data}: the folder {p.parent} does not exist; check the path.")
    if not any(p.parent.glob(f"{p.name}_*_*.npz")):
        raise ConfigError(
            f"--data {data}: no such folder, and no shards named {p.name}_<split>_*.npz in {p.parent}; check the path."
        )


def check_out_dir(out: str) -> None:
    """The run directory can be created and written (checked before hours of training)."""
    if not out:
        raise ConfigError("--out is required: the run directory where the stage keeps its state (rerun to resume).")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for the run (it is created if missing).")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"--out {out} cannot be written ({e.strerror or e}); choose a directory you can write to.") from e


def _parse_bool(s: str) -> bool:
    if s.lower() in {"1", "true", "yes", "on"}:
        return True
    if s.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")
