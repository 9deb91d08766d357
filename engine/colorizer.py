"""The facade the GUI and the CLI use: models, devices, batching, seeds, progress and cancel.

Nothing above this module knows how a method works; adding a method means adding its module to
``engine/models`` (see :mod:`engine.models`) and its default files to ``resources/models``.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .color import AB_SCALE, guided_upsample_ab, recombine
from .errors import CheckpointError, DivcolorError, OutOfMemory
from .io import Photo
from .models import labels, model_class
from .models.backbone import METHOD as BACKBONE_METHOD
from .models.backbone import find_and_attach
from .sampling import sample_generators
from .strokes import Stroke, rasterize
from .types import CancelToken, Colorization, Hints, ProgressFn, SamplingModel, StrokeField

__all__ = [
    "CancelToken", "Colorization", "Colorizer", "ModelInfo", "METHOD_LABELS", "StrokeField", "ambiguity_map",
    "default_model_dir", "load_model", "pick_device", "user_model_dir",
]

VAE_MDN, GCRF_METHOD = "vae-mdn", "gcrf"
METHOD_LABELS = labels()
FAMILIES = ("general", "faces")
MAX_UPSAMPLE_PIXELS = 16_000_000  # per chunk of samples; bounds memory on huge photos
FIELD_CACHE_PHOTOS = 4  # stroke fields (matrices, factorisations) are kept for this many photos


def _levin_field(colorizer: Colorizer, photo: Photo, family: str, checkpoint: str | None) -> StrokeField:
    from .propagate import LevinField  # scipy is only imported once strokes are used

    return LevinField(photo)


def _gcrf_field(colorizer: Colorizer, photo: Photo, family: str, checkpoint: str | None) -> StrokeField:
    from .propagate import GCRFStrokeField

    info = colorizer.resolve(GCRF_METHOD, family, checkpoint)
    return GCRFStrokeField(colorizer.model(info), photo, model_name=info.name)


FIELDS: dict[str, Callable[["Colorizer", Photo, str, "str | None"], "StrokeField"]] = {"levin": _levin_field, GCRF_METHOD: _gcrf_field}
"""Stroke-propagation methods by name. A method that needs a trained model (the G-CRF) registers
its factory here under the model's method name; ``Colorizer.field`` then prefers it for "auto"
whenever such a model is available and falls back to "levin" otherwise."""
FIELD_FALLBACK = "levin"


@dataclass
class ModelInfo:
    name: str  # file stem, e.g. "vae_mdn_general"
    method: str
    family: str  # "general", "faces" or "user"
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{METHOD_LABELS.get(self.method, self.method)} ({self.family})"


def default_model_dir() -> Path:
    """The shipped models: the installed ``divcolor_resources`` package, or the source tree."""
    try:
        return Path(str(resources.files("divcolor_resources") / "models"))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "resources" / "models"


def user_model_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("divcolor", "divcolor")) / "models"


def default_model_name(method: str, family: str) -> str:
    return f"{method.replace('-', '_')}_{family}"


def load_model(path: str | Path, backbone_dirs: list[Path] | None = None) -> torch.nn.Module:
    """Load any divcolor model file, whatever its method, with the shared backbone it looks
    through (found beside it, then in ``backbone_dirs``, by default the model directories)."""
    path = Path(path)
    ck = load_checkpoint(path)
    if ck.method == BACKBONE_METHOD:
        raise CheckpointError(f"'{path.name}' is a backbone (the grey network the methods share), not a colorization "
                              "model; load a VAE-MDN, G-CRF or PIC file trained on it.")
    cls = model_class(ck.method)
    if cls is None:
        known = ", ".join(METHOD_LABELS)
        raise CheckpointError(f"'{path.name}' holds a '{ck.method}' model, which this divcolor cannot run (it knows {known}).")
    model = cls.from_loaded(ck, path.name)
    dirs = backbone_dirs if backbone_dirs is not None else [default_model_dir(), user_model_dir()]
    find_and_attach(model, path, dirs)
    return model


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DivcolorError("CUDA was requested but no CUDA GPU is available; use --device cpu or auto.")
    return torch.device(name)


class Colorizer:
    """Loads models lazily, keeps them cached, and turns photos into colorizations."""

    def __init__(self, device: str = "auto", model_dirs: list[Path] | None = None):
        self.device = pick_device(device)
        self.stroke_family = "general"  # which shipped G-CRF the stroke field uses
        self._meta_cache: dict[Path, tuple[tuple[int, int], dict[str, Any] | None]] = {}
        self.model_dirs = model_dirs if model_dirs is not None else [default_model_dir(), user_model_dir()]
        self._models: dict[str, torch.nn.Module] = {}
        self._extra: dict[str, ModelInfo] = {}
        self._lock = threading.Lock()
        self._fields: OrderedDict[Photo, dict[str, StrokeField]] = OrderedDict()
        self._fields_lock = threading.Lock()
        self.last_seconds: float = 0.0

    # --- models -------------------------------------------------------------------------------
    def available(self) -> list[ModelInfo]:
        """Every model file found in the model directories plus any loaded by path."""
        found: dict[str, ModelInfo] = {}
        for d in self.model_dirs:
            if not d.is_dir():
                continue
            for f in sorted(d.glob("*.safetensors")):
                ck_meta = self._file_meta(f)
                if ck_meta is None or ck_meta.get("method") == BACKBONE_METHOD:  # shared part, not a method
                    continue
                fam = f.stem.rsplit("_", 1)[-1] if f.stem.rsplit("_", 1)[-1] in FAMILIES else "user"
                found.setdefault(f.stem, ModelInfo(f.stem, ck_meta.get("method", "?"), fam, f, ck_meta))
        found.update(self._extra)
        return list(found.values())

    def _file_meta(self, f: Path) -> dict[str, Any] | None:
        """A model file's metadata, read (and validated) once per version of the file."""
        st = f.stat()
        key = (st.st_mtime_ns, st.st_size)
        cached = self._meta_cache.get(f)
        if cached is None or cached[0] != key:
            try:
                meta: dict[str, Any] | None = load_checkpoint(f).meta
            except CheckpointError:
                meta = None
            self._meta_cache[f] = cached = (key, meta)
        return cached[1]

    def methods(self) -> list[str]:
        return sorted({m.method for m in self.available()}, key=lambda m: list(METHOD_LABELS).index(m) if m in METHOD_LABELS else 99)

    def add_model(self, path: str | Path) -> ModelInfo:
        """Register a user's own model file (validated now, so errors surface at once)."""
        path = Path(path).resolve()
        for info in self._extra.values():
            if info.path == path:
                return info
        model = load_model(path, self.model_dirs)
        name = "user:" + re.sub(r"\W", "_", path.stem)
        info = ModelInfo(name, model.meta.get("method", "?"), "user", path, model.meta)
        with self._lock:
            self._models[name] = model.to(self.device)
            self._extra[name] = info
        return info

    def resolve(self, method: str, family: str = "general", checkpoint: str | Path | None = None) -> ModelInfo:
        if checkpoint is not None:
            return self.add_model(checkpoint)
        name = default_model_name(method, family)
        for info in self.available():
            if info.name == name:
                return info
        candidates = [i for i in self.available() if i.method == method]
        if candidates:
            return candidates[0]
        raise CheckpointError(
            f"No '{method}' model found (looked for {name}.safetensors in {', '.join(str(d) for d in self.model_dirs)}). "
            "Train one with divcolor-train or pass --checkpoint."
        )

    def model(self, info: ModelInfo) -> torch.nn.Module:
        with self._lock:
            if info.name not in self._models:
                self._models[info.name] = load_model(info.path, self.model_dirs).to(self.device)
            return self._models[info.name]

    # --- strokes ------------------------------------------------------------------------------
    def field_method(self, method: str = "auto") -> str:
        """The stroke method ``field(photo, method)`` uses.

        A learned method ("gcrf", or "auto" meaning the first learned one) is used when a model
        for it is available; otherwise the answer is "levin", which needs no model. Unknown
        names raise DivcolorError.
        """
        if method == FIELD_FALLBACK:
            return method
        if method == "auto":
            learned = [m for m in FIELDS if m != FIELD_FALLBACK]
        elif method in FIELDS:
            learned = [method]
        else:
            known = ", ".join(dict.fromkeys(["auto", *FIELDS]))
            raise DivcolorError(f"Unknown stroke method '{method}' (known: {known}).")
        if learned:
            have = {info.method for info in self.available()}
            for m in learned:
                if m in have:
                    return m
        return FIELD_FALLBACK

    def field(
        self, photo: Photo, method: str = "auto", family: str | None = None, checkpoint: str | Path | None = None
    ) -> StrokeField:
        """The stroke field of ``photo`` for ``method`` and model (``family``, default
        ``stroke_family``, or a ``checkpoint`` of that method), cached per photo *and* model
        (the last few photos), so successive strokes on one photo reuse its matrices and
        factorisations, and choosing another model never reuses the first one's field."""
        resolved = self.field_method(method)
        fam = family or self.stroke_family
        ck = str(checkpoint) if checkpoint is not None else None
        key = resolved if resolved == FIELD_FALLBACK else f"{resolved}:{fam}:{ck or ''}"
        with self._fields_lock:
            per_photo = self._fields.get(photo)
            if per_photo is not None:
                self._fields.move_to_end(photo)
                if key in per_photo:
                    return per_photo[key]
        made = FIELDS[resolved](self, photo, fam, ck)
        with self._fields_lock:
            per_photo = self._fields.setdefault(photo, {})
            self._fields.move_to_end(photo)
            made = per_photo.setdefault(key, made)
            while len(self._fields) > FIELD_CACHE_PHOTOS:
                self._fields.popitem(last=False)
        return made

    # --- sampling -----------------------------------------------------------------------------
    def sample(
        self,
        photo: Photo,
        method: str = VAE_MDN,
        n: int = 8,
        seed: int = 0,
        temperature: float = 1.0,
        family: str = "general",
        checkpoint: str | Path | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        *,
        first: int = 0,
        strokes: Sequence[Stroke] | None = None,
    ) -> list[Colorization]:
        """Samples ``first`` .. ``first + n - 1`` of the set ``seed`` names, at the photo's size.

        Sample 0 is the most likely colorization, the others are draws (temperature widens or
        narrows them); each sample's randomness comes from (seed, index) alone, so the same seed
        gives the same set, asking for more (``first`` = how many there are) never repeats one,
        and any sample can be recreated alone with ``n=1, first=index``.

        ``strokes`` (lock and resample): the samples agree with them (each method takes them as
        hints, see :class:`engine.types.SamplingModel`) and then get them painted as the canvas
        does (:meth:`field` over each sample, same family), so what the user locked stays and
        the rest is new.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        if first < 0:
            raise ValueError("first must be 0 or more")
        t0 = time.perf_counter()
        report = progress or (lambda f, m: None)
        info = self.resolve(method, family, checkpoint)
        report(0.0, f"loading {info.label}")
        model = self.model(info)
        if cancel:
            cancel.check()
        strokes = list(strokes or [])
        # Share of the progress bar for prediction: sequential samplers (PIC) spend most of the
        # time there, one-pass decoders (VAE-MDN, G-CRF) in the full-size upsampling.
        share = 0.9 if model.REPORTS_PROGRESS else 0.3
        paint = 0.5 if strokes else 1.0  # with strokes, the second half paints them on each sample
        try:
            ab_low = self._predict(model, photo, n, seed, first, temperature, strokes,
                                   lambda f, m: report(paint * share * f, m), cancel)
            report(paint * share, "upsampling")
            if cancel:
                cancel.check()
            rgbs = self.upsample(photo, ab_low, lambda f, m: report(paint * (share + (1 - share) * f), m), cancel)
        except torch.cuda.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            raise OutOfMemory(
                f"The GPU ran out of memory colorizing {photo.stem} ({photo.size[0]}x{photo.size[1]}, {n} samples). "
                "Ask for fewer samples or switch to the CPU."
            ) from e
        out = [
            Colorization(rgb, ab_low[k].cpu(), info.method, info.name, first + k, seed, temperature)
            for k, rgb in enumerate(rgbs)
        ]
        if strokes:
            field = self.field(photo, family=family if family in FAMILIES else None)
            for k, c in enumerate(out):
                c.rgb = field.propagate(strokes, c, cancel=cancel).rgb
                report(paint + (1 - paint) * (k + 1) / n, "painting the strokes")
        report(1.0, "done")
        self.last_seconds = time.perf_counter() - t0
        return out

    @torch.no_grad()
    def _predict(
        self, model: SamplingModel, photo: Photo, n: int, seed: int, first: int, temperature: float,
        strokes: list[Stroke], report: ProgressFn, cancel: CancelToken | None,
    ) -> torch.Tensor:
        size = model.input_size
        L = torch.from_numpy(photo.L)[None, None].to(self.device)
        L_small = F.interpolate(L, size=(size, size), mode="area")
        hints = None
        if strokes:
            cov, ab = rasterize(strokes, photo.size, (size, size), L=L_small[0, 0].cpu().numpy())
            hints = Hints(torch.from_numpy(cov).to(self.device), torch.from_numpy(ab).to(self.device))
        gens = sample_generators(seed, first, n, self.device)
        return model.sample(
            L_small, n, generator=gens, temperature=temperature, include_mode=first == 0, hints=hints,
            progress=report, cancel=cancel,
        )

    @torch.no_grad()
    def upsample(
        self, photo: Photo, ab_low: torch.Tensor, report: ProgressFn | None = None, cancel: CancelToken | None = None
    ) -> list[np.ndarray]:
        """Low-resolution ab/128 (n, 2, s, s) -> n full-resolution RGB images on the photo's L."""
        L = torch.from_numpy(photo.L).to(self.device)
        n = ab_low.shape[0]
        chunk = max(1, MAX_UPSAMPLE_PIXELS // max(1, L.numel()))
        out: list[np.ndarray] = []
        for i in range(0, n, chunk):
            if cancel:
                cancel.check()
            ab = guided_upsample_ab(ab_low[i : i + chunk].to(self.device) * AB_SCALE, L)
            rgb = recombine(L, ab).permute(0, 2, 3, 1).float().cpu().numpy()
            out.extend(rgb)
            if report:
                report(min(n, i + chunk) / n, "upsampling")
        return out


def ambiguity_map(samples: Sequence[Colorization], size: tuple[int, int] | None = None) -> np.ndarray:
    """Where the samples disagree, as an (H, W) float32 map in [0, 1]: "where a stroke would
    help most", for the gallery's overlay.

    Per pixel, the spread of the samples' colours: the root mean squared distance of their ab
    (from the full-resolution RGB, so every method counts alike) to their mean, computed on a
    grid of at most 128 px on the long side (cheap, and disagreement is a regional notion) and
    upsampled to ``size`` (W, H) (default: the samples' own), divided by its maximum so the
    most ambiguous place is 1. Fewer than two samples, or samples that agree: all zeros.
    """
    from .color import rgb_to_lab

    if not samples:
        raise ValueError("ambiguity_map needs at least one sample")
    H, W = samples[0].rgb.shape[:2]
    out_w, out_h = size if size is not None else (W, H)
    if len(samples) < 2:
        return np.zeros((out_h, out_w), np.float32)
    scale = min(1.0, 128 / max(H, W))
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    rgb = torch.from_numpy(np.stack([np.ascontiguousarray(c.rgb, np.float32) for c in samples])).permute(0, 3, 1, 2)
    rgb = F.interpolate(rgb, size=(h, w), mode="area")
    ab = rgb_to_lab(rgb.double())[:, 1:]
    spread = ((ab - ab.mean(0, keepdim=True)) ** 2).sum(1).mean(0).sqrt()
    spread = F.interpolate(spread[None, None].float(), size=(out_h, out_w), mode="bilinear", align_corners=False)[0, 0]
    top = float(spread.max())
    if top <= 1e-6:
        return np.zeros((out_h, out_w), np.float32)
    return (spread / top).clamp(0, 1).numpy().astype(np.float32)
