"""One validator for the JSON files users hand to divcolor: project files and strokes files.

These files come from anywhere (hand-edited, truncated, written by a newer divcolor, fuzzed),
so nothing in them reaches the engine or the GUI before it has been checked here: the JSON
itself (size, nesting depth, numbers too long to be real), then every field against a
declared type and range. Each problem is answered by one sentence that names the field, the
value and the fix, as the error class the caller chose (the GUI's project error, the strokes
error), never by a RecursionError, an OverflowError or a half-opened project.

The ranges are the ones the app itself can produce (the gallery's controls), so any file the
app wrote passes, and a value outside them, such as ``"n": 2000`` samples (250 s at 8.4 GiB),
is refused before any work starts.

This module never imports Qt.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError, DivcolorError

__all__ = [
    "MAX_JSON_BYTES", "MAX_DEPTH", "MAX_SEED", "MAX_BATCH", "MAX_GALLERY", "MIN_TEMPERATURE", "MAX_TEMPERATURE",
    "Num", "Text", "Flag", "Nullable", "ListOf", "Obj", "loads", "read_json_file", "check_json", "check", "check_project",
]

MAX_JSON_BYTES = 64 * 2**20  # a strokes file at its limits (1e6 points) is ~20 MB
MAX_DEPTH = 32  # the deepest real file (project > strokes > list > stroke > points > point) is 6
MAX_DIGITS = 40  # longer numbers are not coordinates, seeds or counts, and would overflow a float
MAX_SEED = 2**31 - 1  # the gallery's seed box
MAX_BATCH = 32  # samples the gallery makes at once
MAX_GALLERY = 512  # samples a saved gallery may hold, all batches together (regenerated on open)
MAX_INDEX = 10**6
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 3.0  # the gallery's temperature box
MAX_TEXT = 4096

ErrorType = Callable[[str], DivcolorError]


# --------------------------------------------------------------------------------------------
# The JSON itself
# --------------------------------------------------------------------------------------------


class _Refused(Exception):
    """Raised inside the JSON parser's hooks; turned into the caller's error by ``loads``."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"it holds a number with {len(text.lstrip('-'))} digits ({text[:12]}…), more than any "
                       f"real value has ({MAX_DIGITS}); fix or remove that number")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_DIGITS + 10:
        raise _Refused(f"it holds a number written with {len(text)} characters ({text[:12]}…); "
                       "fix or remove that number")
    return float(text)


def loads(text: str | bytes, error: ErrorType = ConfigError) -> Any:
    """Parse JSON from a user's file, refusing what would crash or stall a plain ``json.loads``:
    text over MAX_JSON_BYTES, nesting deeper than MAX_DEPTH, numbers with hundreds of digits."""
    if len(text) > MAX_JSON_BYTES:
        raise error(f"the file is {len(text) / 2**20:.0f} MiB, larger than any divcolor file "
                    f"({MAX_JSON_BYTES // 2**20} MiB); check that it is the right file")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"the file is not UTF-8 text (byte {e.start}); save it as UTF-8 JSON") from None
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise error(f"its JSON is nested {depth} levels deep, more than divcolor files ever are ({MAX_DEPTH}); "
                    "the file is damaged or not a divcolor file")
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except _Refused as e:
        raise error(str(e)) from None
    except json.JSONDecodeError as e:
        raise error(f"it is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix the file "
                    "or save it again from divcolor") from None
    except (ValueError, RecursionError) as e:  # belt and braces: no parser failure escapes as a traceback
        raise error(f"it is not valid JSON ({type(e).__name__}); fix the file or save it again from divcolor") from None


def read_json_file(path: str | os.PathLike[str], error: ErrorType = ConfigError) -> Any:
    """``loads`` of a file, refusing what is not a regular file (a FIFO would block, a device
    never end) or is too large, before reading it."""
    p = Path(path)
    try:
        if not p.is_file():
            raise error("it does not exist" if not p.exists() else "it is not a regular file")
        if p.stat().st_size > MAX_JSON_BYTES:
            raise error(f"the file is {p.stat().st_size / 2**20:.0f} MiB, larger than any divcolor file "
                        f"({MAX_JSON_BYTES // 2**20} MiB); check that it is the right file")
        with open(p, "rb") as f:
            text = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise error(f"it cannot be read ({e.strerror or e})") from None
    return loads(text, error)


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _max_depth(text: str) -> int:
    """Nesting depth of JSON text, counted without recursion (strings skipped); an upper bound
    for invalid text, which the parser then refuses anyway."""
    depth = best = 0
    for m in _BRACKETS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_DEPTH:
                    return best
        elif c in "]}":
            depth -= 1
    return best


def check_json(obj: Any, error: ErrorType = ConfigError, where: str = "") -> None:
    """The guards of ``loads`` for an object that was parsed elsewhere (or built in code):
    depth, number size, and only JSON types. Iterative, so a deep object cannot overflow."""
    root = where or "the file"
    stack: list[tuple[Any, int, str]] = [(obj, 1, "")]
    while stack:
        v, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise error(f"{root} is nested more than {MAX_DEPTH} levels deep (at {path}); the data is damaged")
        if isinstance(v, dict):
            stack.extend((x, depth + 1, _join(path, str(k))) for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, depth + 1, f"{path}[{i}]") for i, x in enumerate(v))
        elif isinstance(v, bool) or v is None or isinstance(v, (str, float)):
            continue
        elif isinstance(v, int):
            if v.bit_length() > 128:
                raise error(f"{path or root} is {show(v)}, larger than any real value; fix or remove it")
        elif _is_numpy_number(v):
            continue
        else:
            raise error(f"{path or root} is a {type(v).__name__}, which JSON cannot hold")


def _is_numpy_number(v: Any) -> bool:
    t = type(v).__module__
    return t == "numpy" and hasattr(v, "dtype")


def _join(path: str, key: str) -> str:
    return key if path in ("", "the file") else f"{path}.{key}"


# --------------------------------------------------------------------------------------------
# Declared types and ranges
# --------------------------------------------------------------------------------------------


def show(v: Any) -> str:
    """A value as a message shows it: short, and safe for huge or deep values."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        if abs(v) < 10**24:
            return str(v)
        return f"a {len(str(abs(v)))}-digit number" if v.bit_length() < 14000 else "a number of thousands of digits"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v if len(v) <= 40 else v[:37] + "…")
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    return type(v).__name__


@dataclass(frozen=True)
class Num:
    """A JSON number in [low, high] (``integer``: a whole number)."""

    low: float
    high: float
    integer: bool = False
    hint: str = ""  # what the range is, e.g. "the gallery's seed box"

    def check(self, v: Any, path: str) -> str | None:
        kind = "a whole number" if self.integer else "a number"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{path} is {show(v)}, but must be {kind} from {_n(self.low)} to {_n(self.high)}"
        if self.integer and not isinstance(v, int) and not (math.isfinite(v) and v == int(v)):
            return f"{path} is {show(v)}, but must be a whole number from {_n(self.low)} to {_n(self.high)}"
        if isinstance(v, float) and not math.isfinite(v):
            return f"{path} is {show(v)}, but must be a finite number from {_n(self.low)} to {_n(self.high)}"
        if not self.low <= v <= self.high:
            hint = f" ({self.hint})" if self.hint else ""
            return f"{path} is {show(v)}, but must be from {_n(self.low)} to {_n(self.high)}{hint}"
        return None


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Text:
    max_len: int = MAX_TEXT
    choices: tuple[str, ...] = ()

    def check(self, v: Any, path: str) -> str | None:
        if not isinstance(v, str):
            return f"{path} is {show(v)}, but must be text"
        if len(v) > self.max_len:
            return f"{path} is {len(v):,} characters long, more than the {self.max_len:,} it may have"
        if self.choices and v not in self.choices:
            return f"{path} is {show(v)}, but must be one of {', '.join(self.choices)}"
        return None


@dataclass(frozen=True)
class Flag:
    def check(self, v: Any, path: str) -> str | None:
        return None if isinstance(v, bool) else f"{path} is {show(v)}, but must be true or false"


@dataclass(frozen=True)
class Nullable:
    inner: Any

    def check(self, v: Any, path: str) -> str | None:
        return None if v is None else _check(self.inner, v, path)


@dataclass(frozen=True)
class ListOf:
    item: Any
    max_len: int

    def check(self, v: Any, path: str) -> str | None:
        if not isinstance(v, list):
            return f"{path} is {show(v)}, but must be a list"
        if len(v) > self.max_len:
            return f"{path} has {len(v):,} entries, more than the {self.max_len:,} it may have"
        for i, x in enumerate(v):
            problem = _check(self.item, x, f"{path}[{i}]")
            if problem:
                return problem
        return None


@dataclass(frozen=True)
class Obj:
    """A JSON object with declared fields; unknown keys are allowed (ignored by readers), so a
    file from a later minor change still opens."""

    fields: Mapping[str, Any]
    required: frozenset[str] = field(default_factory=frozenset)
    rules: tuple[Callable[[dict[str, Any], str], str | None], ...] = ()  # checks across fields

    def check(self, v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return f"{path} is {show(v)}, but must be an object {{…}}"
        missing = sorted(self.required - set(v))
        if missing:
            return f"{path} lacks {', '.join(repr(k) for k in missing)}"
        for k, spec in self.fields.items():
            if k in v:
                problem = _check(spec, v[k], _join(path, k))
                if problem:
                    return problem
        for rule in self.rules:
            problem = rule(v, path)
            if problem:
                return problem
        return None


def _check(spec: Any, v: Any, path: str) -> str | None:
    return spec.check(v, path)


def check(spec: Any, obj: Any, error: ErrorType = ConfigError, fix: str = "") -> Any:
    """Check ``obj`` (already through ``loads`` or ``check_json``) against ``spec``; returns it."""
    problem = _check(spec, obj, "the file")
    if problem:
        raise error(problem + (f"; {fix}" if fix else ""))
    return obj


# --------------------------------------------------------------------------------------------
# Project files
# --------------------------------------------------------------------------------------------

PROJECT_FORMAT = "divcolor-project"
_SEED = Num(0, MAX_SEED, integer=True, hint="the gallery's seed box")
_BATCH_N = Num(1, MAX_BATCH, integer=True, hint="the most samples the gallery makes at once")
_TEMPERATURE = Num(MIN_TEMPERATURE, MAX_TEMPERATURE, hint="the gallery's temperature box")
_INDEX = Num(0, MAX_INDEX, integer=True)


def _gallery_total(g: dict[str, Any], path: str) -> str | None:
    total = sum(b["n"] for b in g.get("batches") or [])
    if total > MAX_GALLERY:
        return f"{_join(path, 'batches')} hold {total:,} samples together, more than the {MAX_GALLERY} a gallery keeps"
    return None


PROJECT = Obj(
    {
        "format": Text(64),
        "version": Num(0, 10**6, integer=True),
        "photo": Text(),
        "photo_relative": Nullable(Text()),
        "sample": Nullable(Obj(
            {"method": Text(64), "model": Text(256), "family": Text(64), "checkpoint": Nullable(Text()),
             "seed": _SEED, "n": _BATCH_N, "index": _INDEX, "temperature": _TEMPERATURE,
             "locked": Nullable(Obj({}))},  # the strokes it was sampled to agree with (strokes format)
            required=frozenset({"method", "model", "family", "checkpoint", "seed", "n", "index", "temperature"}),
        )),
        "gallery": Nullable(Obj(
            {"seed": _SEED, "temperature": _TEMPERATURE, "samples": _BATCH_N, "family": Text(64),
             "checkpoint": Nullable(Text()),
             "batches": Nullable(ListOf(Obj({"seed": _SEED, "n": _BATCH_N, "temperature": _TEMPERATURE, "first": _INDEX,
                                                 "locked": Nullable(Obj({}))},
                                            required=frozenset({"seed", "n", "temperature"})), MAX_GALLERY))},
            rules=(_gallery_total,),
        )),
        "strokes": Nullable(Obj({})),  # its inside is the strokes format: checked by engine.strokes below
    },
)


def check_project(data: Any, max_version: int, error: ErrorType = ConfigError,
                  parse_strokes: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A parsed project file, checked: divcolor's format, a version this divcolor reads, every
    field of the right type and range, and (given ``engine.strokes.parse_strokes``, passed in
    because strokes import this module) strokes that parse. Returns ``data`` unchanged."""
    check_json(data, error)
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise error("it is not a divcolor project file (no \"format\": \"divcolor-project\"); open the photo instead")
    version = data.get("version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > max_version:
        raise error(f"it was saved by a newer divcolor (project version {show(version)}, this one reads up to "
                    f"{max_version}); update divcolor to open it")
    check(PROJECT, data, error, fix="fix that value in the file, or delete the entry to use the default")
    if data.get("strokes") and parse_strokes is not None:
        from .errors import StrokesError

        try:
            parse_strokes(data["strokes"])
        except StrokesError as e:
            raise error(f"its strokes are malformed: {e}; fix them in the file or delete the \"strokes\" entry") from None
    return data
