"""Stage ``pic`` (Royer et al. §3.3): maximum likelihood of the quantised chroma given L, Adam
(lr 1e-3, betas 0.95 / 0.9995) with a per-iteration multiplicative learning-rate decay, and
Polyak (exponential moving) averaging of the weights; the averaged weights are exported.
Also ``evaluate_pic``: bits per dimension plus the diversity metrics of the other methods.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from engine.checkpoint import save_checkpoint
from engine.errors import ConfigError
from engine.models.pic import METHOD, PIC, Noise, PICConfig, mixture_log_prob

from .. import data as D
from ..batches import BatchSampler
from ..config import StageConfig
from ..loop import LoopSpec, autocast, prepare, read_state, run_loop, half_floats, stage_times
from ..taps_cache import feeding, training_set
from .backbone import attach_stage_backbone, backbone_fields, backbone_meta

STAGE = "pic"
MODEL_FILE = "model.safetensors"


@dataclass
class PICStageConfig(StageConfig):
    steps: int = 3000
    lr: float = 1e-3
    batch_size: int = 32
    lr_decay: float = 0.9995  # per iteration (paper: 0.99995 over 150 epochs)
    polyak: float = 0.999  # decay of the weight average that is exported
    size: int = 64
    subsample: int = 2
    embed_width: int = 16
    embed_blocks: int = 1
    embed_dim: int = 48
    width: int = 48
    n_blocks: int = 4
    n_mix: int = 10
    backbone_file: str = ""
    flips: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # ~55 min on 2 CPU cores: 64 px L, 32x32 chroma, a 48-channel decoder.
        "cpu": {"steps": 3000, "batch_size": 32},
        # The paper's ILSVRC model: 128 px L, x4 chroma subsampling, 4 blocks x 160 channels.
        "paper": {"size": 128, "subsample": 4, "embed_width": 64, "embed_blocks": 2, "embed_dim": 160, "width": 160,
                  "n_blocks": 4, "batch_size": 64, "steps": 100000, "lr_decay": 0.99995, "polyak": 0.9995},
    }
    HELP: ClassVar[dict[str, str]] = {
        "subsample": "chroma resolution = size / subsample",
        "width": "decoder channels (paper 160)",
        "polyak": "decay of the exported weight average",
        "backbone_file": "make g(L) from this shared backbone (.safetensors) instead of training a grey network",
        "flips": "train on mirrored images too (over the pretrained encoder each mirror is encoded once more)",
    }

    def model_config(self) -> PICConfig:
        names = {f.name for f in fields(PICConfig)}
        values = {k: v for k, v in asdict(self).items() if k in names}
        return PICConfig.from_dict({**values, **backbone_fields(self.backbone_file, self.size)})


def nats_per_dim(model: PIC, L: torch.Tensor, ab: torch.Tensor, use_autocast: bool = False) -> torch.Tensor:
    """Mean negative log-likelihood per chroma dimension of each image, (B,).

    The network may run in bf16; the mixture likelihood is always computed in float32."""
    q = model.chroma_target(ab)
    with autocast(L.device) if use_autocast else contextlib.nullcontext():
        params = model.decoder(q, model.condition(L))
    lp = mixture_log_prob(q, params.float(), model.cfg.n_mix)
    return -lp.flatten(1).mean(1) / 2.0  # two channels per pixel


def train_pic(cfg: PICStageConfig) -> int:
    device, ddp = prepare(cfg.threads, cfg.device)
    mcfg = cfg.model_config()
    parts = D.load_parts(cfg.data, "train", mcfg.size, cfg.limit or None)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every rerun
    model = PIC(mcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)  # before the backbone is attached: it holds no copy of it
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.95, 0.9995))
    attach_stage_backbone(model, cfg.public(), device)
    train = training_set(parts, model.backbone, device, cfg.flips)
    sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed, ddp)

    def step(i: int):
        idx = sampler(i)
        L, ab, taps = train.batch(idx, (torch.rand(len(idx)) < 0.5) & cfg.flips)
        with feeding(model.backbone, taps):
            loss = nats_per_dim(model, L.to(device), ab.to(device), use_autocast=True).mean()
        return loss, {"bpd": loss.item() / math.log(2)}

    @torch.no_grad()
    def polyak(step: int) -> None:
        # Warm-up so the average is not dominated by the random initial weights.
        d = min(cfg.polyak, (1 + step) / (10 + step))
        for pe, pm in zip(ema.parameters(), [p for p in model.parameters() if p.requires_grad]):
            pe.lerp_(pm, 1 - d)

    meta = {"method": METHOD, "config": mcfg.to_dict(), "stage_config": cfg.public(), "data": D.describe(cfg.data, "train", len(train))}
    spec = LoopSpec(Path(cfg.out), STAGE, cfg.steps, cfg.seed, cfg.log_every, cfg.checkpoint_minutes, cfg.max_minutes,
                    cfg.stop_after, grad_clip=1.0)
    modules = {"embedding": model.embedding, "decoder": model.decoder, "ema": ema}
    return run_loop(spec, modules, opt, step, meta, sched=lambda s: cfg.lr_decay**s, ddp=ddp, on_step=polyak)


CALIBRATION_FILE = "calibration.json"


@torch.no_grad()
def calibrate_temperature(model: PIC, lab: D.LabSet, temps: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                          per_image: int = 2, seed: int = 0) -> dict[str, Any]:
    """The sampling temperature at which two samples of a photo differ as much as a sample
    differs from the photo, among those whose samples are at most ``CHROMA_CAP`` times as
    colourful (mean |ab|) as the training photos.

    If the photo were one more draw from the model, the mean distance between two draws would
    equal the mean distance from a draw to the photo (the spread-skill balance of a calibrated
    ensemble): colder, the sets repeat themselves; hotter, they scatter away from anything
    plausible. A PixelCNN trained briefly leans on its left/upper neighbours, and at T = 1 small
    per-pixel deviations compound along the raster into neon, hence the chroma cap. (The rule
    before, the chroma match alone, picked T = 0.4 for the lite0 model: sets with variance 9e-4
    that repeated on 7.5 % of photos.) Train split only; the user's temperature multiplies it.
    """
    model.eval()
    truth_ab = model.chroma_target(lab.ab)
    truth = float(truth_ab.norm(dim=1).mean())
    cond = model.condition(lab.L).repeat_interleave(per_image, dim=0)
    target = truth_ab.repeat_interleave(per_image, dim=0)
    s = model.cfg.chroma_size
    table, between, to_photo = {}, {}, {}
    for t in temps:
        g = torch.Generator().manual_seed(seed)
        noise = Noise.draw(cond.shape[0], s, s, model.cfg.n_mix, g, cond.device, cond.dtype)
        x = model.sample_cached(cond, noise, t).float()
        table[t] = float(x.norm(dim=1).mean())
        pairs = x.view(-1, per_image, 2, s, s)
        between[t] = float((pairs[:, 0] - pairs[:, 1]).abs().mean())
        to_photo[t] = float((x - target).abs().mean())
        print(f"calibrate: T={t:.2f} sample chroma {table[t]:.4f} (photos {truth:.4f}), between samples "
              f"{between[t]:.4f}, sample to photo {to_photo[t]:.4f}", file=sys.stderr)
    allowed = [t for t in temps if table[t] <= CHROMA_CAP * truth] or [min(temps)]
    best = min(allowed, key=lambda t: abs(between[t] - to_photo[t]))
    few = cond[: SPREAD_IMAGES * per_image]  # a mean over 16 x 1024 chroma pixels is steady; sampling is the cost
    spread = {t: spread_of(model, few, per_image, t * best, seed) for t in SPREAD_GRID}
    return {"temperature": best, "photo_chroma": round(truth, 5), "images": len(lab),
            "sample_chroma": {f"{t:.2f}": round(c, 5) for t, c in table.items()},
            "between_samples": {f"{t:.2f}": round(c, 5) for t, c in between.items()},
            "sample_to_photo": {f"{t:.2f}": round(c, 5) for t, c in to_photo.items()},
            "how": f"temperature whose samples differ from one another as much as from the photo, among those at most "
                   f"{CHROMA_CAP} x as colourful as the photos (mean |ab|, train split)",
            "spread": {f"{t * best:.3f}": round(v, 5) for t, v in spread.items()},
            "spread_curve": spread_curve({t * best: v for t, v in spread.items()}, spread[1.0])}


CHROMA_CAP = 1.25
"""Samples more colourful than this multiple of the photos' mean |ab| read as neon, however calibrated."""
SPREAD_GRID = (0.5, 0.7, 0.85, 1.0, 1.1, 1.2, 1.3, 1.45, 1.6, 1.8)
"""Multiples of the calibrated temperature at which PIC's spread is measured (past 1.8 it is noise)."""
USER_TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
SPREAD_IMAGES = 16


def spread_of(model: PIC, cond: torch.Tensor, per_image: int, t: float, seed: int = 0) -> float:
    """Mean |ab| distance between two samples of the same photo at mixture temperature t."""
    s = model.cfg.chroma_size
    g = torch.Generator().manual_seed(seed + 1)
    noise = Noise.draw(cond.shape[0], s, s, model.cfg.n_mix, g, cond.device, cond.dtype)
    x = model.sample_cached(cond, noise, t).float().view(-1, per_image, 2, s, s)
    return float((x[:, 0] - x[:, 1]).abs().mean())


def spread_curve(spread: dict[float, float], at_one: float) -> list[list[float]]:
    """[user T, internal T] pairs: the internal temperature at which the samples spread T times
    as far apart as at the calibrated one, read off the measured (temperature -> spread) points
    by linear interpolation; a user T beyond the last point gets the last point's temperature."""
    pts = sorted(spread.items())
    temps = [t for t, _ in pts]
    vals = []
    for _, v in pts:  # spread grows with temperature; sampling noise must not make it fold back
        vals.append(max(v, vals[-1]) if vals else v)
    curve = []
    for u in USER_TEMPERATURES:
        target = u * at_one
        t = temps[-1]
        if target <= vals[0]:
            t = temps[0] * target / vals[0] if vals[0] > 0 else temps[0]
        else:
            for (t0, v0), (t1, v1) in zip(zip(temps, vals), zip(temps[1:], vals[1:])):
                if v0 <= target <= v1:
                    t = t0 if v1 == v0 else t0 + (t1 - t0) * (target - v0) / (v1 - v0)
                    break
        curve.append([u, round(t, 4)])
    return curve


def export(run_dir: Path, dest: Path | None = None, metrics: dict | None = None, half: bool = False,
           need_finished: bool = True, data: str | None = None, calibrate_images: int = 64) -> Path:
    """Write the inference checkpoint the app loads: the Polyak-averaged weights, and the sampling
    temperature calibrated on the training split (cached in RUN_DIR/pic/calibration.json)."""
    run_dir = Path(run_dir)
    ck = read_state(run_dir, STAGE, need_finished)
    model = PIC(PICConfig.from_dict(ck.config))
    model.load_state_dict(ck.subset("ema"))
    attach_stage_backbone(model, ck.meta.get("stage_config"), torch.device("cpu"))
    cal_path = run_dir / STAGE / CALIBRATION_FILE
    calibration = json.loads(cal_path.read_text()) if cal_path.exists() else None
    if calibration is not None and calibration.get("step") != ck.meta.get("step"):
        calibration = None  # weights changed since: calibrate again
    data = data or (ck.meta.get("stage_config") or {}).get("data")
    if calibration is None and calibrate_images > 0 and data:
        try:
            lab = D.load_lab(data, "train", model.cfg.size, calibrate_images)
        except (FileNotFoundError, OSError) as e:
            print(f"export: cannot calibrate the temperature ({e}); samples use T = 1", file=sys.stderr)
        else:
            calibration = {**calibrate_temperature(model, lab), "step": ck.meta.get("step")}
            cal_path.write_text(json.dumps(calibration, indent=2) + "\n")
    tensors = model.inference_tensors()
    if half:
        tensors = half_floats(tensors)
    meta = {
        "method": METHOD,
        "config": model.cfg.to_dict(),
        "data": ck.meta.get("data"),
        "steps": {STAGE: ck.meta.get("step")},
        "training": {STAGE: ck.meta.get("stage_config")},
        "time": stage_times(**{STAGE: ck.meta}),
        "sampling": {k: v for k, v in (calibration or {"temperature": 1.0}).items() if k != "step"},
        "metrics": metrics or {},
        **backbone_meta(ck.meta.get("stage_config")),
    }
    dest = Path(dest) if dest else run_dir / MODEL_FILE
    save_checkpoint(dest, tensors, meta)
    print(f"wrote {dest} ({dest.stat().st_size / 2**20:.2f} MiB)", file=sys.stderr)
    return dest


def recalibrate(path: Path, data: str, images: int = 64) -> dict[str, Any]:
    """Calibrate an exported PIC file again on ``data``'s train split and rewrite its sampling
    metadata; the weights (and their digest) stay as they are."""
    from engine.checkpoint import load_checkpoint
    from engine.colorizer import load_model

    model = load_model(path)
    if not isinstance(model, PIC):
        raise ConfigError(f"{path} is not a PIC model file (calibrate is PIC's: the other methods' temperature is exact)")
    model = model.float().eval()
    calibration = calibrate_temperature(model, D.load_lab(data, "train", model.cfg.size, images))
    ck = load_checkpoint(path)
    save_checkpoint(path, ck.tensors, {**ck.meta, "sampling": calibration})
    print(f"calibrate: {path}: T {calibration['temperature']}, user T -> mixture T {calibration['spread_curve']}",
          file=sys.stderr)
    return calibration


@torch.no_grad()
def bits_per_dim(model: PIC, lab: D.LabSet, chunk: int = 64) -> float:
    """Negative log-likelihood of the test chroma in bits per (quantised chroma) dimension."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(lab), chunk):
        nll = nats_per_dim(model, lab.L[i : i + chunk], lab.ab[i : i + chunk])
        total += float(nll.sum())
        count += len(nll)
    return total / count / math.log(2)


def evaluate_pic(checkpoint: Path, data: str, split: str = "test", n_samples: int = 5, limit: int = 0,
                 sample_limit: int = 200, sheet: str | None = None, **options: Any) -> dict:
    """bpd on the whole split (or ``limit`` images) with the true L, with a blank L (each photo's
    L flattened to its mean: no structure left) and with another photo's L: the model must use
    the photo, so the true L has to cost clearly fewer bits. Then eob / variance / pairwise SSIM
    and the rest of :func:`evaluate` (``options``) over ``n_samples`` true samples of
    ``sample_limit`` evenly spaced images (sampling is the slow part)."""
    from engine.colorizer import load_model

    from .evaluate import evaluate

    model = load_model(checkpoint).float()  # with the shared backbone it looks through, if any
    temperature = model.sampling_temperature
    t0 = time.time()
    lab = D.load_lab(data, split, model.cfg.size, limit or None)
    bpd = bits_per_dim(model, lab)
    blank = D.LabSet(lab.L.mean((2, 3), keepdim=True).expand_as(lab.L).contiguous(), lab.ab)
    bpd_blank = bits_per_dim(model, blank)
    other = D.LabSet(lab.L.roll(1, 0), lab.ab) if len(lab) > 1 else lab
    bpd_other = bits_per_dim(model, other)
    n_div = min(len(lab), sample_limit) if sample_limit else len(lab)
    result = evaluate(checkpoint, data, split, n_samples, n_div, sheet=sheet, quiet=True, **options)
    result = {
        **result,
        "bits_per_dim": round(bpd, 4),
        "bits_per_dim_blank_L": round(bpd_blank, 4),
        "bits_per_dim_other_L": round(bpd_other, 4),
        "uses_L_bits_per_dim": round(bpd_blank - bpd, 4),
        "bits_per_dim_images": len(lab),
        "sampling_temperature": temperature,
        "bits_per_dim_note": "NLL of the chroma (a, b quantised to 256 levels over ab in [-128, 128], at the model's "
        "chroma resolution); our shards are JPEG q90 4:4:4, so compression has already smoothed the chroma. "
        "blank_L: each photo's L replaced by its mean (flat); other_L: the next test photo's L; "
        "uses_L_bits_per_dim = blank - true (target >= 0.5)",
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    return result
