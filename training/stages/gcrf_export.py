"""G-CRF export: the checkpoint the app loads, assembled from a run's finished stages (with or
without the learned hint branch), and the weights tuned on the *training* split at export, each
cached in the run directory with the weights and data it was computed for:

- β of the automatic solve (:func:`tune_beta_auto`, RUN_DIR/gcrf-hoc/beta.json);
- the weak unary toward the picked colorization under strokes (:func:`tune_stroke_base`: PSNR
  after revealing a few ground-truth squares on top of the automatic colorization; tune.json) —
  a deviation from the paper, which does not say how strokes meet a picked sample;
- the pull toward the hint branch (:func:`tune_hint_unary`, RUN_DIR/gcrf-hints/tune.json).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine import metrics as M
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.color import AB_SCALE, recombine
from engine.files import atomic_write
from engine.models.backbone import weights_digest
from engine.models.gcrf import GCRF, METHOD

from .. import data as D
from ..loop import half_floats, read_state, stage_times
from .backbone import backbone_meta
from .gcrf import HINTS_STAGE, HOC_STAGE, MODEL_FILE
from .gcrf_hoc import assemble
from .gcrf_reveal import ImageHintSolver, RevealImage, evenly_spaced, random_squares, reveal_squares


TUNE_FILE = "tune.json"
BETA_FILE = "beta.json"
STROKE_BASE_CANDIDATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)  # x beta_test; one inverse each per image
BETA_AUTO_CANDIDATES = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # β of the automatic solve; 5 is the paper's
COLOUR_TOLERANCE = 0.15  # β may not take more than this fraction of the photos' colourfulness (issue 12's bound)
HINT_UNARY_CANDIDATES = (0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01)  # x beta_test


def export(
    run_dir: Path, dest: Path | None = None, metrics: dict | None = None, half: bool = False,
    data: str | None = None, tune_images: int = 16, beta_tune_images: int = 64,
) -> Path:
    """Write the G-CRF checkpoint the app loads (grey encoder, decoder, MDN, embedding net),
    after tuning on the training split once: β of the automatic solve on ``beta_tune_images``
    (cached in RUN_DIR/gcrf-hoc/beta.json), then the strokes' weak-unary weight on
    ``tune_images`` (tune.json); each skipped with a warning if the data is not found."""
    run_dir = Path(run_dir)
    model, _, info = assemble(run_dir)
    data = data or (info["hoc"].get("stage_config") or {}).get("data")
    # No training statistics (PCA, histogram): nothing trains from a G-CRF file with the
    # decoder's losses, and their 0.33 MiB is what keeps the general file under 10 MiB.
    tensors = model.inference_tensors()
    train = lambda n: D.load_lab(data, "train", model.cfg.size, n)
    digest = weights_digest(tensors)
    key = lambda n: {"model": digest, "data": str(data), "images": int(n)}
    beta = tune = None
    if data and beta_tune_images > 0:
        beta = _cached_tuning(run_dir / HOC_STAGE / BETA_FILE, key(beta_tune_images),
                              lambda: tune_beta_auto(model, train(beta_tune_images)), "β")
    if beta is not None:
        model.cfg.beta_auto = float(beta["best"])
    if data and tune_images > 0:  # over the tuned β's samples
        tune = _cached_tuning(run_dir / HOC_STAGE / TUNE_FILE, {**key(tune_images), "beta_auto": model.cfg.beta_auto},
                              lambda: tune_stroke_base(model, train(tune_images)), "the stroke weight")
    if tune is not None:
        model.cfg.stroke_base = float(tune["best"])
    if half:
        tensors = half_floats(tensors)
    vmeta, hmeta, mmeta = info["vae"], info["hoc"], info["mdn"]
    meta = {
        "method": METHOD,
        "config": model.cfg.to_dict(),
        "data": vmeta.get("data"),
        "steps": {"vae": vmeta.get("step"), HOC_STAGE: hmeta.get("step"), "mdn": mmeta.get("step")},
        "training": {"vae": vmeta.get("stage_config"), HOC_STAGE: hmeta.get("stage_config"), "mdn": mmeta.get("stage_config")},
        "time": stage_times(vae=vmeta, **{HOC_STAGE: hmeta}, mdn=mmeta),
        "stroke_tuning": tune or {},
        "beta_tuning": beta or {},
        "metrics": metrics or {},
        **backbone_meta(vmeta.get("stage_config")),
    }
    dest = Path(dest) if dest else run_dir / MODEL_FILE
    save_checkpoint(dest, tensors, meta)
    print(f"wrote {dest} ({dest.stat().st_size / 2**20:.2f} MiB)", file=sys.stderr)
    return dest


def _cached_tuning(
    cache: Path, key: dict[str, Any], compute: Callable[[], dict[str, Any]], what: str,
) -> dict[str, Any] | None:
    """A tuning computed once and cached in ``cache`` with the ``key`` it was computed for (the
    model's weights, the data, the image count): a rerun of export reads it, and a stage trained
    further, or other data, computes it again. None, with a warning, where the data has no train
    split: the model keeps its own value."""
    if cache.exists():
        stored = json.loads(cache.read_text())
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["result"]
    try:
        result = compute()
    except FileNotFoundError as e:
        print(f"export: cannot tune {what} ({e}); keeping the model's", file=sys.stderr)
        return None
    atomic_write(cache, json.dumps({"key": key, "result": result}, indent=2) + "\n")
    return result


@torch.no_grad()
def tune_beta_auto(
    model: GCRF, lab: D.LabSet, candidates: tuple[float, ...] = BETA_AUTO_CANDIDATES, n_samples: int = 5,
    colour_tolerance: float = COLOUR_TOLERANCE,
) -> dict[str, Any]:
    """Pick β of the automatic solve on *training* images at the model grid: the smallest
    Table 2 error-of-best (L1, ``n_samples`` MDN means) among the β whose samples stay within
    ``colour_tolerance`` of the photos' colourfulness (else the most colourful β). A smaller β
    smooths more along Ŝ: best-of-n falls, and so do colourfulness and variance; unconstrained,
    general photos lost 20 % of their colourfulness. Each image is decoded once and solved per β."""
    model.eval()
    keys = ("eob", "first", "variance", "colourfulness")
    acc: dict[float, dict[str, list[float]]] = {c: {k: [] for k in keys} for c in candidates}
    truth_colour: list[float] = []
    saved, t0 = model.cfg.beta_auto, time.time()
    try:
        for i in range(len(lab)):
            L, ab = lab.L[i : i + 1], lab.ab[i]
            _, unary = model.colorize(L, n_samples, mode="means", return_unary=True)
            S_hat = model.similarity(L)[0]
            truth_colour.append(float(M.colourfulness(recombine(L[0, 0], ab[None] * AB_SCALE))[0]))
            for c in candidates:
                model.cfg.beta_auto = c
                x = model.solve_automatic(unary, S_hat).clamp(-1, 1).float()
                err = (x - ab[None]).abs().mean(dim=(1, 2, 3))
                a = acc[c]
                a["eob"].append(float(err.min()))
                a["first"].append(float(err[0]))
                a["variance"].append(float(x.var(0).mean()) if n_samples > 1 else 0.0)
                a["colourfulness"].append(float(M.colourfulness(recombine(L[0, 0], x * AB_SCALE)).mean()))
    finally:
        model.cfg.beta_auto = saved
    mean = {c: {k: float(np.mean(v)) for k, v in acc[c].items()} for c in candidates}
    target = float(np.mean(truth_colour))
    vivid = [c for c in candidates if mean[c]["colourfulness"] >= (1 - colour_tolerance) * target]
    best = min(vivid, key=lambda c: mean[c]["eob"]) if vivid else max(candidates, key=lambda c: mean[c]["colourfulness"])
    table = {str(c): {"error_of_best_l1": round(m["eob"], 5), "first_l1": round(m["first"], 5),
                      "variance": round(m["variance"], 6), "colourfulness": round(m["colourfulness"], 2)}
             for c, m in mean.items()}
    return {"best": best, "by_beta": table, "colourfulness_truth": round(target, 2), "colour_tolerance": colour_tolerance,
            "how": "least best-of-n L1 among the β within colour_tolerance of the photos' colourfulness",
            "images": len(lab), "samples": n_samples, "seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def tune_stroke_base(
    model: GCRF, lab: D.LabSet, candidates: tuple[float, ...] = STROKE_BASE_CANDIDATES,
    points: tuple[int, ...] = (1, 10), seed: int = 0,
) -> dict[str, Any]:
    """Pick the weak-unary weight (x beta_test) that best corrects the automatic colorization.

    For each image: the top MDN mode's G-CRF colorization is the picked sample; ``points``
    random squares (3 px at 64x64: Table 3's 7x7 at 128x128) reveal their mean ground-truth ab
    as strokes; score = RGB PSNR vs the truth, averaged over images and point counts.
    """
    model.eval()
    s, beta = model.cfg.size, model.cfg.beta_test
    patch = max(1, round(7 * s / 128))
    scores = {c: [] for c in candidates}
    t0 = time.time()
    for i in range(len(lab)):
        L, ab = lab.L[i : i + 1], lab.ab[i]
        base = model.colorize(L, 1, mode="means")[0].float()
        S_hat = model.similarity(L)[0]
        truth = recombine(L[0, 0], ab[None] * AB_SCALE)
        rng = np.random.default_rng(seed + i)
        hints = [reveal_squares(ab, random_squares(rng, n, s, patch), patch) for n in points]
        solve = ImageHintSolver(S_hat, beta)
        for c in candidates:
            for cov, tgt in hints:
                x = solve(cov, tgt, base, c * beta)
                scores[c].append(M.psnr(recombine(L[0, 0], x[None] * AB_SCALE), truth))
    mean = {str(c): round(float(np.mean(v)), 3) for c, v in scores.items()}
    best = max(candidates, key=lambda c: np.mean(scores[c]))
    return {"best": best, "psnr": mean, "images": len(lab), "points": list(points), "seconds": round(time.time() - t0, 1)}


def tune_beta_file(path: Path, data: str, images: int = 64, backbone_dirs: list[Path] | None = None) -> dict[str, Any]:
    """Tune a G-CRF file's β of the automatic solve (:func:`tune_beta_auto`) on ``images``
    training images of ``data`` and write it into the file (meta ``beta_tuning``): what export
    does, for a file exported before it did."""
    from engine.colorizer import default_model_dir, load_model

    model = load_model(path, [*(backbone_dirs or []), default_model_dir()])
    tune = tune_beta_auto(model, D.load_lab(data, "train", model.cfg.size, images))
    _store_tuning(path, {"beta_auto": float(tune["best"])}, "beta_tuning", tune)
    return tune


def _store_tuning(path: Path, config: dict[str, Any], key: str, tune: dict[str, Any]) -> None:
    """Rewrite a model file with ``config`` fields changed and ``tune`` recorded under ``key``."""
    ck = load_checkpoint(path, METHOD)
    meta = {k: v for k, v in ck.meta.items() if k not in ("format_version", "created")}
    meta["config"] = {**meta["config"], **config}
    meta[key] = tune
    save_checkpoint(path, dict(ck.tensors), meta)


def export_hints(
    run_dir: Path, dest: Path | None = None, half: bool = False, need_finished: bool = True,
    data: str | None = None, tune_images: int = 16, hint_data: str | None = None, hint_tune_images: int = 64,
    beta_tune_images: int = 64,
) -> Path:
    """The G-CRF file with the trained hint branch: the ``--init`` file (or this run's assembled
    stages) plus the ``gcrf-hints`` weights, its config saying ``hint_branch``; then the pull
    toward the branch (``hint_unary``) is tuned on ``hint_tune_images`` training images of
    ``hint_data`` (default ``data``, then the stage's) and written into the file, so the app
    uses the weight evaluation reports (cached in RUN_DIR/gcrf-hints/tune.json)."""
    run_dir = Path(run_dir)
    st = read_state(run_dir, HINTS_STAGE, need_finished)
    init = st.meta.get("init") or ""
    if init:
        ck = load_checkpoint(init, METHOD)
        tensors = {k: v for k, v in ck.tensors.items() if not k.startswith("hint_net.")}
        meta = {k: v for k, v in ck.meta.items() if k not in ("format_version", "created")}
    else:
        exported = export(run_dir, run_dir / "base_model.safetensors", half=half, data=data, tune_images=tune_images,
                          beta_tune_images=beta_tune_images)
        ck = load_checkpoint(exported, METHOD)
        tensors, meta = dict(ck.tensors), {k: v for k, v in ck.meta.items() if k not in ("format_version", "created")}
    hint = {f"hint_net.{k}": v for k, v in st.subset("hint_net").items()}
    if half:
        hint = half_floats(hint)
    tensors.update(hint)
    meta["config"] = {**meta["config"], **{k: st.config[k] for k in ("hint_branch", "hint_width", "hint_unary")}}
    meta.setdefault("steps", {})[HINTS_STAGE] = st.meta.get("step")
    meta.setdefault("training", {})[HINTS_STAGE] = st.meta.get("stage_config")
    meta.setdefault("time", {}).update(stage_times(**{HINTS_STAGE: st.meta}))
    tune_data = hint_data or data or (st.meta.get("stage_config") or {}).get("data")
    if hint_tune_images > 0 and tune_data:
        untuned = save_checkpoint(run_dir / HINTS_STAGE / "untuned.safetensors", tensors, meta)
        dirs = [Path(c["backbone_file"]).parent for c in (meta.get("training") or {}).values()
                if isinstance(c, dict) and c.get("backbone_file")]
        try:
            tune = _tune_hints(untuned, tensors, tune_data, hint_tune_images, run_dir / HINTS_STAGE / TUNE_FILE, dirs)
        finally:
            untuned.unlink()
        if tune is not None:
            meta["config"]["hint_unary"] = float(tune["hint_unary"])
            meta["hint_tuning"] = tune
    dest = save_checkpoint(Path(dest) if dest else run_dir / MODEL_FILE, tensors, meta)
    print(f"wrote {dest} ({dest.stat().st_size / 2**20:.2f} MiB)", file=sys.stderr)
    return dest


def _tune_hints(
    path: Path, tensors: dict[str, torch.Tensor], data: str, images: int, cache: Path, backbone_dirs: list[Path],
) -> dict[str, Any] | None:
    """The pull toward the hint branch (:func:`tune_hint_unary`) of the model file ``path`` (whose
    ``tensors`` key the cache), on ``images`` training images of ``data``. 16-20 images picked
    0.001 on one subset of natural128 train and 0.0001 on another (the curve is flat near its
    top): the default is 64."""
    from engine.colorizer import default_model_dir, load_model

    key = {"model": weights_digest(tensors), "data": str(data), "images": int(images)}
    return _cached_tuning(cache, key, lambda: tune_hint_unary(
        load_model(path, [*backbone_dirs, default_model_dir()]), data, "train", images), "the pull toward the hint branch")


@torch.no_grad()
def tune_hint_unary(
    model: GCRF, data: str, split: str = "train", limit: int = 20, points: tuple[int, ...] = (1, 10, 50),
    candidates: tuple[float, ...] = HINT_UNARY_CANDIDATES, size: int = 128, patch: int = 7, seed: int = 10_000,
) -> dict[str, Any]:
    """Pick the pull toward a hint branch's unary (x beta_test) on *training* images: mean
    Table 3 PSNR of the app's field, hints alone and over the automatic colorization. Sets
    ``model.cfg.hint_unary`` to the best and returns the scores."""
    model.eval()
    lab = evenly_spaced(D.load_lab(data, split, size), limit)
    scores: dict[float, list[float]] = {c: [] for c in candidates}
    t0 = time.time()
    for c in candidates:
        model.cfg.hint_unary = c
        for i in range(len(lab)):
            img = RevealImage(model, lab.L[i : i + 1], lab.ab[i], points, patch, seed + i)
            scores[c] += img.curve(img.app_fields(None)) + img.curve(img.app_fields(img.base, local=False))
    mean = {c: float(np.mean(v)) for c, v in scores.items()}
    best = max(candidates, key=lambda c: mean[c])
    model.cfg.hint_unary = best
    return {"hint_unary": best, "psnr": {str(c): round(v, 3) for c, v in mean.items()}, "points": list(points),
            "data": f"{Path(data).name} {split} ({len(lab)} images)", "seconds": round(time.time() - t0, 1)}
