"""Stages ``vae`` and ``mdn`` of VAE-MDN (Deshpande et al. §3-4) and its export.

``vae`` trains the colour encoder, the grey encoder and the decoder with
L_hist + 0.1 L_mah + 1e-3 L_grad + 1e-2 KL; ``mdn`` freezes them and fits P(z | grey) with the
closest-component loss, z being the encoder mean of each training field.

``mdn-tune`` (optional, ours, not the paper's) then trains the MDN, the decoder and the grey
adapter together on what users see: every mixture mean is *decoded* and the one closest to the
photo (L1) is pulled to it, multiple-choice learning (Guzman-Rivera et al. 2012), while π learns
which mean that will be. Why: the paper's loss is in code space, and measured on natural128 test
its top mean decoded to .0745 L1 while the best of the eight decoded to .060, π putting only
0.21 on that best one; the decoder's own reconstruction of the true code was .054.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.models.vae_mdn import METHOD, VAEMDN, VAEMDNConfig

from .. import data as D
from ..batches import BatchSampler
from ..taps_cache import feeding, training_set
from .backbone import attach_stage_backbone, backbone_fields, backbone_meta
from ..config import StageConfig
from ..loop import (STATE_FILE, LoopSpec, autocast, cosine, frozen_grey_features, half_floats, prepare, read_state,
                    run_loop, stage_times)
from ..losses import ColorStats, compute_stats, mdn_loss, vae_loss

MODEL_FILE = "model.safetensors"
TUNE_STAGE = "mdn-tune"


@dataclass
class VAEStageConfig(StageConfig):
    steps: int = 2000
    lr: float = 1e-3
    size: int = 64
    latent_dim: int = 64
    width: int = 24
    grey_skip: bool = True
    n_components: int = 8
    mdn_sigma: float = 0.1
    mdn_hidden: int = 512
    dropout: float = 0.1
    kl_weight: float = 1e-2
    backbone_file: str = ""
    flips: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {"width": 24, "steps": 2000, "batch_size": 64},
        "paper": {"width": 128, "steps": 20000, "batch_size": 64},
    }
    HELP: ClassVar[dict[str, str]] = {
        "latent_dim": "d: 64 for natural photos, 32 for faces",
        "width": "base channels; 128 is the paper's net",
        "kl_weight": "weight of the KL term (paper: 1e-2); larger keeps the codes closer to N(0, I)",
        "backbone_file": "look through this shared backbone (.safetensors from `divcolor-train export` of a backbone "
        "run, the file shipped beside the model) instead of learning a grey encoder",
        "flips": "train on mirrored images too (the VAE and the MDN; over the pretrained encoder each mirror is "
                 "encoded once more into the feature cache)",
    }

    def model_config(self) -> VAEMDNConfig:
        names = {f.name for f in fields(VAEMDNConfig)}
        values = {k: v for k, v in asdict(self).items() if k in names}
        values.update(backbone_fields(self.backbone_file, self.size))
        return VAEMDNConfig(**values)


@dataclass
class MDNStageConfig(StageConfig):
    steps: int = 1500
    lr: float = 1e-3
    batch_size: int = 64

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {"steps": 1500}, "paper": {"steps": 20000}}


@dataclass
class TuneStageConfig(StageConfig):
    steps: int = 1000
    lr: float = 3e-4
    batch_size: int = 16
    every_weight: float = 0.0  # each mean's own L1 beside the closest one's (relaxed MCL; it pulls the means together)
    pi_weight: float = 1.0  # cross-entropy of π against the component that decoded closest
    recon_weight: float = 1e-3  # the VAE's own loss on the decoded true code: the decoder keeps its code space and colours
    decoder: bool = True  # tune the decoder and the grey adapter too (False: the MDN alone)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {"steps": 1000}, "paper": {"steps": 10000}}
    HELP: ClassVar[dict[str, str]] = {
        "every_weight": "weight of every mixture mean's L1 beside the closest one's",
        "pi_weight": "weight of π's cross-entropy against the closest mean",
        "recon_weight": "weight of the VAE stage's loss on its own reconstruction (keeps the code space and its colours)",
        "decoder": "tune the decoder and the grey adapter too, not only the MDN",
    }


def train_vae(cfg: VAEStageConfig) -> int:
    device, ddp = prepare(cfg.threads, cfg.device)
    mcfg = cfg.model_config()
    run_dir = Path(cfg.out)
    sets = D.load_parts(cfg.data, "train", mcfg.size, cfg.limit or None)
    state_path = run_dir / "vae" / STATE_FILE
    # Statistics come from the whole training split, once; a resumed run reloads them.
    if state_path.exists():
        stats = ColorStats.from_tensors(load_checkpoint(state_path).tensors)
    else:
        stats = compute_stats(torch.cat([s.ab for s in sets]))  # as training draws them
    stats = ColorStats(*(t.to(device) for t in stats.__dict__.values()))
    model = VAEMDN(mcfg).to(device)
    attach_stage_backbone(model, cfg.public(), device)
    train = training_set(sets, model.backbone, device, cfg.flips)
    parts = {"color_encoder": model.color_encoder, "grey_encoder": model.grey_encoder, "decoder": model.decoder}
    params = [p for m in parts.values() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed, ddp)

    def step(i: int):
        idx = sampler(i)
        L, ab, taps = train.batch(idx, (torch.rand(len(idx)) < 0.5) & cfg.flips)
        L, ab = L.to(device), ab.to(device)
        with autocast(device), feeding(model.backbone, taps):
            mu, logvar = model.color_encoder(ab)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            pred = model.decode(z, L)
        return vae_loss(pred.float(), ab, mu.float(), logvar.float(), stats, w_kl=cfg.kl_weight)

    meta = {"method": METHOD, "config": mcfg.to_dict(), "stage_config": cfg.public(), "data": D.describe(cfg.data, "train", len(train))}
    spec = LoopSpec(run_dir, "vae", cfg.steps, cfg.seed, cfg.log_every, cfg.checkpoint_minutes, cfg.max_minutes, cfg.stop_after)
    return run_loop(spec, parts, opt, step, meta, {k: v.cpu() for k, v in stats.tensors().items()}, cosine(cfg.steps), ddp)


def load_vae(run_dir: Path, device: torch.device) -> tuple[VAEMDN, ColorStats, dict]:
    ck = read_state(run_dir, "vae")
    model = VAEMDN(VAEMDNConfig.from_dict(ck.config)).to(device)
    for part in ("color_encoder", "grey_encoder", "decoder"):
        getattr(model, part).load_state_dict(ck.subset(part))
    attach_stage_backbone(model, ck.meta.get("stage_config"), device)
    return model, ColorStats.from_tensors(ck.tensors), ck.meta


@torch.no_grad()
def encode_dataset(model: VAEMDN, train, device: torch.device, flip: bool = False,
                   chunk: int = 256) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Frozen grey features (/8, /16 scales) and target codes z = E[Q(z|C)] for every image
    (mirrored if ``flip``) of a training set (``training.taps_cache.training_set``)."""
    model.eval()
    f8, f16, zs = [], [], []
    for i in range(0, len(train), chunk):
        idx = torch.arange(i, min(i + chunk, len(train)))
        L, ab, taps = train.batch(idx, torch.full((len(idx),), flip))
        with feeding(model.backbone, taps):
            feats, _ = frozen_grey_features(model, L.to(device), device)
        f8.append(feats[2].cpu())
        f16.append(feats[3].cpu())
        zs.append(model.color_encoder(ab.to(device))[0].cpu())
    return [torch.cat(f8), torch.cat(f16)], torch.cat(zs)


def trained_flips(vae_meta: dict) -> bool:
    """Whether the run's VAE trained on mirrors too: the heads trained after it follow, so the
    feature cache holds the mirrored maps only where some stage asked for them."""
    return bool((vae_meta.get("stage_config") or {}).get("flips", True))


def train_mdn(cfg: MDNStageConfig) -> int:
    device, ddp = prepare(cfg.threads, cfg.device)
    run_dir = Path(cfg.out)
    model, _, vmeta = load_vae(run_dir, device)
    mcfg = model.cfg
    flips = trained_flips(vmeta)
    train = training_set(D.load_parts(cfg.data, "train", mcfg.size, cfg.limit or None), model.backbone, device, flips)
    # Features of both the image and its mirror: flips are the only augmentation.
    (f8a, f16a), za = encode_dataset(model, train, device)
    (f8b, f16b), zb = encode_dataset(model, train, device, flip=True) if flips else ((f8a, f16a), za)
    f8, f16, z = torch.cat([f8a, f8b]), torch.cat([f16a, f16b]), torch.cat([za, zb])
    n = len(train)
    sampler = BatchSampler(n, cfg.batch_size, cfg.seed, ddp)
    opt = torch.optim.Adam(model.mdn.parameters(), lr=cfg.lr)

    def step(i: int):
        idx = sampler(i) + n * (torch.rand(cfg.batch_size) < 0.5).long()  # the mirror, or the same image again
        feats = [None, None, f8[idx].to(device), f16[idx].to(device)]
        with autocast(device):
            log_pi, mu = model.mdn(feats)
        loss = mdn_loss(log_pi.float(), mu.float(), z[idx].to(device), mcfg.mdn_sigma)
        return loss, {}

    meta = {"method": METHOD, "config": mcfg.to_dict(), "stage_config": cfg.public(), "data": vmeta.get("data"), "vae_steps": vmeta.get("step")}
    spec = LoopSpec(run_dir, "mdn", cfg.steps, cfg.seed, cfg.log_every, cfg.checkpoint_minutes, cfg.max_minutes, cfg.stop_after)
    return run_loop(spec, {"mdn": model.mdn}, opt, step, meta, sched=cosine(cfg.steps, warmup=50), ddp=ddp)


def tune_losses(model: VAEMDN, L: torch.Tensor, ab: torch.Tensor, stats: ColorStats,
                cfg: TuneStageConfig) -> tuple[torch.Tensor, dict]:
    """The ``mdn-tune`` objective of one batch (grey features from the attached backbone).

    The reconstruction keeps the VAE stage's loss, not L1: with L1 there too the decoder learned
    to answer every code with paler median colours (natural128 test, the shipped run tuned:
    variance 5.1e-3 -> 3.5e-3 with L1, 3.9e-3 with the VAE's loss). Either way the winning means
    move toward the photo's median and toward one another: training/README.md has the table."""
    feats, grey = model.grey_features(L)
    log_pi, mu = model.mdn(feats)
    b, m, d = mu.shape
    many = lambda t: t.repeat_interleave(m, 0)  # noqa: E731  (each image's features, once per component)
    dec = model.decoder(mu.reshape(b * m, d), [many(f) for f in feats], many(grey)).float()
    err = (dec.view(b, m, *ab.shape[1:]) - ab[:, None]).abs().flatten(2).mean(2)  # (B, M) L1 of each mean
    best, win = err.min(1)
    recon = torch.zeros(())
    if cfg.decoder and cfg.recon_weight:  # with the decoder frozen it is a constant
        with torch.no_grad():
            z, logvar = model.color_encoder(ab)
        recon, _ = vae_loss(model.decoder(z, feats, grey).float(), ab, z.float(), logvar.float(), stats, w_kl=0.0)
    pi_ce = F.nll_loss(log_pi.float(), win)
    loss = best.mean() + cfg.every_weight * err.mean() + cfg.pi_weight * pi_ce + cfg.recon_weight * recon
    top = err.gather(1, log_pi.argmax(1, keepdim=True)).mean()
    return loss, {"best": best.mean().item(), "top": top.item(), "recon": recon.item(), "pi_ce": pi_ce.item()}


def train_tune(cfg: TuneStageConfig) -> int:
    device, ddp = prepare(cfg.threads, cfg.device)
    run_dir = Path(cfg.out)
    model, stats, vmeta = load_vae(run_dir, device)
    model.mdn.load_state_dict(read_state(run_dir, "mdn").subset("mdn"))
    model.color_encoder.requires_grad_(False).eval()  # only the target code comes from it
    flips = trained_flips(vmeta)
    train = training_set(D.load_parts(cfg.data, "train", model.cfg.size, cfg.limit or None), model.backbone, device, flips)
    parts = {"grey_encoder": model.grey_encoder, "decoder": model.decoder, "mdn": model.mdn}
    if not cfg.decoder:  # frozen, in inference mode (BatchNorm's running statistics kept)
        for name in ("grey_encoder", "decoder"):
            parts.pop(name).requires_grad_(False).eval()
    for part in parts.values():
        part.train()
    opt = torch.optim.Adam([p for m in parts.values() for p in m.parameters()], lr=cfg.lr)
    sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed, ddp)

    def step(i: int):
        idx = sampler(i)
        L, ab, taps = train.batch(idx, (torch.rand(len(idx)) < 0.5) & flips)
        with autocast(device), feeding(model.backbone, taps):
            return tune_losses(model, L.to(device), ab.to(device), stats, cfg)

    meta = {"method": METHOD, "config": model.cfg.to_dict(), "stage_config": cfg.public(), "data": vmeta.get("data"),
            "vae_steps": vmeta.get("step")}
    spec = LoopSpec(run_dir, TUNE_STAGE, cfg.steps, cfg.seed, cfg.log_every, cfg.checkpoint_minutes, cfg.max_minutes,
                    cfg.stop_after, grad_clip=1.0)
    return run_loop(spec, parts, opt, step, meta, sched=cosine(cfg.steps, warmup=50), ddp=ddp)


def export(run_dir: Path, dest: Path | None = None, metrics: dict | None = None, half: bool = False) -> Path:
    """Write the inference checkpoint the app loads: grey encoder, decoder, MDN, statistics."""
    run_dir = Path(run_dir)
    model, stats, vmeta = load_vae(run_dir, torch.device("cpu"))
    mck = read_state(run_dir, "mdn")
    model.mdn.load_state_dict(mck.subset("mdn"))
    stages = {"vae": vmeta, "mdn": mck.meta}  # every stage that made the file, in training order
    if (run_dir / TUNE_STAGE).is_dir():  # the tuned MDN (and grey adapter and decoder, if tuned) replace the stages' ones
        tck = read_state(run_dir, TUNE_STAGE)
        for part in ("grey_encoder", "decoder", "mdn"):
            if state := tck.subset(part):
                getattr(model, part).load_state_dict(state)
        stages[TUNE_STAGE] = tck.meta
    # The training statistics travel with the file (the app does not use them).
    tensors = {**model.inference_tensors(), **stats.tensors()}
    if half:
        tensors = half_floats(tensors)
    meta = {
        "method": METHOD,
        "config": model.cfg.to_dict(),
        "data": vmeta.get("data"),
        "steps": {k: m.get("step") for k, m in stages.items()},
        "training": {k: m.get("stage_config") for k, m in stages.items()},
        "time": stage_times(**stages),
        "statistics": {"pca_components": int(stats.pca_components.shape[0]), "ab_histogram_bins": list(stats.hist_weights.shape)},
        "metrics": metrics or {},
        **backbone_meta(vmeta.get("stage_config")),
    }
    dest = Path(dest) if dest else run_dir / MODEL_FILE
    save_checkpoint(dest, tensors, meta)
    print(f"wrote {dest} ({dest.stat().st_size / 2**20:.2f} MiB)", file=sys.stderr)
    return dest
