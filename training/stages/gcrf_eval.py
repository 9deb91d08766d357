"""G-CRF evaluation: Table 2 (eob / variance / SSIM, through ``evaluate``) and Table 3 (PSNR vs
revealed points, every curve on the same images and squares), with the hints-only weights
tuned on the training split first.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.models.gcrf import GCRF

from .. import data as D
from .gcrf_reveal import RevealImage, evenly_spaced


POINTS_ONLY_CANDIDATES = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.01)  # x beta_test, hints-only weak unary
HINT_WEIGHT_CANDIDATES = (1.0, 20.0)  # x beta_test, hints-only hint weight
POINTS_ONLY_WEIGHT, HINT_WEIGHT = 0.0001, 20.0  # picked for gcrf_general on natural128 train; used when there is no train split
TABLE3_POINTS = (1, 2, 5, 10, 20, 50, 100)

CURVES = {
    "gcrf_points_only": "G-CRF from the hints alone (grey base)",
    "gcrf": "G-CRF: the hints over its own automatic colorization (top MDN mode)",
    "sample": "that automatic colorization without hints",
    "levin": "Levin et al. 2004 from the same hints (full resolution)",
    "grey": "no colour at all",
}

LEARNED_CURVES = {
    "gcrf": "G-CRF with a hint branch: its answer for its own automatic colorization and the hints (as "
            "resampling with locked strokes)",
    "gcrf_canvas": "the canvas over that colorization: the branch's change only as far as the strokes reach "
                   "along the attention (local strokes)",
    "gcrf_hint_branch": "the hint branch's unary from the hints alone, without the G-CRF solve",
}


@torch.no_grad()
def tune_points_only(
    model: GCRF, data: str, split: str = "train", limit: int = 30, points: tuple[int, ...] = (1, 5, 10, 50, 100),
    weights: tuple[float, ...] = POINTS_ONLY_CANDIDATES, hint_weights: tuple[float, ...] = HINT_WEIGHT_CANDIDATES,
    size: int = 128, patch: int = 7, seed: int = 10_000,
) -> dict[str, Any]:
    """Pick the hints-only G-CRF's weak unary toward grey (x beta_test) and hint weight (x
    beta_test) on *training* images, by mean Table 3 PSNR over ``points``.

    The weak unary sets how far a hint's colour travels through Ŝ before fading to grey: too
    strong and 10 points leave most of the photo grey, too weak and the system nears singular.
    Tuned here, never on the split that is reported.
    """
    model.eval()
    lab = evenly_spaced(D.load_lab(data, split, size), limit)
    beta = model.cfg.beta_test
    grid = [(w, h) for w in weights for h in hint_weights]
    scores: dict[tuple[float, float], list[list[float]]] = {k: [] for k in grid}
    t0 = time.time()
    for i in range(len(lab)):
        img = RevealImage(model, lab.L[i : i + 1], lab.ab[i], points, patch, seed + i)
        for w, h in grid:
            scores[(w, h)].append(img.gcrf_curve(img.grey, w * beta, h * beta))
    curves = {k: np.mean(np.array(v), axis=0) for k, v in scores.items()}
    best = max(grid, key=lambda k: float(curves[k].mean()))
    return {
        "base_weight": best[0], "hint_weight": best[1], "data": f"{Path(data).name} {split} ({len(lab)} images)",
        "points": list(points),
        "psnr": {f"base {w} hint {h}": [round(float(x), 2) for x in curves[(w, h)]] for w, h in grid},
        "seconds": round(time.time() - t0, 1),
    }


@torch.no_grad()
def psnr_vs_points(
    model: GCRF, data: str, split: str = "test", limit: int = 100, points: tuple[int, ...] = TABLE3_POINTS,
    size: int = 128, patch: int = 7, seed: int = 0, points_only_weight: float = POINTS_ONLY_WEIGHT,
    hint_weight: float = HINT_WEIGHT,
    sheet: str | Path | None = None, sheet_rows: int = 8, sheet_points: int = 10,
) -> dict[str, Any]:
    """Table 3: mean RGB PSNR (dB) vs the number N of revealed 7x7 squares, every curve on the
    same images and the same squares (see :data:`CURVES`).

    On ``size`` x ``size`` images (natural128): N random squares (nested: the first N of one
    draw per image, seeded by ``seed`` + image) reveal their mean ground-truth ab.

    A model with a learned hint branch is measured through the app's own stroke field
    (:meth:`engine.propagate.GCRFStrokeField.solve_hints`, its weights from the model), as the
    canvas and ``--base grey|sample`` use it; ``gcrf_hint_branch`` then also gives the branch's
    unary alone (hints only, no solve). Without a branch:
    - ``gcrf``: the hints as strokes over the automatic colorization, solved at the model grid
      with the paper's energy and the export-tuned ``stroke_base``;
    - ``gcrf_points_only``: the same from a grey base with a weak unary (``points_only_weight``
      x β) and hint weight ``hint_weight`` x β (from :func:`tune_points_only`).
    ``levin``: Levin et al. on the same hints at full resolution (:class:`LevinBaseline`).

    ``sheet``: also save ``sheet_rows`` evenly spaced images at ``sheet_points`` hints as a PNG.
    """
    model.eval()
    lab = evenly_spaced(D.load_lab(data, split, size), limit)
    beta = model.cfg.beta_test
    learned = bool(getattr(model, "has_hint_branch", False))
    keys = [*CURVES, *(["gcrf_canvas", "gcrf_hint_branch"] if learned else [])]
    res: dict[str, list[list[float]]] = {k: [] for k in keys}
    k_sheet = points.index(sheet_points) if sheet_points in points else len(points) // 2
    rows: list[list[torch.Tensor]] = []
    t0 = time.time()
    for i in range(len(lab)):
        img = RevealImage(model, lab.L[i : i + 1], lab.ab[i], points, patch, seed + i)
        base = img.base
        if learned:
            fields = {"gcrf": img.app_fields(base, local=False), "gcrf_canvas": img.app_fields(base),
                      "gcrf_points_only": img.app_fields(None), "gcrf_hint_branch": img.branch_fields(None)}
        else:
            fields = {
                "gcrf": img.gcrf_fields(base, model.cfg.stroke_base * beta),
                "gcrf_points_only": img.gcrf_fields(img.grey, points_only_weight * beta, hint_weight * beta),
            }
            del img.solve
        fields["levin"] = img.levin_fields()
        fields["sample"] = [base] * len(points)
        fields["grey"] = [img.grey] * len(points)
        for k in keys:
            res[k].append(img.curve(fields[k]))
        if (i + 1) % 10 == 0 or i + 1 == len(lab):  # long on a CPU: say where it is, with the means so far
            so_far = {k: [round(float(x), 2) for x in np.mean(np.array(v), axis=0)] for k, v in res.items()}
            print(f"psnr_vs_points: {i + 1}/{len(lab)} images, {time.time() - t0:.0f} s: {json.dumps(so_far)}",
                  file=sys.stderr, flush=True)
        if sheet and i % max(1, len(lab) // sheet_rows) == 0 and len(rows) < sheet_rows:  # spread over classes
            # grey with the hints | Levin | G-CRF hints only | G-CRF hints on its colorization | truth
            pick = [fields[k][k_sheet] for k in ("levin", "gcrf_points_only", "gcrf")]
            rows.append([img.hint_overlay(k_sheet), *(img.rgb(x)[0] for x in pick), img.truth[0]])
    out: dict[str, Any] = {
        "protocol": f"{len(lab)} {Path(data).name} {split} images at {size}x{size}; N random {patch}x{patch} squares reveal their mean true ab; RGB PSNR (dB)",
        "points": list(points),
        "curves": {k: (LEARNED_CURVES.get(k) if learned else None) or CURVES[k] for k in keys},
        "solver": "the app's stroke field (hint branch)" if learned else "paper-form G-CRF solve at the model grid",
        "seconds": round(time.time() - t0, 1),
    }
    if learned:
        out["hint_unary"] = {"weight": model.cfg.hint_unary, "unit": "x beta_test"}
    else:
        out["points_only_weights"] = {"base": points_only_weight, "hint": hint_weight, "unit": "x beta_test"}
    for k, v in res.items():
        out[k] = [round(float(x), 2) for x in np.mean(np.array(v), axis=0)]
    if sheet:
        from ..sheets import contact_sheet

        out["contact_sheet"] = str(contact_sheet(rows, sheet))
        out["contact_sheet_columns"] = f"grey with the {points[k_sheet]} hints | Levin | G-CRF hints only | G-CRF hints on its colorization | truth"
    return out


def evaluate_gcrf(
    checkpoint: Path, data: str, split: str = "test", n_samples: int = 5, limit: int = 0, seed: int = 0,
    sheet: str | Path | None = None, reveal_data: str | None = None, reveal_limit: int = 100, tune_limit: int = 30,
    points: tuple[int, ...] | None = None, **options: Any,
) -> dict[str, Any]:
    """Table 2 metrics on ``data`` (eob, variance, pairwise SSIM over ``n_samples``, and the rest
    of :func:`evaluate`, which takes ``options``), plus Table 3 (PSNR vs revealed points) on
    ``reveal_data`` (natural128) when given, with the hints-only weights tuned on ``tune_limit``
    images of its train split first."""
    from .evaluate import evaluate

    with contextlib.redirect_stdout(io.StringIO()):  # evaluate() prints; print the merged result once
        result = evaluate(checkpoint, data, split, n_samples, limit, seed, sheet=sheet, **options)
    if reveal_data:
        from engine.colorizer import load_model

        model = load_model(checkpoint)  # with its backbone, if it looks through one
        try:
            if getattr(model, "has_hint_branch", False):  # the file's own weight, tuned on train at export
                tuned = {**(model.meta.get("hint_tuning") or {"skipped": "the file's weight, not tuned at export"}),
                         "hint_unary": model.cfg.hint_unary, "base_weight": POINTS_ONLY_WEIGHT, "hint_weight": HINT_WEIGHT}
            else:
                tuned = tune_points_only(model, reveal_data, "train", tune_limit)
        except FileNotFoundError as e:  # no train split beside the test one: never tune on test
            tuned = {"base_weight": POINTS_ONLY_WEIGHT, "hint_weight": HINT_WEIGHT, "skipped": f"default weights ({e})"}
        result["psnr_vs_points"] = psnr_vs_points(
            model, reveal_data, split, reveal_limit, seed=seed, points=tuple(points or TABLE3_POINTS),
            points_only_weight=tuned["base_weight"], hint_weight=tuned["hint_weight"],
            sheet=Path(sheet).with_name(Path(sheet).stem + "_points" + Path(sheet).suffix) if sheet else None,
        )
        result["psnr_vs_points"]["points_only_tuning"] = tuned
    print(json.dumps(result, indent=2))
    return result
