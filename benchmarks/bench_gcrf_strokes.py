"""Per-stroke latency of the G-CRF stroke field at 64x64 (P = 4096) while the user drags.

Incremental: the app's stroke field (:class:`engine.propagate.GCRFStrokeField`, whose grid
field keeps M₀⁻¹ per image, each update a Woodbury correction on the stroked pixels); its
setup time is what the first stroke on a new photo costs. "app update" adds what the app does
around the solve on every update: rasterising at each pixel's lightness, the guided upsampling
of the edit and the recombination at the photo's full size. Baseline, measured in the same run on the same
updates: refactorising M = (I-Ŝ)ᵀ(I-Ŝ) + diag(w) with Cholesky and solving, per update, with
(I-Ŝ)ᵀ(I-Ŝ) cached (the favourable baseline; forming it costs another ~1.2 s per update).
Goal: <= 30 ms per update.

Ŝ comes from a G-CRF checkpoint on a photo (``--checkpoint``) or, by default, from an
untrained embedding network (width-24 build) on a bw_demo photo: the solver's cost does not
depend on what Ŝ has learned.

    python benchmarks/bench_gcrf_strokes.py [--checkpoint PATH] [--updates 30] [--threads N]
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
from engine.propagate import GCRFStrokeField  # noqa: E402
from engine.strokes import Stroke, rasterize  # noqa: E402

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
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photo, L, what = photo_and_grey_64()
    if args.checkpoint:
        model = GCRF.from_checkpoint(args.checkpoint)
        L = F.interpolate(L, size=(model.cfg.size,) * 2, mode="area")
    else:
        torch.manual_seed(0)
        model = GCRF(GCRFConfig(size=64, width=24, latent_dim=64), with_color_encoder=False).eval()
    s = model.cfg.size
    with torch.no_grad():
        base = model.colorize(L, 1, mode="means")[0]

    t = time.perf_counter()
    app_field = GCRFStrokeField(model, photo)
    field = app_field.grid_field()
    setup = time.perf_counter() - t
    solver = field.solver
    w0, beta = field.base_weight, field.stroke_weight

    def baseline(cov: np.ndarray, tgt: np.ndarray) -> torch.Tensor:
        c = torch.from_numpy(cov).flatten()
        wc = beta * c
        Lf, pad = _factor(solver.KtK + torch.diag(w0 + wc))
        rhs = wc[:, None] * (torch.from_numpy(tgt).reshape(2, -1).T - base.reshape(2, -1).T)
        return (base + _factor_solve(rhs, Lf, pad).T.reshape(2, s, s)).clamp(-1, 1)

    rows, app_rows = [], []
    for name, n, radius, step in (
        (f"drag: {args.updates} updates, brush r=1.5", args.updates, 1.5, 1.0),
        ("long drag: 90 updates, brush r=4", 90, 4.0, 1.0),
    ):
        sets = drag(n, radius, step)
        raster = [rasterize(st, (s, s), L=L[0, 0].numpy()) for st in sets]
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
            app_field.propagate(st)
            app.append(time.perf_counter() - t)
        app_rows.append((name, summarize(app)))
        _reset(field)

    print(f"image: {what} at {s}x{s} (P = {s * s}); model: {args.checkpoint or 'untrained width-24 G-CRF'}; torch threads: {torch.get_num_threads()}")
    print(f"per-image setup = first stroke on a new photo (Ŝ, (I-Ŝ)ᵀ(I-Ŝ) + Laplacian, Cholesky, inverse): {setup:.2f} s")
    print(f"{'case':38s} {'k px':>5s} {'rebases':>7s} {'method':>13s} {'median ms':>9s} {'p90 ms':>7s} {'max ms':>7s} {'ratio':>7s}")
    for name, k, reb, b, i, err in rows:
        print(f"{name:38s} {k:5d} {reb:7d} {'refactorise':>13s} {b[0]:9.1f} {b[1]:7.1f} {b[2]:7.1f} {1.0:7.2f}")
        print(f"{'':38s} {'':5s} {'':7s} {'incremental':>13s} {i[0]:9.1f} {i[1]:7.1f} {i[2]:7.1f} {b[0] / i[0]:6.1f}x")
        print(f"{'':38s} max |incremental - refactorised| = {err:.1e} (ab/128)")
    for name, a in app_rows:
        print(f"{name:38s} app update at {photo.size[0]}x{photo.size[1]} (rasterise, solve, upsample, recombine): "
              f"median {a[0]:.1f} ms, p90 {a[1]:.1f} ms")
    worst = max(r[4][0] for r in rows)
    print(f"goal <= 30 ms per update (median): {'met' if worst <= 30 else 'NOT met'}")


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
