"""User strokes: coloured polylines that say "this region is this colour".

A stroke is what the user paints on the canvas (or writes in a JSON file for the CLI): a colour,
a brush radius and a polyline, all in *image* coordinates so the same strokes apply whatever the
zoom or the working resolution of a method. A single point is a point hint (a disc).

Image coordinates are continuous: pixel (i, j) (column i, row j) covers [i, i+1) x [j, j+1),
so its centre is (i + 0.5, j + 0.5) and the whole image spans [0, W] x [0, H]. This is the
convention of Qt's scene coordinates with the photo drawn at the origin.

Methods do not see strokes directly: :func:`rasterize` turns them into a coverage map and an ab
map on whatever grid the method works on (the full-resolution grid for Levin propagation, the
64x64 model grid for the G-CRF), area-weighted so thin strokes and grid-unaligned edges still
count in proportion to how much of each cell they cover.

This module never imports Qt.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .color import AB_SCALE, lab_to_rgb, rgb_to_lab
from .errors import StrokesError
from .files import atomic_write
from .schema import check_json, loads

__all__ = [
    "FORMAT_VERSION",
    "MAX_DRAWN_POINTS",
    "MAX_RADIUS",
    "Stroke",
    "clip_strokes",
    "color_ab_at",
    "displayed_color",
    "load_strokes",
    "parse_strokes",
    "rasterize",
    "save_strokes",
    "stroke_ab",
    "strokes_to_json",
]

FORMAT_VERSION = 1
MAX_RADIUS = 10_000.0
"""Larger radii are certainly a mistake (a unit mix-up, a corrupt file): refused, not clamped."""
MAX_POINTS = 1_000_000  # per stroke as written; a guard against absurd files, far beyond any real drawing
SIMPLIFY_ABOVE = 10_000
"""A stroke loaded with more points than this has its points closer than a pixel to the last one
kept merged (a tablet sampling a slow pen writes many per pixel): drawing cost grows with the
points, the drawn stroke does not change by more than a pixel. Shorter strokes load as written,
so files round-trip exactly."""
MAX_DRAWN_POINTS = 100_000
"""Per stroke, after merging: a stroke over 100,000 pixels long (25 times across a 4000-pixel
photo) is refused with this limit named; drawing it would take minutes and gigabytes."""
_SUBSAMPLES = 16  # per grid cell (one bit each of a uint16): coverage in steps of 1/16
_HEX = re.compile(r"#([0-9a-fA-F]{6})")
# Set bits of every 16-bit mask: coverage is the number of a cell's sub-samples a stroke owns.
_POPCOUNT = sum(((np.arange(1 << 16) >> k) & 1) for k in range(16)).astype(np.uint8)


@dataclass(frozen=True)
class Stroke:
    """One brush stroke: ``color`` (r, g, b) 0-255, ``radius`` in image pixels, ``points`` (x, y).

    Construction validates and normalises (points become a tuple of float pairs), so every
    Stroke that exists is usable; a bad one raises :class:`~engine.errors.StrokesError`.
    """

    color: tuple[int, int, int]
    radius: float
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        color = _check_color(self.color)
        radius = _check_radius(self.radius)
        points = _check_points(self.points)
        object.__setattr__(self, "color", color)
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "points", points)

    @property
    def hex(self) -> str:
        """The colour as ``#RRGGBB``, the JSON form."""
        return "#{:02X}{:02X}{:02X}".format(*self.color)

    @property
    def is_point(self) -> bool:
        """A single point: a point hint, rasterised as a disc."""
        return len(self.points) == 1


# --------------------------------------------------------------------------------------------
# Validation (shared by the constructor and the JSON parser)
# --------------------------------------------------------------------------------------------


def _shown(value: object, limit: int = 60) -> str:
    """A value quoted in an error message, cut short: a fuzzed or damaged file can hold a huge
    one, and the message must stay one readable sentence."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _check_color(c: Any) -> tuple[int, int, int]:
    if isinstance(c, str):
        return _parse_hex(c)
    try:
        vals = tuple(c)
    except TypeError:
        raise StrokesError(f"the colour {_shown(c)} is not an (r, g, b) triple or a #RRGGBB string") from None
    if len(vals) != 3 or not all(_is_number(v) and float(v) == int(v) and 0 <= int(v) <= 255 for v in vals):
        raise StrokesError(f"the colour {_shown(c)} must be three whole numbers from 0 to 255")
    return (int(vals[0]), int(vals[1]), int(vals[2]))


def _parse_hex(s: Any) -> tuple[int, int, int]:
    if not isinstance(s, str) or not _HEX.fullmatch(s.strip()):
        raise StrokesError(f"the colour {_shown(s)} is not of the form \"#RRGGBB\" (for example \"#3A7F20\")")
    h = s.strip()[1:]
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


def _check_radius(r: Any) -> float:
    if not _is_number(r) or not math.isfinite(float(r)):
        raise StrokesError(f"the radius {_shown(r)} is not a number")
    if float(r) <= 0:
        raise StrokesError(f"the radius must be more than 0 pixels, got {_shown(r)}")
    if float(r) > MAX_RADIUS:
        raise StrokesError(f"the radius {_shown(r)} is absurdly large (the limit is {MAX_RADIUS:g} pixels)")
    return float(r)


def _check_points(pts: Any, spacing: float = 0.0) -> tuple[tuple[float, float], ...]:
    """Validated points as float pairs; with ``spacing``, each one closer than that to the last
    one kept is dropped as it is read (the last point stays), so a long stroke is never held
    twice at full length."""
    if isinstance(pts, (str, bytes)) or not isinstance(pts, Iterable):
        raise StrokesError(f"the points must be a list of [x, y] pairs, got {type(pts).__name__}")
    out: list[tuple[float, float]] = []
    limit = spacing * spacing
    dropped: tuple[float, float] | None = None
    for k, p in enumerate(pts):
        if k >= MAX_POINTS:
            raise StrokesError(f"too many points (the limit is {MAX_POINTS:,} per stroke)")
        if isinstance(p, (str, bytes)) or not isinstance(p, (Sequence, np.ndarray)) or len(p) != 2:
            raise StrokesError(f"point {k} is {_shown(p)}, not an [x, y] pair")
        x, y = p[0], p[1]
        if not (_is_number(x) and _is_number(y)):
            raise StrokesError(f"point {k} ({_shown(p)}) has a coordinate that is not a number")
        if not (math.isfinite(float(x)) and math.isfinite(float(y))):
            raise StrokesError(f"point {k} ({_shown(p)}) has a coordinate that is NaN or infinite")
        x, y = float(x), float(y)
        if limit and out and (x - out[-1][0]) ** 2 + (y - out[-1][1]) ** 2 < limit:
            dropped = (x, y)
            continue
        out.append((x, y))
        dropped = None
    if dropped is not None:
        out.append(dropped)  # the stroke ends where it did
    if not out:
        raise StrokesError("the stroke has no points (a point hint needs one [x, y] pair)")
    return tuple(out)


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def parse_strokes(source: Any, image_size: tuple[int, int] | None = None) -> list[Stroke]:
    """Strokes from their JSON form: a parsed object, a JSON string, or a path to a file.

    A ``str`` is taken as JSON text when it starts with ``{`` or ``[``, else as a file name.
    Anything malformed raises :class:`~engine.errors.StrokesError` whose message names the
    problem and the stroke (by index, from 0), because the user has to find it in their file.
    With ``image_size`` (W, H) the points are clipped to the image.
    """
    obj = source
    where = ""
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and source.lstrip()[:1] in ("{", "[")):
        path = Path(source).expanduser()
        where = f"“{path.name}”: "
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StrokesError(f"Strokes file “{path.name}” does not exist.") from None
        except (OSError, UnicodeDecodeError) as e:
            raise StrokesError(f"Cannot read strokes file “{path.name}”: {e}") from None
        obj = _loads(text, where)
    elif isinstance(source, (str, bytes)):
        obj = _loads(source, where)
    try:
        check_json(obj, StrokesError, "the strokes")  # depth and number size, before anything walks it
        strokes = _from_obj(obj)
    except StrokesError as e:
        raise StrokesError(f"{where}{e}") from None
    return clip_strokes(strokes, image_size) if image_size is not None else strokes


def _loads(text: str | bytes, where: str) -> Any:
    def error(msg: str) -> StrokesError:
        return StrokesError(f"{where}{msg}. Strokes files look like "
                            '{"version": 1, "strokes": [{"color": "#RRGGBB", "radius": 6, "points": [[x, y], ...]}]}')

    return loads(text, error)


def _from_obj(obj: Any) -> list[Stroke]:
    if not isinstance(obj, dict):
        raise StrokesError(f"a strokes file holds a JSON object with \"version\" and \"strokes\", not a {type(obj).__name__}")
    if "version" not in obj:
        raise StrokesError("the \"version\" key is missing (this format is version 1)")
    version = obj["version"]
    if not _is_number(version) or float(version) != int(version):
        raise StrokesError(f"the version {_shown(version)} is not a whole number")
    if int(version) > FORMAT_VERSION:
        raise StrokesError(f"the strokes are in format version {int(version)}, newer than this divcolor reads "
                           f"(version {FORMAT_VERSION}); update divcolor")
    if int(version) < 1:
        raise StrokesError(f"unknown strokes format version {int(version)}")
    if "strokes" not in obj:
        raise StrokesError("the \"strokes\" key is missing")
    items = obj["strokes"]
    if not isinstance(items, list):
        raise StrokesError(f"\"strokes\" must be a list, not a {type(items).__name__}")
    out: list[Stroke] = []
    for i, s in enumerate(items):
        if not isinstance(s, dict):
            raise StrokesError(f"stroke {i} is a {type(s).__name__}, not an object with color, radius and points")
        missing = [k for k in ("color", "radius", "points") if k not in s]
        if missing:
            raise StrokesError(f"stroke {i} lacks {', '.join(repr(k) for k in missing)}")
        try:
            if not isinstance(s["color"], str):
                raise StrokesError(f"the colour {_shown(s['color'])} is not a \"#RRGGBB\" string")
            if not isinstance(s["points"], list):
                raise StrokesError(f"the points must be a list of [x, y] pairs, not a {type(s['points']).__name__}")
            out.append(Stroke(_parse_hex(s["color"]), s["radius"], _simplified_points(s["points"])))
        except StrokesError as e:
            raise StrokesError(f"stroke {i}: {e}") from None
    return out


def _simplified_points(points: list) -> Any:
    """A long stroke's points (:data:`SIMPLIFY_ABOVE`) with those closer than a pixel to the last
    one kept merged, refused if still longer than :data:`MAX_DRAWN_POINTS`; a short stroke's as
    written. A one-million-point stroke took 97 s and 703 MB to draw."""
    if len(points) <= SIMPLIFY_ABOVE:
        return points
    merged = _check_points(points, spacing=1.0)
    if len(merged) > MAX_DRAWN_POINTS:
        raise StrokesError(
            f"too long to draw: {len(merged):,} points a pixel or more apart (of {len(points):,}), "
            f"and the limit is {MAX_DRAWN_POINTS:,} per stroke; split it into shorter strokes"
        )
    return merged


def strokes_to_json(strokes: Iterable[Stroke]) -> dict[str, Any]:
    """The JSON object for ``strokes`` (what :func:`parse_strokes` reads back unchanged)."""
    return {
        "version": FORMAT_VERSION,
        "strokes": [
            {"color": s.hex, "radius": _compact(s.radius), "points": [[_compact(x), _compact(y)] for x, y in s.points]}
            for s in strokes
        ],
    }


def _compact(v: float) -> float | int:
    """Whole numbers as ints so files written by hand and by divcolor look alike."""
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else v


def save_strokes(path: str | os.PathLike, strokes: Iterable[Stroke]) -> Path:
    """Write strokes as JSON, atomically (a crash never leaves a half-written file)."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(strokes_to_json(strokes), indent=1)
    return atomic_write(p, text + "\n")


def load_strokes(path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> list[Stroke]:
    """Read a strokes file (see :func:`parse_strokes`)."""
    return parse_strokes(Path(path), image_size)


def clip_strokes(strokes: Iterable[Stroke], image_size: tuple[int, int]) -> list[Stroke]:
    """Clamp every point into the image [0, W] x [0, H]; a stroke off the image hugs its border."""
    W, H = image_size
    return [
        s if all(0 <= x <= W and 0 <= y <= H for x, y in s.points)
        else Stroke(s.color, s.radius, tuple((min(max(x, 0.0), W), min(max(y, 0.0), H)) for x, y in s.points))
        for s in strokes
    ]


# --------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _chroma_table() -> np.ndarray:
    """Largest in-gamut chroma C*ab of sRGB at each lightness L = 0..100 (rows, step 1) and hue
    0..360° (columns, step 2°; the last repeats the first), by bisection on whether Lab maps to
    linear sRGB inside [0, 1]. Computed once (a few tens of ms)."""
    Ls = np.arange(101, dtype=np.float64)[:, None]
    hues = np.deg2rad(np.arange(0, 361, 2, dtype=np.float64))[None, :]
    ca, sa = np.cos(hues), np.sin(hues)
    fy = (Ls + 16) / 116
    finv = lambda f: np.where(f > 6 / 29, f**3, (116 * f - 16) / (24389 / 27))
    white = (0.95047, 1.0, 1.08883)
    m = np.linalg.inv(np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                                [0.019334, 0.119193, 0.950227]]))
    Y = finv(fy) * white[1]
    lo, hi = np.zeros((101, hues.shape[1])), np.full((101, hues.shape[1]), 200.0)
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        X = finv(fy + mid * ca / 500) * white[0]
        Z = finv(fy - mid * sa / 200) * white[2]
        ok = np.ones_like(mid, dtype=bool)
        for r in range(3):
            v = m[r, 0] * X + m[r, 1] * Y + m[r, 2] * Z
            ok &= (v >= -1e-9) & (v <= 1 + 1e-9)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return lo


_HUE_STEP = 2.0  # degrees between the table's columns


def _lab(color: tuple[int, int, int]) -> tuple[float, float, float]:
    rgb = torch.tensor(color, dtype=torch.float64).view(3, 1, 1) / 255.0
    lab = rgb_to_lab(rgb)
    return float(lab[0, 0, 0]), float(lab[1, 0, 0]), float(lab[2, 0, 0])


GAMUT_MARGIN = 0.97
"""Chroma applied at a pixel is at most this fraction of the gamut's limit at its lightness, so
the guided upsampling's small overshoots stay in gamut."""


@lru_cache(maxsize=1024)
def _hue_profile(color: tuple[int, int, int]) -> tuple[float, float, np.ndarray]:
    """(hue in radians, chroma relative to the gamut's limit at the colour's own lightness,
    the limit along L = 0..100 at that hue (101,))."""
    L0, a, b = _lab(color)
    hue = math.atan2(b, a)
    deg = math.degrees(hue) % 360.0
    table = _chroma_table()
    k = min(int(deg // _HUE_STEP), table.shape[1] - 2)
    f = deg / _HUE_STEP - k
    limit = (1 - f) * table[:, k] + f * table[:, k + 1]
    at_own = float(np.interp(L0, np.arange(101), limit))
    rel = min(1.0, math.hypot(a, b) / at_own) if at_own > 1e-6 else 0.0
    return hue, rel, limit


def color_ab_at(color: tuple[int, int, int], L: np.ndarray | float) -> np.ndarray:
    """The ab / 128 a stroke of ``color`` gives pixels of lightness L (any shape; 0-100):
    ``color``'s hue, and its chroma *relative to the sRGB gamut's limit* at its own lightness,
    re-applied at L. So a saturated blue gives dark pixels a saturated dark blue and light ones
    a light blue, always in gamut, instead of an ab that only fits the colour's own lightness
    (which clips to another hue on dark pixels and to white on light ones). Returns (2, *L.shape).
    """
    hue, rel, limit = _hue_profile(tuple(int(v) for v in color))
    Lc = np.clip(np.asarray(L, np.float64), 0.0, 100.0)
    chroma = GAMUT_MARGIN * rel * np.interp(Lc, np.arange(101), limit)
    return np.stack([chroma * math.cos(hue), chroma * math.sin(hue)]) / AB_SCALE


def displayed_color(color: tuple[int, int, int], L: float) -> tuple[int, int, int]:
    """What a stroke of ``color`` looks like on a pixel of lightness L (0-100), as (r, g, b)
    0-255: the swatch a stroke preview shows (see :func:`color_ab_at`)."""
    ab = color_ab_at(color, float(L)) * AB_SCALE
    lab = torch.tensor([float(L), float(ab[0]), float(ab[1])], dtype=torch.float64).view(3, 1, 1)
    rgb = lab_to_rgb(lab)[:, 0, 0].numpy()
    return tuple(int(round(float(v) * 255)) for v in rgb)  # type: ignore[return-value]


@lru_cache(maxsize=1024)
def stroke_ab(color: tuple[int, int, int]) -> tuple[float, float]:
    """The (a, b) of an sRGB colour in ab/128 units, with the same conversion as the engine."""
    rgb = torch.tensor(color, dtype=torch.float64).view(3, 1, 1) / 255.0
    lab = rgb_to_lab(rgb)
    return float(lab[1, 0, 0]) / AB_SCALE, float(lab[2, 0, 0]) / AB_SCALE


def rasterize(
    strokes: Sequence[Stroke], image_size: tuple[int, int], grid: tuple[int, int] | None = None,
    L: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted strokes on a (w, h) grid laid over the (W, H) image.

    Returns ``coverage`` (h, w) float32 in [0, 1], the fraction of each cell under any stroke,
    and ``ab`` (2, h, w) float32 in ab/128 units, the colour of the strokes in the covered part
    of each cell (0 where nothing is). With ``L`` (h, w), the photo's lightness on the grid,
    each cell gets the stroke colour at its own lightness (:func:`color_ab_at`); without, the
    colour's own ab (:func:`stroke_ab`). A stroke is the union of capsules (discs of its radius
    swept along each segment). Later strokes paint over earlier ones, exactly at the sub-sample
    level: each cell is sampled at 16 points, and a point belongs to the last stroke covering it.
    The points form a rotated lattice, each in its own row and column of a 16x16 subgrid, so an
    edge that is horizontal, vertical or diagonal is resolved to 1/16 of a cell rather than the
    1/4 of a regular 4x4 pattern (which aliases badly on straight strokes).

    Only cells near each segment are evaluated, and cells entirely inside or outside a capsule
    are decided without sub-sampling, so cost grows with stroke area and outline, not image size.
    """
    W, H = int(image_size[0]), int(image_size[1])
    w, h = (W, H) if grid is None else (int(grid[0]), int(grid[1]))
    if min(W, H, w, h) <= 0:
        raise ValueError(f"image_size {image_size} and grid {grid} must be positive")
    n_sub = _SUBSAMPLES
    full = np.uint16((1 << n_sub) - 1)
    cw, ch = W / w, H / h  # cell size in image pixels
    taken = np.zeros((h, w), np.uint16)  # sub-samples claimed by a later stroke
    cov = np.zeros((h, w), np.float32)
    a_acc = np.zeros((h, w), np.float32)
    b_acc = np.zeros((h, w), np.float32)
    # Sub-sample offsets within a cell, in cells, and the bit each one owns.
    k = np.arange(n_sub)
    sub_x = (k + 0.5) / n_sub
    sub_y = ((7 * k) % n_sub + 0.5) / n_sub  # 7 is coprime to 16: a permutation of the rows
    bits = (np.uint16(1) << k.astype(np.uint16)).astype(np.uint16)
    half_diag = 0.5 * math.hypot(cw, ch)
    if L is not None:
        L_grid = np.asarray(L, np.float64)
        if L_grid.shape != (h, w):
            raise ValueError(f"L must be on the {w}x{h} grid, got shape {L_grid.shape}")
    for stroke in reversed(list(strokes)):
        mask = np.zeros((h, w), np.uint16)
        bbox = [w, h, 0, 0]  # x0, y0, x1, y1 in cells, of what this stroke touched
        r = stroke.radius
        for (ax, ay), (bx, by) in _pieces(stroke.points, max(4 * r, 16 * max(cw, ch))):
            x0 = max(0, int(math.floor((min(ax, bx) - r) / cw)))
            x1 = min(w, int(math.floor((max(ax, bx) + r) / cw)) + 1)
            y0 = max(0, int(math.floor((min(ay, by) - r) / ch)))
            y1 = min(h, int(math.floor((max(ay, by) + r) / ch)) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            cx = (np.arange(x0, x1) + 0.5) * cw
            cy = (np.arange(y0, y1) + 0.5) * ch
            d = _seg_dist(cx[None, :], cy[:, None], ax, ay, bx, by)  # (ny, nx) from cell centres
            inside = d + half_diag <= r
            partial = ~inside & (d - half_diag <= r)
            block = np.where(inside, full, np.uint16(0))
            py, px = np.nonzero(partial)
            if py.size:
                sx = (x0 + px[:, None] + sub_x[None, :]) * cw
                sy = (y0 + py[:, None] + sub_y[None, :]) * ch
                hit = _seg_dist(sx, sy, ax, ay, bx, by) <= r  # (n, n_sub)
                block[py, px] = (hit * bits).sum(axis=1, dtype=np.uint32).astype(np.uint16)
            mask[y0:y1, x0:x1] |= block
            bbox = [min(bbox[0], x0), min(bbox[1], y0), max(bbox[2], x1), max(bbox[3], y1)]
        if bbox[0] >= bbox[2]:
            continue
        sl = (slice(bbox[1], bbox[3]), slice(bbox[0], bbox[2]))
        visible = mask[sl] & ~taken[sl]
        frac = _POPCOUNT[visible].astype(np.float32) / n_sub
        taken[sl] |= mask[sl]
        if L is None:
            a, b = (np.float32(v) for v in stroke_ab(stroke.color))
        else:
            a, b = color_ab_at(stroke.color, L_grid[sl]).astype(np.float32)
        cov[sl] += frac
        a_acc[sl] += frac * a
        b_acc[sl] += frac * b
    ab = np.zeros((2, h, w), np.float32)
    nz = cov > 0
    ab[0][nz] = a_acc[nz] / cov[nz]
    ab[1][nz] = b_acc[nz] / cov[nz]
    return np.minimum(cov, 1.0), ab


def _pieces(points: Sequence[tuple[float, float]], max_len: float) -> Iterable[tuple[tuple[float, float], tuple[float, float]]]:
    """Segments of the polyline, long ones cut into collinear pieces of at most ``max_len``.

    The union of the pieces' capsules is the segment's capsule, so cutting changes nothing but
    keeps each piece's bounding box small (a long diagonal would otherwise cover the image).
    A single point yields one zero-length segment: a disc.
    """
    if len(points) == 1:
        yield points[0], points[0]
        return
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        n = max(1, int(math.ceil(math.hypot(bx - ax, by - ay) / max_len)))
        for k in range(n):
            t0, t1 = k / n, (k + 1) / n
            yield (ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)


def _seg_dist(px: np.ndarray, py: np.ndarray, ax: float, ay: float, bx: float, by: float) -> np.ndarray:
    """Distance from points (px, py) (broadcast together) to the segment a-b."""
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    qx, qy = px - ax, py - ay
    if ll <= 1e-24:
        return np.sqrt(qx * qx + qy * qy)
    t = np.clip((qx * dx + qy * dy) / ll, 0.0, 1.0)
    ex, ey = qx - t * dx, qy - t * dy
    return np.sqrt(ex * ex + ey * ey)
