"""Stage ``backbone``: the shared grey-image network as a per-pixel ab classifier (Zhang et al.
2016: soft-encoded targets over in-gamut bins, class rebalancing λ = 0.5), its export, and its
evaluation against the trivial answers (grey, and the photo's own true mean tint).

Speed on a 2-core CPU decides how much the backbone can learn: shards are decoded once into a
memory-mapped uint8 cache (``training.cache``), crops, flips, Lab and old-photo damage are made
per batch in torch, and ``--precision bf16`` / ``--channels-last`` / ``--compile`` are measured
against fp32 by ``benchmarks/bench_backbone_train.py``. The log carries images/s.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.color import AB_SCALE, rgb_to_lab
from engine import metrics as M
from engine.errors import ConfigError
from engine.models.backbone import METHOD, Backbone, BackboneConfig, load_shared, weights_digest

from .. import cache
from .. import data as D
from ..augment import degrade_L, random_crops
from ..batches import BatchSampler
from ..config import StageConfig
from ..loop import STATE_FILE, LoopSpec, bf16_native, cosine, half_floats, prepare, read_state, run_loop, stage_times
from ..losses import rebalance_weights, rebalanced_ce, soft_encode
from ..taps_cache import EncodedSet
from ..sheets import contact_sheet, demo_sheet

STAGE = "backbone"
MODEL_FILE = "backbone.safetensors"
PRIOR_IMAGES = 8000  # images the bin prior is counted on (it converges long before)


@dataclass
class BackboneStageConfig(StageConfig):
    steps: int = 40000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 500
    size: int = 64
    width: int = 16
    blocks_s4: int = 2  # the retired CPU encoder only
    blocks_s8: int = 0
    blocks_dec: int = 1
    grid: int = 10
    rebalance: float = 0.5
    degrade: float = 0.6
    min_crop: float = 0.6
    ema: float = 0.999
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    init: str = ""
    checkpoint_minutes: float = 10.0
    encoder: str = "lite0"
    encoder_size: int = 224
    encoder_tail: bool = False
    tail_lr: float = 0.1
    flips: bool = True

    # What a run recorded before these fields existed was trained with (the CPU-trained encoder).
    ABSENT: ClassVar[dict[str, Any]] = {"encoder": "", "flips": True}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The decoder over the cached encoder maps: ~90 img/s a thread (width 16; 32 is 7 img/s).
        "cpu": {"steps": 12000, "batch_size": 32, "width": 16},
        # A GPU box: a wider decoder with a residual block at 1/8 (~7 MiB of fp16); torchrun, bf16.
        "paper": {"steps": 60000, "batch_size": 64, "width": 32, "blocks_s8": 1, "precision": "bf16"},
    }
    HELP: ClassVar[dict[str, str]] = {
        "data": "comma-separated shard prefixes / .npz / folders, all used together",
        "width": "channels at 1/2 resolution (x2, x4 deeper); 40 is the paper preset",
        "rebalance": "λ of the class rebalancing, w ∝ ((1-λ) p + λ/Q)^-1: 1 weighs every pixel alike (no "
                     "rebalancing), 0 by the inverse frequency of its colour; Zhang et al. 0.5",
        "degrade": "fraction of inputs damaged like old photos (grain, blur, fading, blocks, dust)",
        "min_crop": "smallest random crop side, as a fraction of the image",
        "ema": "decay of the exported weight average",
        "precision": "fp32, bf16 (autocast; emulated, ~3x slower than fp32, on CPUs without AVX512-BF16/AMX) or auto "
                     "(bf16 on a GPU or a CPU with native bf16, fp32 elsewhere)",
        "channels_last": "NHWC memory format for the convolutions",
        "compile": "torch.compile the network (pays a compile at every start)",
        "init": "warm start from this backbone .safetensors when the run directory is new",
        "encoder": "the pretrained grey encoder under the decoder (lite0, lite1, lite2; '' = the retired CPU-trained "
                   "encoder); frozen: its maps are encoded once into the feature cache",
        "encoder_size": "pixels the encoder sees (L upsampled): 224 recognises 64-px photos best (grey top-5 .55 "
                        "vs .50 at 160, .37 at 128)",
        "encoder_tail": "also tune the encoder's stride-32 stages and head (from ImageNet's weights) on this data, "
                        "over the cached stride-16 maps; the tuned copy is stored in the backbone file (+5 MiB)",
        "tail_lr": "the tuned encoder stages' learning rate as a fraction of --lr (they start trained)",
        "flips": "encode and train on mirrored images too",
    }

    def model_config(self) -> BackboneConfig:
        names = {f.name for f in fields(BackboneConfig)}
        values = {k: v for k, v in asdict(self).items() if k in names}
        if self.encoder:
            from engine.models.encoder import weights_sha256

            values["encoder_sha256"] = weights_sha256(self.encoder)
        return BackboneConfig.from_dict(values)


class Sources:
    """Several data sets as one index space; each batch is cropped to the training size."""

    def __init__(self, data: str, split: str, limit: int = 0):
        self.names: list[str] = []
        self.arrays: list[np.ndarray] = []
        for part in [p.strip() for p in data.split(",") if p.strip()]:
            arr = cache.cached_split(part, split, 0, limit)
            self.names.append(Path(part).name)
            self.arrays.append(arr)
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def describe(self) -> dict[str, Any]:
        return {"sets": [{"path": n, "images": len(a), "size": int(a.shape[1])} for n, a in zip(self.names, self.arrays)],
                "split": "train", "images": len(self)}

    def batch(self, idx: torch.Tensor, size: int, g: torch.Generator, min_crop: float) -> torch.Tensor:
        """sRGB (N, 3, size, size) in [0, 1], grouped by source."""
        idx = np.sort(idx.numpy())
        src = np.searchsorted(self.starts, idx, side="right") - 1
        out = []
        for s in np.unique(src):
            local = idx[src == s] - self.starts[s]
            x = torch.from_numpy(np.ascontiguousarray(self.arrays[s][local])).permute(0, 3, 1, 2).float() / 255.0
            out.append(random_crops(x, size, g, min_crop))
        return torch.cat(out)


def _to_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lab = rgb_to_lab(rgb)
    return lab[:, :1], lab[:, 1:]


@torch.no_grad()
def bin_counts(src: Sources, bins: torch.Tensor, size: int, n: int = PRIOR_IMAGES) -> torch.Tensor:
    """How often each bin is the nearest to a training pixel at the prediction resolution."""
    total = len(src)
    pick = torch.from_numpy(np.linspace(0, total - 1, min(n, total)).astype(np.int64))
    counts = torch.zeros(len(bins), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for i in range(0, len(pick), 512):
        _, ab = _to_lab(src.batch(pick[i : i + 512], size, g, 1.0))
        ab4 = F.avg_pool2d(ab, 4).permute(0, 2, 3, 1).reshape(-1, 2)
        nearest = torch.cdist(ab4, bins).argmin(1)
        counts += torch.bincount(nearest, minlength=len(bins)).double()
    return counts


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where it is native (CUDA, or a CPU with AVX512-BF16/AMX), fp32 elsewhere.
    Measured with benchmarks/bench_backbone_train.py: bf16 1.5x fp32 on the AMD EPYC with
    AVX512-BF16, 0.32x on an Intel Xeon without it (emulated)."""
    if precision not in {"fp32", "bf16", "auto"}:
        raise ConfigError(f"--precision must be fp32, bf16 or auto, not {precision!r}.")
    if precision != "auto":
        return precision
    return "bf16" if bf16_native(device) else "fp32"


def _prior_and_start(cfg: BackboneStageConfig, model: Backbone, count) -> torch.Tensor:
    """The bin prior: saved with a run that is resumed, else ``count()``ed; a new run also takes
    the ``--init`` warm start (same encoder and shape; the encoder file's hash is checked on load)."""
    state_path = Path(cfg.out) / STAGE / STATE_FILE
    if state_path.exists():
        return load_checkpoint(state_path).tensors["prior.counts"]
    counts = count()
    if cfg.init:
        init = Backbone.from_checkpoint(cfg.init)
        same = {"encoder_sha256": "", "encoder_tail": False}  # a tail is added to (or kept from) the start
        if init.cfg.to_dict() | same != model.cfg.to_dict() | same:
            raise ConfigError(f"--init {cfg.init} is a backbone of another shape ({init.cfg.to_dict()}) than this run "
                              f"({model.cfg.to_dict()}); give the same encoder, width and blocks, or no --init.")
        state = init.net.state_dict()
        if init.cfg.encoder_tail and not model.cfg.encoder_tail:
            state = {k: v for k, v in state.items() if not k.startswith("tail.")}
            print(f"--init {cfg.init}: its tuned encoder tail is left out (this run has none: --encoder-tail true keeps "
                  "it)", file=sys.stderr)
        missing, _ = model.net.load_state_dict(state, strict=not (model.cfg.encoder_tail and not init.cfg.encoder_tail))
        assert all(k.startswith("tail.") for k in missing), missing  # only a new tail, which keeps ImageNet's weights
        print(f"warm start from {cfg.init}", file=sys.stderr)
    return counts


class Rate:
    """Images per second over the last ~5 s, for the log."""

    def __init__(self) -> None:
        self.t, self.n, self.rate = time.perf_counter(), 0, 0.0

    def add(self, n: int) -> float:
        self.n += n
        now = time.perf_counter()
        if now - self.t > 5:
            self.rate, self.t, self.n = self.n / (now - self.t), now, 0
        return self.rate


def _train_classifier(cfg: BackboneStageConfig, model: Backbone, counts: torch.Tensor, class_w: torch.Tensor,
                      logits_of, data_meta: dict[str, Any], ddp) -> int:
    """The loop both encoders share: rebalanced cross-entropy over the ab bins, AdamW, cosine
    schedule, an exported weight average (EMA). ``logits_of(i)`` -> (logits, bin targets
    (idx, weights), images in the batch) of step i."""
    ema = copy.deepcopy(model.net).requires_grad_(False)
    tail = getattr(model.net, "tail", None)
    tail_params = {id(p) for p in tail.parameters()} if tail is not None else set()
    groups = [{"params": [p for p in model.net.parameters() if id(p) not in tail_params]}]
    if tail is not None:  # the tuned encoder stages start trained: a smaller step (and no decay toward 0)
        groups.append({"params": list(tail.parameters()), "lr": cfg.lr * cfg.tail_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rate = Rate()

    def step(i: int):
        logits, (idx_k, wk), n = logits_of(i)
        loss = rebalanced_ce(logits, idx_k, wk, class_w)
        with torch.no_grad():
            acc = (logits.argmax(1) == idx_k[:, 0]).float().mean().item()
        return loss, {"top1": acc, "img_s": round(rate.add(n) * ddp.world, 1)}

    def polyak(i: int) -> None:
        d = min(cfg.ema, (1 + i) / (10 + i))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.net.parameters()):
                pe.lerp_(pm.detach(), 1 - d)
            for be, bm in zip(ema.buffers(), model.net.buffers()):
                be.copy_(bm)

    meta = {"method": METHOD, "config": model.cfg.to_dict(), "stage_config": cfg.public(), "data": data_meta}
    spec = LoopSpec(Path(cfg.out), STAGE, cfg.steps, cfg.seed, cfg.log_every, cfg.checkpoint_minutes, cfg.max_minutes, cfg.stop_after)
    extra = {"prior.counts": counts, "prior.weights": class_w.cpu()}
    return run_loop(spec, {"net": model.net, "ema": ema}, opt, step, meta, extra, cosine(cfg.steps, warmup=cfg.warmup), ddp,
                    on_step=polyak)


def _train_decoder(cfg: BackboneStageConfig, device: torch.device, ddp, precision: str) -> int:
    """The decoder over the frozen pretrained encoder, trained on its cached maps: each image is
    encoded once (and mirrored), so a step costs the decoder alone. No crops and no old-photo
    damage here: either would need the encoder again at every step."""
    mcfg = cfg.model_config()
    parts = D.load_parts(cfg.data, "train", cfg.size, cfg.limit or None)
    enc = EncodedSet(parts, cfg.encoder, cfg.encoder_size, cfg.flips, device)
    torch.manual_seed(cfg.seed)
    model = Backbone(mcfg).to(device)
    if model.net.tail is not None:
        model.net.tail.load_wheel()  # ImageNet's stages to tune (a resumed run or --init replaces them)
    bins_lab = model.bins.cpu() * AB_SCALE

    def count() -> torch.Tensor:
        counts = torch.zeros(len(bins_lab), dtype=torch.float64)
        for p in parts:
            pick = torch.from_numpy(np.linspace(0, len(p) - 1, min(PRIOR_IMAGES, len(p))).astype(np.int64))
            ab4 = F.avg_pool2d(p.ab[pick] * AB_SCALE, 4).permute(0, 2, 3, 1).reshape(-1, 2)
            counts += torch.bincount(torch.cdist(ab4, bins_lab).argmin(1), minlength=len(bins_lab)).double()
        return counts

    counts = _prior_and_start(cfg, model, count)
    class_w = rebalance_weights(counts, bins_lab, cfg.rebalance).to(device)
    sampler = BatchSampler(len(enc), cfg.batch_size, cfg.seed, ddp)
    bins_dev = bins_lab.to(device)

    def logits_of(i: int):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        idx = sampler(i)
        L, ab, taps = enc.batch(idx, (torch.rand(len(idx), generator=g) < 0.5) & cfg.flips)
        with _autocast(device, precision):
            logits = model.net(taps, L).logits
        return logits, soft_encode(F.avg_pool2d(ab * AB_SCALE, 4), bins_dev), len(L)

    described = {**D.describe(cfg.data, "train", len(enc)), "flips": cfg.flips}
    return _train_classifier(cfg, model, counts, class_w, logits_of, described, ddp)


def train_backbone(cfg: BackboneStageConfig) -> int:
    device, ddp = prepare(cfg.threads, cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if cfg.encoder:
        print(f"backbone decoder over {cfg.encoder} at {cfg.encoder_size} px: {precision} on {device.type}", file=sys.stderr)
        return _train_decoder(cfg, device, ddp, precision)
    print(f"backbone: {precision} on {device.type}", file=sys.stderr)
    mcfg = cfg.model_config()
    src = Sources(cfg.data, "train", cfg.limit)
    torch.manual_seed(cfg.seed)  # the initial weights, so that a rerun from scratch is the same run
    model = Backbone(mcfg).to(device)
    bins_lab = model.bins.cpu() * AB_SCALE
    counts = _prior_and_start(cfg, model, lambda: bin_counts(src, bins_lab, cfg.size))
    class_w = rebalance_weights(counts, bins_lab, cfg.rebalance).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model.net) if cfg.compile else model.net
    sampler = BatchSampler(len(src), cfg.batch_size, cfg.seed, ddp)
    bins_dev = bins_lab.to(device)

    def logits_of(i: int):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        rgb = src.batch(sampler(i), cfg.size, g, cfg.min_crop)
        L, ab = _to_lab(rgb)
        L_in = degrade_L(L, g, cfg.degrade).to(device)
        if cfg.channels_last:
            L_in = L_in.contiguous(memory_format=torch.channels_last)
        with _autocast(device, precision):
            logits = net(L_in).logits
        return logits, soft_encode(F.avg_pool2d(ab, 4).to(device), bins_dev), len(rgb)

    return _train_classifier(cfg, model, counts, class_w, logits_of, src.describe(), ddp)


# --- what the method stages need to train on a backbone ---------------------------------------

def backbone_fields(path: str, size: int) -> dict[str, Any]:
    """The config fields a method model trained on the backbone file ``path`` records (none
    without one): its digest, which the loader checks, and the shapes its adapter needs."""
    if not path:
        return {}
    bb = load_shared(path)
    if bb.cfg.size != size:
        raise ConfigError(f"--backbone-file {path} works at {bb.cfg.size} px, this model at {size}; give --size {bb.cfg.size}.")
    return {"backbone": bb.meta["digest"], "backbone_width": bb.cfg.width, "backbone_bins": bb.n_bins}


def attach_stage_backbone(model: torch.nn.Module, stage_config: dict[str, Any] | None, device: torch.device) -> None:
    """Give a model rebuilt from a run's state the backbone its stage was trained with."""
    digest = getattr(model.cfg, "backbone", "")
    if not digest:
        return
    path = (stage_config or {}).get("backbone_file", "")
    if not path or not Path(path).is_file():
        raise ConfigError(f"this run was trained on the backbone file {path or '(unrecorded)'}, which is not there any "
                          f"more; put it back (the same file, digest {digest}).")
    model.attach_backbone(load_shared(path, device))


def backbone_meta(stage_config: dict[str, Any] | None) -> dict[str, Any]:
    """What an exported method file says about its backbone: the file name the app looks for."""
    path = (stage_config or {}).get("backbone_file", "")
    if not path:
        return {}
    meta: dict[str, Any] = {"backbone_file": Path(path).name}
    if Path(path).is_file():  # the encoder under it, recorded in the head too (its loader checks the backbone's)
        cfg = load_checkpoint(path, METHOD).config
        if cfg.get("encoder"):
            meta.update(encoder=cfg["encoder"], encoder_sha256=cfg.get("encoder_sha256", ""))
    return meta


def export(run_dir: Path, dest: Path | None = None, metrics: dict | None = None, half: bool = False,
           need_finished: bool = True) -> Path:
    """The shared backbone file: the averaged (EMA) weights, with their content digest."""
    run_dir = Path(run_dir)
    ck = read_state(run_dir, STAGE, need_finished=need_finished)
    model = Backbone(BackboneConfig.from_dict(ck.config))
    model.net.load_state_dict(ck.subset("ema"))
    tensors = model.inference_tensors()
    if half:
        tensors = half_floats(tensors)
    meta = {
        "method": METHOD,
        "config": model.cfg.to_dict(),
        "data": ck.meta.get("data"),
        "steps": ck.meta.get("step"),
        "finished": bool(ck.meta.get("finished")),
        "training": ck.meta.get("stage_config"),
        "time": stage_times(**{STAGE: ck.meta}),
        "digest": weights_digest(tensors),
        "metrics": metrics or {},
    }
    dest = Path(dest) if dest else run_dir / MODEL_FILE
    save_checkpoint(dest, tensors, meta)
    print(f"wrote {dest} ({dest.stat().st_size / 2**20:.2f} MiB, digest {meta['digest']})", file=sys.stderr)
    return dest


@torch.no_grad()
def evaluate_backbone(ckpt: Path, data: str, split: str = "test", limit: int = 0, batch: int = 64,
                      sheet: str | Path | None = None, demo: str | Path | None = None) -> dict[str, Any]:
    """The backbone's single best guess (annealed mean) on a test split, beside grey and the
    oracle flat tint (each photo painted in its own true mean ab). L1 in ab/128 units at the
    photo's resolution; the model sees L downscaled to its training size. ``limit`` picks that
    many evenly spaced images."""
    from engine.color import lab_to_rgb

    from .evaluate import spread

    t0 = time.time()
    model = Backbone.from_checkpoint(ckpt)
    rgb_all = cache.cached_split(data, split, 0)
    rgb_all = rgb_all[spread(len(rgb_all), limit)]  # evenly spaced, as the heads' eval picks them
    err = {"model": [], "grey": [], "tint": []}
    colf_pred, colf_true = [], []
    rows: list[list[torch.Tensor]] = []
    show = set(np.linspace(0, len(rgb_all) - 1, 12).astype(int).tolist()) if sheet else set()
    for i in range(0, len(rgb_all), batch):
        rgb = torch.from_numpy(np.array(rgb_all[i : i + batch])).permute(0, 3, 1, 2).float() / 255.0
        L, ab = _to_lab(rgb)
        ab = ab / AB_SCALE
        L_small = F.interpolate(L, size=(model.cfg.size,) * 2, mode="area") if L.shape[-1] != model.cfg.size else L
        pred = model.annealed_mean(model(L_small).logits)
        pred = F.interpolate(pred, size=L.shape[-2:], mode="bilinear", align_corners=False)
        tint = ab.mean((2, 3), keepdim=True).expand_as(ab)
        for k, v in (("model", pred), ("grey", torch.zeros_like(ab)), ("tint", tint)):
            err[k].append((v - ab).abs().flatten(1).mean(1))
        pred_rgb = lab_to_rgb(torch.cat([L, pred * AB_SCALE], 1))
        colf_pred.append(M.colourfulness(pred_rgb))
        colf_true.append(M.colourfulness(rgb))
        for j in sorted(k - i for k in show if i <= k < i + len(rgb)):  # grey | best guess | truth
            rows.append([lab_to_rgb(torch.cat([L[j], torch.zeros_like(ab[j])]))[None][0], pred_rgb[j], rgb[j]])
    e = {k: float(torch.cat(v).mean()) for k, v in err.items()}
    cp, ct = float(torch.cat(colf_pred).mean()), float(torch.cat(colf_true).mean())
    extra: dict[str, Any] = {}
    if sheet:
        extra["contact_sheet"] = str(contact_sheet(rows, sheet))
    if demo:
        extra.update(demo_sheet(model, Path(demo), Path(sheet).with_name(Path(sheet).stem + "_demo" + Path(sheet).suffix) if sheet else None))
    return {
        "method": METHOD,
        "checkpoint": Path(ckpt).name,
        "data": f"{Path(data).name} {split} ({len(rgb_all)} images, {rgb_all.shape[1]}x{rgb_all.shape[2]})",
        "error_l1": round(e["model"], 5),
        "baseline_grey_l1": round(e["grey"], 5),
        "baseline_true_tint_l1": round(e["tint"], 5),
        "vs_tint": round(e["model"] / e["tint"] - 1, 4) if e["tint"] > 0 else None,  # flat photos: no tint error
        "colourfulness": round(cp, 2),
        "colourfulness_truth": round(ct, 2),
        "units": "mean absolute ab error / 128 of the single best guess; baselines: no colour, and each photo "
        "painted flat in its own true mean ab (an oracle); colourfulness: Hasler & Süsstrunk 2003",
        **extra,
        "seconds": round(time.time() - t0, 1),
    }


def write_eval(result: dict[str, Any], dest: Path) -> None:
    dest.write_text(json.dumps(result, indent=2) + "\n")
