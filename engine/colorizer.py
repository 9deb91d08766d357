"""The facade the GUI and the CLI use: models, devices, batching, seeds, progress and cancel.

Nothing above this module knows how a method works; adding a method means adding its module to
``engine/models`` (see :mod:`engine.models`) and its default files to ``resources/models``.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import weakref
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .color import AB_SCALE, StripUpsampler, guided_upsample_ab, recombine
from .errors import CheckpointError, DivcolorError, OutOfMemory
from .io import Photo
from .models import labels, model_class
from .models.backbone import METHOD as BACKBONE_METHOD
from .models.backbone import find_and_attach
from .sampling import sample_generators
from .strokes import Stroke
from .types import CancelToken, Colorization, ProgressFn, SamplingModel, StrokeField

__all__ = [
    "CancelToken", "Colorization", "Colorizer", "ModelInfo", "METHOD_LABELS", "StrokeField", "ambiguity_map",
    "default_model_dir", "is_out_of_memory", "load_model", "pick_device", "user_model_dir",
]

log = logging.getLogger(__name__)

VAE_MDN, GCRF_METHOD = "vae-mdn", "gcrf"
METHOD_LABELS = labels()
FAMILIES = ("general", "faces")
MAX_UPSAMPLE_PIXELS = 16_000_000  # per chunk of samples; bounds memory on huge photos
CPU_STRIP_PIXELS = 1 << 20  # rows converted at a time on the CPU path (a cancel check between strips)
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


_TORCH_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_CPU = torch.device("cpu")  # where sampling goes when the GPU's memory is not enough
_OOM_TEXT = ("out of memory", "can't allocate memory", "defaultcpuallocator", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator giving up (GPU or CPU), however torch or numpy said it:
    ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), ``MemoryError``, or the
    ``RuntimeError`` older torch versions raise ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, (MemoryError, _TORCH_OOM)):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in _OOM_TEXT)


def _release(device: torch.device) -> None:
    """Give cached blocks back after an allocation failed, so a retry starts from free memory."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
        self._cpu_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # OOM fallback models
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

        ``strokes`` (lock and resample): each sample is drawn exactly as without strokes, then
        gets them painted as the canvas paints them (:meth:`field` over the sample, same family:
        the solve that holds unstroked pixels on the sample's own colours). So sample k locked
        is sample k unlocked plus the user's strokes where they apply. The strokes are not
        handed to the model as hints: conditioning the sample's global code on one stroke
        recoloured whole photos (issue 28: a red stroke on a wall turned 4 of 6 VAE-MDN samples
        red-brown, mean ab change 15 outside the stroke; 1-2 now).
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
        ab_low = self._predict(model, photo, n, seed, first, temperature,
                               lambda f, m: report(paint * share * f, m), cancel)
        report(paint * share, "upsampling")
        if cancel:
            cancel.check()
        up_report = lambda f, m: report(paint * (share + (1 - share) * f), m)  # noqa: E731
        try:
            rgbs = self.upsample(photo, ab_low, up_report, cancel)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            _release(self.device)
            if self.device == _CPU:
                raise self._memory_error(photo, n, e) from e
            log.warning("The GPU ran out of memory upsampling %s to %dx%d; finishing on the CPU instead (slower).",
                        photo.stem, *photo.size)
            report(paint * share, "out of GPU memory: upsampling on the CPU")
            try:
                rgbs = self.upsample(photo, ab_low.cpu(), up_report, cancel, device=_CPU)
            except Exception as e2:
                if is_out_of_memory(e2):
                    raise self._memory_error(photo, n, e2) from e2
                raise
        out = [
            Colorization(rgb, ab_low[k].cpu(), info.method, info.name, first + k, seed, temperature)
            for k, rgb in enumerate(rgbs)
        ]
        if strokes:
            # A user's G-CRF file paints its own samples' strokes; other methods use the family's field.
            own = info.path if info.method == "gcrf" and checkpoint is not None else None
            field = self.field(photo, family=family if family in FAMILIES else None, checkpoint=own)
            for k, c in enumerate(out):
                c.rgb = field.propagate(strokes, c, cancel=cancel).rgb
                report(paint + (1 - paint) * (k + 1) / n, "painting the strokes")
        report(1.0, "done")
        self.last_seconds = time.perf_counter() - t0
        return out

    @torch.no_grad()
    def _predict(
        self, model: SamplingModel, photo: Photo, n: int, seed: int, first: int, temperature: float,
        report: ProgressFn, cancel: CancelToken | None,
    ) -> torch.Tensor:
        """ab/128 (n, 2, s, s) of samples first .. first + n - 1, on the colorizer's device.

        Running out of memory is survived where it can be: the samples are drawn in smaller
        batches (halving down to one at a time; each sample's randomness is its own, so the
        results are the same), then, on a GPU, on the CPU; each step is logged as a warning
        and shown in the progress message. Only when one sample does not fit in the CPU's
        memory is it an :class:`~engine.errors.OutOfMemory`.
        """
        size = model.input_size
        # L is reduced on the CPU: a 100-megapixel L would take 400 MB of GPU memory for nothing.
        L_small = F.interpolate(torch.from_numpy(photo.L)[None, None], size=(size, size), mode="area")
        device, batch, done = self.device, n, 0
        parts: list[torch.Tensor] = []
        while done < n:
            m = min(batch, n - done)
            net = model if device == self.device else self._cpu_copy(model)
            try:
                part = net.sample(
                    L_small.to(device), m, generator=sample_generators(seed, first + done, m, device),
                    temperature=temperature, include_mode=first + done == 0,
                    progress=lambda f, msg, d=done, m=m: report((d + f * m) / n, msg), cancel=cancel,
                )
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                _release(device)
                where = "The computer" if device == _CPU else "The GPU"
                if m > 1:
                    batch = max(1, m // 2)
                    log.warning("%s ran out of memory sampling %d colorizations of %s at once; trying %d at a time.",
                                where, m, photo.stem, batch)
                    report(done / n, f"out of memory: sampling {batch} at a time")
                    continue
                if device != _CPU:
                    log.warning("The GPU ran out of memory even for one colorization of %s; colorizing on the "
                                "CPU instead (slower).", photo.stem)
                    report(done / n, "out of GPU memory: sampling on the CPU")
                    device, batch = _CPU, n - done
                    continue
                raise self._memory_error(photo, n, e) from e
            parts.append(part.to(self.device) if device != self.device else part)
            done += m
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _cpu_copy(self, model: torch.nn.Module) -> torch.nn.Module:
        """A CPU copy of a GPU model, made once, for sampling after the GPU ran out of memory
        (the GPU copy stays where it is for the next photo)."""
        with self._lock:
            cpu = self._cpu_copies.get(model)
            if cpu is None:
                cpu = self._cpu_copies[model] = copy.deepcopy(model).to("cpu")
            return cpu

    @staticmethod
    def _memory_error(photo: Photo, n: int, cause: BaseException) -> OutOfMemory:
        return OutOfMemory(
            f"Not enough memory to colorize {photo.stem} ({photo.size[0]}x{photo.size[1]}, {n} colorizations), "
            "even one at a time. Close other programs, ask for fewer colorizations, or use a smaller copy of the photo."
        )

    @torch.no_grad()
    def upsample(
        self, photo: Photo, ab_low: torch.Tensor, report: ProgressFn | None = None, cancel: CancelToken | None = None,
        device: torch.device | None = None,
    ) -> list[np.ndarray]:
        """Low-resolution ab/128 (n, 2, s, s) -> n full-resolution RGB images on the photo's L
        (on ``device``, default the colorizer's)."""
        device = device or self.device
        if device.type == "cpu":
            return self._upsample_cpu(photo, ab_low, report, cancel)
        L = torch.from_numpy(photo.L).to(device)
        n = ab_low.shape[0]
        chunk = max(1, MAX_UPSAMPLE_PIXELS // max(1, L.numel()))
        out: list[np.ndarray] = []
        for i in range(0, n, chunk):
            if cancel:
                cancel.check()
            ab = guided_upsample_ab(ab_low[i : i + chunk].to(device) * AB_SCALE, L)
            rgb = recombine(L, ab).permute(0, 2, 3, 1).float().cpu().numpy()
            out.extend(rgb)
            if report:
                report(min(n, i + chunk) / n, "upsampling")
        return out

    @staticmethod
    def _upsample_cpu(
        photo: Photo, ab_low: torch.Tensor, report: ProgressFn | None, cancel: CancelToken | None
    ) -> list[np.ndarray]:
        """The CPU path of :meth:`upsample`: the export kernel
        (:meth:`engine.color.StripUpsampler.quantized`), one sample per thread, at the photo's
        own bit depth, scaled to [0, 1].

        Same guided upsampling and gamut mapping as the torch path, to within half a level of the
        photo's depth (an 8-bit photo's 256 levels are all it can show or save; a 16-bit one
        keeps its 65536), at about a quarter of the time: numpy blocks that stay in cache, a table in
        place of the power function, no GIL. On 8 samples of a 1024-px photo the torch path's
        conversion was 80 % of ``sample`` (benchmarks/bench_vae_mdn.py measures both)."""
        H, W = photo.L.shape
        depth = 16 if photo.bit_depth == 16 else 8
        up = StripUpsampler(ab_low.detach().float().cpu() * AB_SCALE, torch.from_numpy(photo.L))
        rows = max(1, CPU_STRIP_PIXELS // W)

        def one(k: int) -> np.ndarray:
            rgb = np.empty((H, W, 3), np.float32)
            for y0 in range(0, H, rows):
                if cancel:
                    cancel.check()
                y1 = min(H, y0 + rows)
                up.quantized(k, y0, y1, depth, out=rgb[y0:y1])  # the codes / top level, in [0, 1]
            return rgb

        n = ab_low.shape[0]
        workers = max(1, min(n, torch.get_num_threads()))
        if workers == 1:
            out = []
            for k in range(n):
                out.append(one(k))
                if report:
                    report((k + 1) / n, "upsampling")
            return out
        with ThreadPoolExecutor(workers, thread_name_prefix="divcolor-upsample") as pool:
            futures = [pool.submit(one, k) for k in range(n)]
            try:
                for done, f in enumerate(futures, 1):
                    f.result()
                    if report:  # from the calling thread, as the torch path does
                        report(done / n, "upsampling")
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            return [f.result() for f in futures]


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
