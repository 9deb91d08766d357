"""Stage configuration: one dataclass per stage is the single source of its defaults.

``divcolor-train STAGE --help`` is generated from the dataclass; presets (``cpu``, ``paper``)
are named dicts of overrides over the same fields, never copies of code.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar


@dataclass
class StageConfig:
    data: str = ""  # shard prefix (e.g. ../shared/data/lfw64), .npz file or image folder
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


def config_from_args(cls: type[StageConfig], args: argparse.Namespace) -> StageConfig:
    values: dict[str, Any] = {}
    if args.preset:
        values.update(cls.PRESETS[args.preset])
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return cls(**values)


def _parse_bool(s: str) -> bool:
    if s.lower() in {"1", "true", "yes", "on"}:
        return True
    if s.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")
