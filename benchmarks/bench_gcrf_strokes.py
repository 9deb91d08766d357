"""Per-stroke latency of the G-CRF stroke field while the user drags, and the first stroke on a
new photo.

First stroke: what the app's field (:class:`engine.propagate.GCRFStrokeField`) costs from a
fresh photo to the first painted result (embeddings, Ŝ, (I-Ŝ)ᵀ(I-Ŝ) + Laplacian, Cholesky and
the inverse on its solve grid, then one full app update), against the baseline measured in the
same run: the same field solved on the model's 64x64 grid (P = 4096, as before the solve grid
became 32x32). Goal: <= 0.5 s.

Incremental: each update a Woodbury correction on the stroked pixels of the cached M₀⁻¹.
"app update" adds what the app does around the solve on every update: rasterising at each
pixel's lightness, the hint branch if the model has one, the guided upsampling of the edit and
the recombination at the photo's full size. Baseline, measured in the same run on the same
updates: refactorising M = (I-Ŝ)ᵀ(I-Ŝ) + diag(w) with Cholesky and solving, per update, with
(I-Ŝ)ᵀ(I-Ŝ) cached (the favourable baseline). Goal: incremental solve <= 10 ms (median); the
full-size app update is printed beside it (it grows with the photo's size, not the solve).

Ŝ comes from a G-CRF checkpoint on a photo (``--checkpoint``) or, by default, from an
untrained embedding network (width-24 build) on a bw_demo photo: the solver's cost does not
depend on what Ŝ has learned.

    python benchmarks/bench_gcrf_strokes.py [--checkpoint PATH] [--updates 30] [--threads N] [--no-full-grid]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.gcrf_solver import _factor, _factor_solve  # noqa: E402
from engine.models.gcrf import GCRF, GCRFConfig, GCRFField  # noqa: E402
from engine.colorizer import load_model  # noqa: E402
from engine.propagate import STROKE_GRID, GCRFStrokeField, render_edit  # noqa: E402
from engine.strokes import Stroke, rasterize  # noqa: E402
from engine.types import Colorization  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "bw_demo" / "Harlem1932.jpg"


def photo_and_grey_64():
    from engine.io import load_photo, photo_from_array

    if SAMPLE.exists():
        photo, what = load_photo(SAMPLE), SAMPLE.name
    else:
        g = torch.Generator().manual_seed(0)
        photo, what = photo_from_array(torch.rand(480, 640, generator=g).numpy()), "random"
    L = torch.from_numpy(photo.L)[None, None]
    return photo, F.interpolate(L, size=(64, 64), mode="area"), what


def drag(n_updates: int, radius: float, step: float) -> list[list[Stroke]]:
    """Stroke sets after each update of one drag: a wavy path, ``step`` grid cells per update."""
    pts, out = [], []
    for i in range(n_updates):
        t = i * step
        pts.append((8.0 + t * 0.8, 32.0 + 10.0 * np.sin(t / 9.0)))
        out.append([Stroke((200, 40, 40), radius, tuple(pts))])
    return out


def summarize(ts: list[float]) -> tuple[float, float, float]:
    ms = sorted(1000 * t for t in ts)
    return statistics.median(ms), ms[int(0.9 * (len(ms) - 1))], ms[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-full-grid", dest="full_grid", action="store_false",
                    help="skip the baseline first stroke on the model grid (it takes seconds)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photo, L, what = photo_and_grey_64()
    if args.checkpoint:
        model = load_model(args.checkpoint)  # with the shared backbone it looks through, as the app loads it
        if not isinstance(model, GCRF):
            raise SystemExit(f"--checkpoint {args.checkpoint}: not a G-CRF model file")
        L = F.interpolate(L, size=(model.cfg.size,) * 2, mode="area")
    else:
        torch.manual_seed(0)
        model = GCRF(GCRFConfig(size=64, width=24, latent_dim=64), with_color_encoder=False).eval()
    s = model.cfg.size
    with torch.no_grad():
        base_model = model.colorize(L, 1, mode="means")[0]
    W, H = photo.size
    first = [Stroke((200, 40, 40), 1.5 * W / s, ((8.0 * W / s, 32.0 * H / s),))]

    def first_stroke(grid: int) -> tuple[float, float, GCRFStrokeField]:
        """(setup s, first stroke s) of a fresh field on ``grid``. Setup is what the app does in
        the background once the gallery is filled (it warms the field on the picked sample:
        ``propagate([], sample)``); a stroke painted at once waits for both."""
        f = GCRFStrokeField(model, photo, grid=grid)
        t = time.perf_counter()
        f.propagate([], base_col)
        t1 = time.perf_counter()
        f.propagate(first, base_col)
        return t1 - t, time.perf_counter() - t1, f

    zeros_full = torch.zeros(2, H, W, dtype=torch.float64)
    rgb = render_edit(photo, zeros_full, torch.zeros(2, s, s), base_model.double())  # the picked sample
    base_col = Colorization(rgb, base_model, "gcrf", "bench", 0, 0)
    full_setup = first_stroke(s)[:2] if args.full_grid else None
    setup, first_update, app_field = first_stroke(STROKE_GRID)
    field = app_field.grid_field()
    g = field.size
    base = app_field._to_grid(base_model.float())
    solver = field.solver
    w0, beta = field.base_weight, field.stroke_weight

    def baseline(cov: np.ndarray, tgt: np.ndarray) -> torch.Tensor:
        c = torch.from_numpy(cov).flatten()
        wc = beta * c
        Lf, pad = _factor(solver.KtK + torch.diag(w0 + wc))
        rhs = wc[:, None] * (torch.from_numpy(tgt).reshape(2, -1).T - base.reshape(2, -1).T)
        return (base + _factor_solve(rhs, Lf, pad).T.reshape(2, g, g)).clamp(-1, 1)

    rows, app_rows = [], []
    for name, n, radius, step in (
        (f"drag: {args.updates} updates, brush r=1.5", args.updates, 1.5, 1.0),
        ("long drag: 90 updates, brush r=4", 90, 4.0, 1.0),
    ):
        sets = drag(n, radius, step)
        Lg = F.interpolate(L, size=(g, g), mode="area")[0, 0].numpy()
        raster = [rasterize([Stroke(x.color, x.radius * g / s, tuple((px * g / s, py * g / s) for px, py in x.points)) for x in st],
                            (g, g), L=Lg) for st in sets]
        rebases0 = solver.rebases
        inc, base_t, err = [], [], 0.0
        for cov, tgt in raster:
            t = time.perf_counter()
            x = field.propagate(cov, tgt, base)
            inc.append(time.perf_counter() - t)
            t = time.perf_counter()
            ref = baseline(cov, tgt)
            base_t.append(time.perf_counter() - t)
            err = max(err, float((x - ref).abs().max()))
        k = int((raster[-1][0] > 0).sum())
        rows.append((name, k, solver.rebases - rebases0, summarize(base_t), summarize(inc), err))
        _reset(field)  # the next drag starts a new stroke session on the same image
        W, H = photo.size
        scaled = [[Stroke(x.color, x.radius * W / s, tuple((px * W / s, py * H / s) for px, py in x.points)) for x in st]
                  for st in sets]
        app = []
        for st in scaled:
            t = time.perf_counter()
            app_field.propagate(st, base_col)
            app.append(time.perf_counter() - t)
        app_rows.append((name, summarize(app)))
        _reset(field)

    hint = " with a hint branch" if app_field.learned else ""
    print(f"image: {what}, model grid {s}x{s}, solve grid {g}x{g} (P = {g * g}); model: "
          f"{args.checkpoint or 'untrained width-24 G-CRF'}{hint}; torch threads: {torch.get_num_threads()}")
    print("first stroke on a new photo = setup (warming on the picked sample: embeddings, Ŝ, (I-Ŝ)ᵀ(I-Ŝ) + Laplacian, "
          "Cholesky, inverse, the sample's ab) + the stroke's app update:")
    if full_setup is not None:
        fs = sum(full_setup)
        print(f"  baseline, solved on the model grid {s}x{s}: {full_setup[0]:.2f} s + {full_setup[1]:.2f} s = {fs:.2f} s  ratio 1.00")
    now = setup + first_update
    ratio = f"  {fs / now:.1f}x faster" if full_setup is not None else ""
    print(f"  solve grid {g}x{g}: {setup:.2f} s + {first_update:.2f} s = {now:.2f} s{ratio}  "
          f"(goal <= 0.5 s: {'met' if now <= 0.5 else 'NOT met'})")
    print(f"{'case':38s} {'k px':>5s} {'rebases':>7s} {'method':>13s} {'median ms':>9s} {'p90 ms':>7s} {'max ms':>7s} {'ratio':>7s}")
    for name, k, reb, b, i, err in rows:
        print(f"{name:38s} {k:5d} {reb:7d} {'refactorise':>13s} {b[0]:9.1f} {b[1]:7.1f} {b[2]:7.1f} {1.0:7.2f}")
        print(f"{'':38s} {'':5s} {'':7s} {'incremental':>13s} {i[0]:9.1f} {i[1]:7.1f} {i[2]:7.1f} {b[0] / i[0]:6.1f}x")
        print(f"{'':38s} max |incremental - refactorised| = {err:.1e} (ab/128)")
    for name, a in app_rows:
        print(f"{name:38s} app update at {photo.size[0]}x{photo.size[1]} (rasterise, solve, upsample, recombine): "
              f"median {a[0]:.1f} ms, p90 {a[1]:.1f} ms")
    worst = max(r[4][0] for r in rows)
    print(f"goal <= 10 ms per incremental solve while dragging (median): {'met' if worst <= 10 else 'NOT met'}")


def _reset(field: GCRFField) -> None:
    """Back to the stroke-free base weights (re-inverting only if a rebase moved them)."""
    solver = field.solver
    w = torch.full_like(solver.base, field.base_weight)
    if not torch.equal(w, solver.base):
        solver.Minv = solver._invert(w)
        solver.base = w
    solver._rhs = solver._y = None


if __name__ == "__main__":
    main()
