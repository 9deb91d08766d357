"""``divcolor-train report RUN_DIR``: a run's training curves as one PNG.

Reads every stage's ``log.jsonl`` under RUN_DIR (or RUN_DIR itself when it is a stage
directory) and draws one row per stage, one panel per logged quantity (loss, its terms, lr,
bits/dim …), with Pillow alone: a user who never installed matplotlib or TensorBoard still
gets their curves, and the picture is the same on every machine.

Each panel shows the raw values faintly and a smoothed curve over them, on a log scale when
the values are positive and span more than two decades (early VAE losses are 100x the late
ones, which would flatten everything after the first steps on a linear axis).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from engine.errors import DataError
from engine.files import atomic_write

from .loop import LOG_FILE

PANEL_W, PANEL_H = 360, 230
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 62, 14, 28, 34
MAX_PANELS_PER_ROW = 6
SKIP_KEYS = {"step", "time", "event"}
BACKGROUND, AXES, GRID, TEXT = (255, 255, 255), (60, 60, 60), (228, 228, 228), (30, 30, 30)
RAW, SMOOTH = (160, 190, 235), (25, 90, 200)


@dataclass
class Curve:
    stage: str
    name: str
    steps: list[int]
    values: list[float]


def read_curves(run_dir: str | Path) -> list[Curve]:
    """Every numeric quantity of every stage's log, in stage-directory order then log order.

    Lines that are events (``"event": …``), cut short by a kill, or not objects are skipped;
    a step logged twice (an old log from before a resume) keeps its last value.
    """
    run_dir = Path(run_dir)
    logs = [run_dir / LOG_FILE] if (run_dir / LOG_FILE).is_file() else sorted(run_dir.glob(f"*/{LOG_FILE}"))
    curves: list[Curve] = []
    for log in logs:
        stage = log.parent.name
        series: dict[str, dict[int, float]] = {}
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "event" in rec or not isinstance(rec.get("step"), int):
                continue
            for k, v in rec.items():
                if k in SKIP_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                series.setdefault(k, {})[rec["step"]] = float(v)
        order = sorted(series, key=lambda k: (k != "loss", k == "lr", k))  # loss first, lr last
        for k in order:
            pts = sorted(series[k].items())
            curves.append(Curve(stage, k, [s for s, _ in pts], [v for _, v in pts]))
    return curves


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _smooth(values: list[float], log: bool) -> list[float]:
    """Exponential moving average with a window of ~2 % of the curve, run forwards then
    backwards so the smoothed curve does not lag behind the raw one."""
    if len(values) < 5:
        return values
    return _ema(_ema(values, log)[::-1], log)[::-1]


def _ema(values: list[float], log: bool) -> list[float]:
    """One pass of a bias-corrected exponential moving average (in log space on log axes)."""
    alpha = min(0.5, 2.0 / (0.02 * len(values) + 1))
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        x = math.log10(v) if log else v
        acc = (1 - alpha) * acc + alpha * x
        weight = (1 - alpha) * weight + alpha
        y = acc / weight
        out.append(10**y if log else y)
    return out


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round numbers between lo and hi."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def draw_panel(img: Image.Image, x0: int, y0: int, curve: Curve) -> None:
    d = ImageDraw.Draw(img)
    small, title = _font(11), _font(13)
    left, top = x0 + MARGIN_L, y0 + MARGIN_T
    right, bottom = x0 + PANEL_W - MARGIN_R, y0 + PANEL_H - MARGIN_B
    d.text((left, y0 + 7), f"{curve.stage}: {curve.name}", fill=TEXT, font=title)
    vals, steps = curve.values, curve.steps
    positive = all(v > 0 for v in vals)
    log = positive and max(vals) / min(vals) > 100
    tf = (lambda v: math.log10(v)) if log else (lambda v: v)
    lo, hi = min(tf(v) for v in vals), max(tf(v) for v in vals)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    s_lo, s_hi = min(steps), max(steps)
    if s_hi == s_lo:
        s_lo, s_hi = s_lo - 1, s_hi + 1

    def X(s: float) -> float:
        return left + (s - s_lo) / (s_hi - s_lo) * (right - left)

    def Y(v: float) -> float:
        return bottom - (tf(v) - lo) / (hi - lo) * (bottom - top)

    # grid and y labels
    if log:
        yt = [10.0**e for e in range(math.ceil(lo), math.floor(hi) + 1)] or [10**lo, 10**hi]
    else:
        yt = _ticks(lo, hi)
    for v in yt:
        y = Y(v)
        if top <= y <= bottom:
            d.line([(left, y), (right, y)], fill=GRID)
            label = _fmt(v)
            w = d.textlength(label, font=small)
            d.text((left - 6 - w, y - 7), label, fill=TEXT, font=small)
    for s in _ticks(s_lo, s_hi):
        x = X(s)
        if left <= x <= right:
            d.line([(x, top), (x, bottom)], fill=GRID)
            label = _fmt(s) if s < 1e5 else f"{s / 1000:.0f}k"
            w = d.textlength(label, font=small)
            d.text((x - w / 2, bottom + 5), label, fill=TEXT, font=small)
    d.rectangle([left, top, right, bottom], outline=AXES)
    d.text((right - d.textlength("step", font=small), bottom + 19), "step", fill=TEXT, font=small)
    if log:
        d.text((x0 + 6, top - 14), "log", fill=TEXT, font=small)
    # curves
    pts = [(X(s), Y(v)) for s, v in zip(steps, vals)]
    if len(pts) == 1:
        x, y = pts[0]
        d.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=SMOOTH)
        return
    d.line(pts, fill=RAW, width=1)
    sm = [(X(s), Y(v)) for s, v in zip(steps, _smooth(vals, log))]
    d.line(sm, fill=SMOOTH, width=2)
    last = f"last {_fmt(vals[-1])}"
    d.text((right - d.textlength(last, font=small) - 4, top + 3), last, fill=SMOOTH, font=small)


def render(curves: list[Curve]) -> Image.Image:
    """One row per stage (wrapped after MAX_PANELS_PER_ROW panels), one panel per curve."""
    rows: list[list[Curve]] = []
    for stage in dict.fromkeys(c.stage for c in curves):
        mine = [c for c in curves if c.stage == stage]
        rows.extend(mine[i : i + MAX_PANELS_PER_ROW] for i in range(0, len(mine), MAX_PANELS_PER_ROW))
    cols = max(len(r) for r in rows)
    img = Image.new("RGB", (cols * PANEL_W, len(rows) * PANEL_H), BACKGROUND)
    for r, row in enumerate(rows):
        for c, curve in enumerate(row):
            draw_panel(img, c * PANEL_W, r * PANEL_H, curve)
    return img


def report(run_dir: str | Path, dest: str | Path | None = None) -> Path:
    """Draw RUN_DIR's curves to ``dest`` (default RUN_DIR/report.png); returns the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a run directory; give the --out of a training run.")
    curves = read_curves(run_dir)
    if not curves:
        raise DataError(f"{run_dir} has no training logs ({LOG_FILE}) yet; train a stage with --out {run_dir} first.")
    img = render(curves)
    dest = Path(dest) if dest else run_dir / "report.png"
    atomic_write(dest, lambda f: img.save(f, "PNG"))
    return dest
