"""G-CRF stages (Messaoud et al. 2018, §3.3 and §4), its export and its evaluation helpers.

A G-CRF run directory holds the same ``vae`` and ``mdn`` stages as a VAE-MDN run plus
``gcrf-hoc``; ``export`` assembles them into one ``.safetensors`` file (method "gcrf").

- ``gcrf-unary`` (stage 1, phase 1): the unary term is the VAE-MDN decoder, trained with the
  same losses (L_hist + 0.1 L_mah + 1e-3 L_grad + 1e-2 KL), so this stage *is* the ``vae``
  stage and writes ``RUN_DIR/vae``. CPU time is never spent twice: in a RUN_DIR that already
  has a finished ``vae`` stage it does nothing, and ``--init-from OTHER_RUN`` copies OTHER_RUN's
  finished ``vae`` (and ``mdn``, if finished) states instead of training.
- ``gcrf-hoc`` (stage 1, phase 2): trains the embedding network (the HOC term) and the
  decoder's two top layers, everything else frozen; the loss is the decoder loss (without KL)
  on the G-CRF solution with β = 1, H revealing a random fraction of unary pixels that falls
  100% → 75 → 50 → 25 → 10% (the paper's epochs 2, 4, 6, 8 of 15, scaled to ``--steps``).
- ``gcrf-mdn`` (stage 2): the MDN over z. Phase 2 leaves the colour encoder untouched, so the
  codes z, and hence the MDN, are exactly VAE-MDN's: this is the ``mdn`` stage (and nothing to
  do when ``--init-from`` brought a finished one).

Deviations from the paper, and why:
- Phase-2 loss: the decoder loss on the G-CRF mean instead of the G-CRF negative
  log-likelihood (which adds ½ log det M): it trains the mean the app shows, and keeps the
  backward pass at O(P²) per image.
- Training resolution: the dense P x P system costs ~2.3 P³ flops per image to form and
  factorise; at the 64x64 working grid (P = 4096) that is ~160 GFLOP, seconds per image on a
  CPU core. The ``cpu`` preset therefore solves on a 32x32 grid (P = 1024, 64x cheaper): the
  embeddings are computed at 64x64 exactly as at inference and average-pooled, the unary is
  pooled likewise, and the solution is upsampled for the loss. The energy is a sum over pixels
  of both terms, so its balance does not depend on the grid and Ŝ transfers to 64x64.
  The ``paper`` preset (GPU) solves at 64x64. Backprop uses an analytic O(P²) backward through
  the Cholesky solve (engine.gcrf_solver.gcrf_solve), tested against finite differences.
- The weak-unary weight under strokes is tuned on the training split at export time (PSNR
  after revealing a few ground-truth squares on top of the automatic colorization).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine import metrics as M
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.color import AB_SCALE, guided_upsample_ab, recombine
from engine.files import atomic_write
from engine.gcrf_solver import GCRFSolver, gcrf_solve, normal_matrix, similarity
from engine.models.backbone import weights_digest
from engine.models.gcrf import GCRF, METHOD, GCRFConfig, GCRFField

from .. import data as D
from ..batches import BatchSampler
from ..config import StageConfig
from ..loop import (STATE_FILE, LoopSpec, autocast, cosine, frozen_grey_features, half_floats, prepare, read_state,
                    run_loop, stage_times)
from ..losses import ColorStats, grad_loss, hist_loss, mah_loss
from .backbone import backbone_meta
from .vae_mdn import MDNStageConfig, VAEStageConfig, load_vae, train_mdn, train_vae

MODEL_FILE = "model.safetensors"
HOC_STAGE = "gcrf-hoc"
TUNE_FILE = "tune.json"
PAPER_BOUNDARIES = (2 / 15, 4 / 15, 6 / 15, 8 / 15)  # reveal-level changes: epochs 2, 4, 6, 8 of 15
STROKE_BASE_CANDIDATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)  # x beta_test; one inverse each per image
BETA_AUTO_CANDIDATES = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # β of the automatic solve; 5 is the paper's
BETA_FILE = "beta.json"
COLOUR_TOLERANCE = 0.15  # β may not take more than this fraction of the photos' colourfulness (issue 12's bound)
POINTS_ONLY_CANDIDATES = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.01)  # x beta_test, hints-only weak unary
HINT_WEIGHT_CANDIDATES = (1.0, 20.0)  # x beta_test, hints-only hint weight
POINTS_ONLY_WEIGHT, HINT_WEIGHT = 0.0001, 20.0  # picked for gcrf_general on natural128 train; used when there is no train split


# --------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------


@dataclass
class GCRFUnaryStageConfig(VAEStageConfig):
    init_from: str = ""

    HELP: ClassVar[dict[str, str]] = {
        **VAEStageConfig.HELP,
        "init_from": "RUN_DIR of a VAE-MDN run: copy its finished vae (and mdn) stage instead of training",
    }


@dataclass
class GCRFHocStageConfig(StageConfig):
    steps: int = 2500
    batch_size: int = 8
    lr: float = 1e-3  # embedding network
    decoder_lr: float = 1e-4  # the decoder's two top layers (fine-tuned, not retrained)
    embed_dim: int = 32
    embed_width: int = 32
    embed_grey_features: bool = True
    hoc_train_size: int = 32  # grid of the training solve (the model's size = the paper)
    beta_train: float = 1.0
    beta_test: float = 5.0
    stroke_base: float = 0.1
    reveal: str = "1,0.75,0.5,0.25,0.1"
    embed_cap: float = 100.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # 0.5 s/step early, 0.67 s once Ŝ is peaked, on one core with a width-24 VAE (P = 1024,
        # batch 8): 2500 steps ≈ 25 min, ≈ 3 epochs of lfw64 / 2 of natural64.
        "cpu": {"hoc_train_size": 32, "batch_size": 8, "steps": 2500, "embed_width": 32, "embed_dim": 32},
        # 15 epochs of lfw64 at the working grid (P = 4096); natural64 needs --steps 19000.
        "paper": {"hoc_train_size": 64, "batch_size": 8, "steps": 12000, "embed_width": 64, "embed_dim": 64},
    }
    HELP: ClassVar[dict[str, str]] = {
        "hoc_train_size": "grid of the training solve; 32 on a CPU (P=1024), the model's size (64) on a GPU",
        "reveal": "fractions of unary pixels revealed by H, in order (the paper's schedule)",
        "stroke_base": "weak unary toward the picked colorization under strokes, x beta_test (tuned at export)",
        "decoder_lr": "learning rate of the decoder's two top layers",
        "embed_cap": "bound on each pixel embedding's squared norm, i.e. on the logits of S = softmax(AᵀA) "
                     "(0: unbounded, the paper; on backbone features the faces embedding ran away without it)",
    }

    def model_config(self, vae_cfg: dict[str, Any]) -> GCRFConfig:
        return GCRFConfig(
            **vae_cfg, embed_dim=self.embed_dim, embed_width=self.embed_width,
            embed_grey_features=self.embed_grey_features, beta_train=self.beta_train,
            beta_test=self.beta_test, stroke_base=self.stroke_base, embed_cap=self.embed_cap,
        )


@dataclass
class GCRFMDNStageConfig(MDNStageConfig):
    pass


@dataclass
class GCRFHintsStageConfig(StageConfig):
    init: str = ""
    steps: int = 3000
    batch_size: int = 16
    lr: float = 5e-4
    hint_width: int = 10  # 0.45 MiB in float16: keeps the general G-CRF file under 10 MiB (16: 0.92)
    hint_unary: float = 0.001
    max_points: int = 100
    stroke_prob: float = 0.3
    base_prob: float = 0.5
    keep_tolerance: float = 0.1
    solve_weight: float = 0.0
    solve_images: int = 8

    HELP: ClassVar[dict[str, str]] = {
        "init": "an exported G-CRF file to add the hint branch to (default: this RUN_DIR's finished vae, gcrf-hoc "
                "and mdn stages)",
        "hint_width": "channels of the hint branch's first level (x2, x4 deeper)",
        "hint_unary": "weak unary toward the hint branch's colorization from hints alone, x beta_test (the start: "
                      "export tunes it on the train split and stores it in the model)",
        "max_points": "simulated 7x7 (at 128 px) true-colour points per image: 0..max, log-uniform",
        "stroke_prob": "probability that an image also gets 1-3 short simulated strokes",
        "base_prob": "fraction of images whose hint branch corrects a sample of the model (the rest: hints alone)",
        "keep_tolerance": "over a sample, pixels whose true ab (x1/128) is farther than this from every hint colour "
                          "are taught to keep the sample (strokes stay local)",
        "solve_weight": "weight of a second loss on the stroke field's solve over the branch's unary (the app's "
                        "32x32 solve, pull hint_unary x beta_test): trains the branch for what the solve makes of "
                        "it, as the paper trains the unary through the G-CRF (0: the branch's own loss only)",
        "solve_images": "images of each batch that go through that solve (a dense 1024x1024 Cholesky each)",
    }


# --------------------------------------------------------------------------------------------
# gcrf-unary and gcrf-mdn: the VAE-MDN stages, never run twice
# --------------------------------------------------------------------------------------------


def _copy_atomic(src: Path, dst: Path) -> None:
    with open(src, "rb") as fh:
        atomic_write(dst, lambda out: shutil.copyfileobj(fh, out))


def adopt_stages(src_run: Path, run_dir: Path) -> list[str]:
    """Copy the finished ``vae`` (required) and ``mdn`` (if finished) states of another run."""
    src_run, run_dir = Path(src_run), Path(run_dir)
    copied = []
    for stage, required in (("vae", True), ("mdn", False)):
        src, dst = src_run / stage / STATE_FILE, run_dir / stage / STATE_FILE
        if dst.exists():
            continue  # already here (adopted before, or trained in this RUN_DIR): keep it
        if not src.exists() or not load_checkpoint(src).meta.get("finished"):
            if required:
                raise SystemExit(f"--init-from {src_run}: no finished vae stage there ({src}); run `divcolor-train vae` for it first")
            continue
        _copy_atomic(src, dst)
        log = src.parent / "log.jsonl"
        if log.exists():
            _copy_atomic(log, dst.parent / "log.jsonl")
        copied.append(stage)
    return copied


def _finished_step(run_dir: Path, stage: str, steps: int) -> int | None:
    """The step of a finished stage that already reached ``steps`` (nothing to do), else None."""
    path = Path(run_dir) / stage / STATE_FILE
    if not path.exists():
        return None
    meta = load_checkpoint(path).meta
    step = int(meta.get("step", 0))
    return step if meta.get("finished") and step >= steps else None


def train_unary(cfg: GCRFUnaryStageConfig) -> int:
    """Phase 1: the VAE (unary term) — adopted from ``--init-from`` or trained as ``vae``."""
    run_dir = Path(cfg.out)
    if cfg.init_from:
        if int(os.environ.get("RANK", "0")) != 0:
            return 0  # under torchrun only rank 0 copies (atomically); there is nothing to train
        copied = adopt_stages(Path(cfg.init_from), run_dir)
        ck = read_state(run_dir, "vae")
        what = ", ".join(copied) if copied else "nothing (already present)"
        print(f"gcrf-unary: adopted {what} from {cfg.init_from}; VAE config {ck.config}", file=sys.stderr)
        return int(ck.meta.get("step", 0))
    done = _finished_step(run_dir, "vae", cfg.steps)
    if done is not None:
        print(f"gcrf-unary: {run_dir / 'vae'} is finished (step {done}); nothing to do", file=sys.stderr)
        return done
    return train_vae(cfg)


def train_gcrf_mdn(cfg: GCRFMDNStageConfig) -> int:
    """Stage 2: the MDN over z of the (unchanged) phase-1 encoder = the ``mdn`` stage."""
    done = _finished_step(Path(cfg.out), "mdn", cfg.steps)
    if done is not None:  # e.g. adopted by gcrf-unary --init-from: skip encoding the dataset
        print(f"gcrf-mdn: {Path(cfg.out) / 'mdn'} is finished (step {done}); nothing to do", file=sys.stderr)
        return done
    return train_mdn(cfg)


# --------------------------------------------------------------------------------------------
# gcrf-hoc
# --------------------------------------------------------------------------------------------


def reveal_fraction(step: int, total: int, levels: list[float]) -> float:
    """The paper's schedule scaled to ``total`` steps (level i from step total·2(i)/15)."""
    t = step / max(1, total)
    k = sum(1 for i, b in enumerate(PAPER_BOUNDARIES[: len(levels) - 1]) if t >= min(b, (i + 1) / len(levels)))
    return levels[k]


def reveal_mask(batch: int, pixels: int, frac: float, device: torch.device) -> torch.Tensor:
    """(B, P) 0/1: each pixel revealed with probability ``frac``, at least one per image."""
    if frac >= 1.0:
        return torch.ones(batch, pixels, device=device)
    m = (torch.rand(batch, pixels, device=device) < frac).float()
    none = m.sum(1) == 0
    if bool(none.any()):
        m[none, torch.randint(0, pixels, (int(none.sum()),), device=device)] = 1.0
    return m


def gcrf_train_solution(
    unary: torch.Tensor, A: torch.Tensor, reveal: torch.Tensor, beta: float, grid: int, exclude_self: bool = True
) -> torch.Tensor:
    """The G-CRF mean used in training: unary (B, 2, S, S), A (B, D, S, S), reveal (B, grid²).

    Solves ((I-Ŝ)ᵀ(I-Ŝ) + β diag(h)) x = β h ⊙ α on the ``grid`` x ``grid`` grid (A and α
    average-pooled when grid < S) and returns x upsampled to (B, 2, S, S). Differentiable in
    ``unary`` and ``A``.
    """
    b, _, s, _ = unary.shape
    if grid < s:
        A = F.adaptive_avg_pool2d(A, grid)
        unary = F.adaptive_avg_pool2d(unary, grid)
    dt = torch.float64 if unary.dtype == torch.float64 else torch.float32  # float32 at least (no bf16 solves)
    S_hat = similarity(A.flatten(2).to(dt), exclude_self)
    w = beta * reveal.to(dt)
    rhs = w[..., None] * unary.flatten(2).transpose(1, 2).to(dt)
    x = gcrf_solve(S_hat, w, rhs).transpose(1, 2).reshape(b, 2, grid, grid)
    if grid < s:
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    return x


def decoder_loss(pred: torch.Tensor, true: torch.Tensor, stats: ColorStats) -> tuple[torch.Tensor, dict[str, float]]:
    """L_hist + 0.1 L_mah + 1e-3 L_grad (the VAE decoder loss without its KL term)."""
    lh, lm, lg = hist_loss(pred, true, stats), mah_loss(pred, true, stats), grad_loss(pred, true)
    return lh + 0.1 * lm + 1e-3 * lg, {"hist": lh.item(), "mah": lm.item(), "grad": lg.item()}


def _vae_state_or_exit(run_dir: Path, device: torch.device):
    if not (run_dir / "vae" / STATE_FILE).exists():
        raise SystemExit(
            f"{run_dir / 'vae' / STATE_FILE} not found: run `divcolor-train gcrf-unary` with the same --out first "
            "(add --init-from RUN_DIR to reuse a finished VAE-MDN vae stage)"
        )
    return load_vae(run_dir, device)


def build_from_vae(run_dir: Path, cfg: GCRFHocStageConfig, device: torch.device) -> tuple[GCRF, ColorStats, dict]:
    """A GCRF whose VAE parts are the finished phase-1 weights; the embedding net is fresh."""
    vae, stats, vmeta = _vae_state_or_exit(run_dir, device)
    model = GCRF(cfg.model_config(vae.cfg.to_dict())).to(device)
    for part in ("grey_encoder", "decoder", "color_encoder"):
        getattr(model, part).load_state_dict(getattr(vae, part).state_dict())
    if vae.backbone is not None:
        model.attach_backbone(vae.backbone)
    return model, stats, vmeta


def train_hoc(cfg: GCRFHocStageConfig) -> int:
    device, ddp = prepare(cfg.threads, cfg.device)
    run_dir = Path(cfg.out)
    model, stats, vmeta = build_from_vae(run_dir, cfg, device)
    mcfg = model.cfg
    grid = min(int(cfg.hoc_train_size), mcfg.size)
    levels = [float(v) for v in cfg.reveal.split(",") if v.strip()]
    if not levels or not all(0 < v <= 1 for v in levels):
        raise SystemExit(f"--reveal must list fractions in (0, 1], got {cfg.reveal!r}")
    stats = ColorStats(*(t.to(device) for t in stats.__dict__.values()))
    model.requires_grad_(False)
    top = [model.decoder.blocks[3], model.decoder.out]  # the decoder's two top layers
    for m in [model.embed, *top]:
        m.requires_grad_(True)
    model.eval()
    opt = torch.optim.Adam(
        [{"params": list(model.embed.parameters()), "lr": cfg.lr},
         {"params": [p for m in top for p in m.parameters()], "lr": cfg.decoder_lr}]
    )
    train = D.load_lab(cfg.data, "train", mcfg.size, cfg.limit or None)
    sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed, ddp)

    def step(i: int):
        model.decoder.blocks[:3].eval()  # run_loop put the whole decoder in train mode
        idx = sampler(i)
        L, ab = train.batch(idx, torch.rand(len(idx)) < 0.5)
        L, ab = L.to(device), ab.to(device)
        feats, grey = frozen_grey_features(model, L, device)
        with torch.no_grad():
            mu, logvar = model.color_encoder(ab)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        with autocast(device):
            unary = model.decoder(z, feats, grey)
        # The embedding stays float32: S = softmax(AᵀA) turns bf16's 3-digit rounding of A into
        # logit noise the fp32 inference never sees (the bf16 run regressed faces .050 -> .069).
        A = model.embed(grey, feats)
        frac = reveal_fraction(i, cfg.steps, levels)
        h = reveal_mask(len(idx), grid * grid, frac, device)
        x = gcrf_train_solution(unary.float(), A.float(), h, mcfg.beta_train, grid, mcfg.exclude_self)
        loss, logs = decoder_loss(x, ab, stats)
        logs["reveal"] = frac
        logs["unary_hist"] = hist_loss(unary.detach().float(), ab, stats).item()
        return loss, logs

    meta = {
        "method": METHOD, "config": mcfg.to_dict(), "stage_config": cfg.public(),
        "data": vmeta.get("data"), "vae_steps": vmeta.get("step"),
    }
    spec = LoopSpec(run_dir, HOC_STAGE, cfg.steps, cfg.seed, cfg.log_every, cfg.checkpoint_minutes, cfg.max_minutes, cfg.stop_after)
    return run_loop(spec, {"embed": model.embed, "decoder": model.decoder}, opt, step, meta, sched=cosine(cfg.steps, warmup=50), ddp=ddp)


# --------------------------------------------------------------------------------------------
# gcrf-hints: learned propagation of hints (Zhang et al. 2017)
# --------------------------------------------------------------------------------------------

HINTS_STAGE = "gcrf-hints"


def simulate_hints(
    ab: torch.Tensor, max_points: int = 100, stroke_prob: float = 0.3, half: tuple[float, float] = (1.5, 2.0),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random hints from the true ab (B, 2, S, S), as a user (or Table 3) would give them.

    Points: 0..``max_points`` per image, log-uniform (as many images with 1-3 points as with
    30-100), squares of half-side ``half`` px at random positions (7x7 at 128 px is 1.75 at
    64) revealing their mean true ab, with area coverage at their edges as
    :func:`to_grid` gives the evaluation's squares. Strokes (probability ``stroke_prob``): 1-3
    short straight lines of one colour (the true ab where they start), kept only where the
    truth is within 0.1 of that colour: users paint inside an object.

    Returns coverage (B, 1, S, S) in [0, 1], hint ab (B, 2, S, S), the hint colours (B, K, 2)
    and which of the K are real (B, K).
    """
    b, _, h, w = ab.shape
    dev = ab.device
    rnd = lambda *shape: torch.rand(*shape, generator=generator).to(dev)
    k = max(1, int(max_points))
    n = (torch.exp(rnd(b) * math.log(k + 1)) - 1).floor().clamp(0, k)  # log-uniform count in 0..k
    n = torch.where(rnd(b) < 0.05, torch.zeros_like(n), n)
    valid = torch.arange(k, device=dev)[None] < n[:, None]  # (B, K)
    hs = half[0] + (half[1] - half[0]) * rnd(b, k)
    cy, cx = rnd(b, k) * h, rnd(b, k) * w
    ys = torch.arange(h, device=dev, dtype=ab.dtype)
    xs = torch.arange(w, device=dev, dtype=ab.dtype)
    ov = lambda c, r, g: (torch.minimum(g + 1, (c + r)[..., None]) - torch.maximum(g, (c - r)[..., None])).clamp(0, 1)
    oy = ov(cy, hs, ys) * valid[..., None]  # (B, K, H): each square's coverage is oy ⊗ ox
    ox = ov(cx, hs, xs)  # (B, K, W)
    area = oy.sum(-1) * ox.sum(-1)  # (B, K)
    colours = torch.einsum("bkh,bchw,bkw->bkc", oy, ab, ox) / area[..., None].clamp(min=1e-8)
    cov = torch.einsum("bkh,bkw->bhw", oy, ox)
    tgt = torch.einsum("bkh,bkcw->bchw", oy, ox[:, :, None] * colours[..., None]) / cov[:, None].clamp(min=1e-8)
    cov = cov.clamp(max=1.0)
    if stroke_prob > 0:
        sc, st, sv = _simulate_strokes(ab, stroke_prob, rnd)
        cov = torch.maximum(cov, sc)
        tgt = torch.where(sc[:, None] > 0, st, tgt)  # strokes paint over points
        colours, valid = torch.cat([colours, sv[0]], 1), torch.cat([valid, sv[1]], 1)
    tgt = torch.where(cov[:, None] > 0, tgt, torch.zeros_like(tgt))
    return cov[:, None], tgt, colours, valid


def _simulate_strokes(ab: torch.Tensor, prob: float, rnd) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Up to 3 short one-colour strokes per image (see :func:`simulate_hints`): coverage (B, H, W),
    ab (B, 2, H, W), and (colours (B, 3, 2), valid (B, 3))."""
    b, _, h, w = ab.shape
    dev = ab.device
    m = 3
    on = (rnd(b, 1) < prob) & (torch.arange(m, device=dev)[None] < (1 + (rnd(b, 1) * m).floor()))  # (B, 3)
    y0, x0 = (rnd(b, m) * h).floor(), (rnd(b, m) * w).floor()
    ang, length = rnd(b, m) * 2 * math.pi, 4 + rnd(b, m) * 12
    seed_ab = ab[torch.arange(b, device=dev)[:, None], :, y0.long(), x0.long()]  # (B, 3, 2)
    ys = torch.arange(h, device=dev, dtype=ab.dtype)[None, None, :, None]
    xs = torch.arange(w, device=dev, dtype=ab.dtype)[None, None, None, :]
    dy, dx = torch.sin(ang)[..., None, None], torch.cos(ang)[..., None, None]
    ry, rx = ys - y0[..., None, None], xs - x0[..., None, None]
    t = (ry * dy + rx * dx).clamp(min=0).minimum(length[..., None, None])
    dist = ((ry - t * dy) ** 2 + (rx - t * dx) ** 2).sqrt()
    line = (dist <= 1.0) & on[..., None, None]  # (B, 3, H, W): radius-1 capsules
    near = _sq_dist(ab, seed_ab) < 0.01
    line = (line & near).to(ab.dtype)
    cov = line.amax(1)
    col = torch.einsum("bkhw,bkc->bchw", line, seed_ab) / line.sum(1)[:, None].clamp(min=1e-8)
    return cov, col, (seed_ab, on)


def _sq_dist(ab: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Squared distance of each pixel's ab (B, 2, H, W) to each colour (B, K, 2): (B, K, H, W)."""
    cross = torch.einsum("bchw,bkc->bkhw", ab, colours)
    return ((ab * ab).sum(1)[:, None] - 2 * cross + (colours * colours).sum(-1)[..., None, None]).clamp(min=0)


def keep_target(ab: torch.Tensor, base: torch.Tensor, colours: torch.Tensor, valid: torch.Tensor, tol: float) -> torch.Tensor:
    """What the hint branch should make of a sample: the truth where the truth has (nearly) the
    colour of some hint, the sample elsewhere, blended by exp(-d²/2tol²) with d the true ab's
    distance to the nearest hint colour. Recolouring what the hints are about and keeping the
    rest is what the app promises ("unstroked pixels keep the colorization the user picked")."""
    if colours.shape[1] == 0:
        return base
    far = torch.where(valid[..., None], colours, torch.full_like(colours, 1e3))  # no real hint: never near
    wgt = torch.exp(-_sq_dist(ab, far).amin(1, keepdim=True) / (2 * tol * tol))
    return wgt * ab + (1 - wgt) * base


def train_hints(cfg: GCRFHintsStageConfig) -> int:
    """Train the hint branch (:class:`engine.models.gcrf.HintNet`) with everything else frozen.

    Each image gets simulated hints (:func:`simulate_hints`) and, with probability
    ``base_prob``, a sample of the model to correct (the MDN's top mean or a draw, decoded);
    otherwise the branch colours from the hints alone. Loss: mean squared ab error of the
    branch's unary against the truth (hints alone) or :func:`keep_target` (over a sample),
    plus ``solve_weight`` x the same error of the stroke field's solve over that unary on the
    solve grid (:func:`engine.propagate.solve_strokes_batch`, the app's energy and weights) for
    ``solve_images`` of the batch: the branch then learns what the solve does not already
    supply (exact hints, smoothing along Ŝ), as the paper trains the unary through the G-CRF.
    Ŝ is frozen, so M is factorised without autograd and the backward is one triangular solve.
    """
    from engine.colorizer import load_model
    from engine.models.gcrf import HintNet

    device, ddp = prepare(cfg.threads, cfg.device)
    run_dir = Path(cfg.out)
    if cfg.init:
        base_model = load_model(cfg.init)
        if not isinstance(base_model, GCRF):
            raise SystemExit(f"--init {cfg.init}: not a G-CRF model file")
        source = {"init": str(cfg.init)}
    else:
        base_model, _, _ = assemble(run_dir)
        source = {"init": ""}
    mcfg = GCRFConfig.from_dict({**base_model.cfg.to_dict(), "hint_branch": True, "hint_width": cfg.hint_width,
                                 "hint_unary": cfg.hint_unary})
    model = GCRF(mcfg, with_color_encoder=False)
    for part in ("grey_encoder", "decoder", "mdn", "embed"):
        getattr(model, part).load_state_dict(getattr(base_model, part).state_dict())
    if base_model.backbone is not None:
        model.attach_backbone(base_model.backbone)
    model = model.to(device).requires_grad_(False).eval()
    net: HintNet = model.hint_net  # type: ignore[assignment]
    if base_model.has_hint_branch and base_model.cfg.hint_width == cfg.hint_width:
        net.load_state_dict(base_model.hint_net.state_dict())  # continue a trained branch
        print(f"gcrf-hints: continuing the trained hint branch of {cfg.init or run_dir}", file=sys.stderr)
    net.requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    train = D.load_lab(cfg.data, "train", mcfg.size, cfg.limit or None)
    sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed, ddp)

    def step(i: int):
        model.eval()
        net.train()
        idx = sampler(i)
        L, ab = train.batch(idx, torch.rand(len(idx)) < 0.5)
        L, ab = L.to(device), ab.to(device)
        b = len(idx)
        feats, grey = frozen_grey_features(model, L, device)
        with torch.no_grad():
            log_pi, mu = model.mdn(feats)
            top = mu[torch.arange(b), log_pi.argmax(1)]
            comp = torch.multinomial(log_pi.exp(), 1)[:, 0]
            drawn = mu[torch.arange(b), comp] + mcfg.mdn_sigma * torch.randn_like(top)
            z = torch.where((torch.rand(b, device=device) < 0.5)[:, None], top, drawn)
            sample = model.decoder(z, feats, grey).float()
            has = (torch.rand(b, device=device) < cfg.base_prob).float()
            cov, hint_ab, colours, valid = simulate_hints(ab, cfg.max_points, cfg.stroke_prob)
            target = torch.where(has.view(b, 1, 1, 1) > 0, keep_target(ab, sample, colours, valid, cfg.keep_tolerance), ab)
        with autocast(device):
            pred = net(grey, feats, sample, has, cov, hint_ab)
        loss = F.mse_loss(pred.float(), target)
        logs: dict[str, float] = {}
        if cfg.solve_weight > 0 and cfg.solve_images > 0:
            k = min(b, cfg.solve_images)
            solved, target_g = _solved_hints(model, L[:k], feats, grey, sample[:k], has[:k], cov[:k], hint_ab[:k],
                                             pred[:k].float(), target[:k])
            mse_solved = F.mse_loss(solved, target_g)
            loss = loss + cfg.solve_weight * mse_solved
            logs["mse_solved"] = float(mse_solved.detach())
        with torch.no_grad():
            logs |= {"mse_alone": float(((pred - ab) ** 2)[has == 0].mean()) if bool((has == 0).any()) else float("nan"),
                     "mse_over": float(((pred - target) ** 2)[has == 1].mean()) if bool((has == 1).any()) else float("nan"),
                     "points": float(valid.sum(1).float().mean())}
        return loss, logs

    meta = {"method": METHOD, "config": mcfg.to_dict(), "stage_config": cfg.public(), **source,
            "data": D.describe(cfg.data, "train", len(train))}
    spec = LoopSpec(run_dir, HINTS_STAGE, cfg.steps, cfg.seed, cfg.log_every, cfg.checkpoint_minutes, cfg.max_minutes, cfg.stop_after)
    return run_loop(spec, {"hint_net": net}, opt, step, meta, sched=cosine(cfg.steps, warmup=50), ddp=ddp)


def _solved_hints(
    model: GCRF, L: torch.Tensor, feats: Sequence[torch.Tensor], grey: torch.Tensor, sample: torch.Tensor,
    has: torch.Tensor, cov: torch.Tensor, hint_ab: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stroke field's answer for the k images of ``L`` on the solve grid, as
    ``GCRFStrokeField.solve_hints`` gives it (hints alone: pulled toward the branch's unary;
    over a sample: toward the branch's whole answer, ``local=False``), differentiable in
    ``pred``; and ``target`` on that grid."""
    from engine.propagate import (STROKE_GRID, STROKE_WEIGHT_GAIN, solve_strokes_batch, stroke_embeddings,
                                  stroke_smoothness, to_solve_grid)
    from engine.types import Hints

    k, g = L.shape[0], min(STROKE_GRID, model.cfg.size)
    cut = lambda t: t[:k] if t.shape[0] > 1 else t
    with torch.no_grad():
        A = to_solve_grid(stroke_embeddings(model, L, [cut(f) for f in feats], cut(grey)), g).flatten(2)
        KtK = stroke_smoothness(similarity(A, model.cfg.exclude_self))
        hints = Hints(cov[:, 0], hint_ab).resized((g, g))  # as the field puts the strokes on its grid
        base_g = to_solve_grid(sample, g) * has.view(k, 1, 1, 1)
    beta = model.cfg.beta_test
    solved = solve_strokes_batch(KtK, hints.coverage, hints.ab, base_g, to_solve_grid(pred, g) - base_g,
                                 beta * model.cfg.hint_unary, beta * STROKE_WEIGHT_GAIN)
    return solved.float(), to_solve_grid(target, g)


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


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def assemble(run_dir: Path) -> tuple[GCRF, ColorStats, dict[str, Any]]:
    """The inference model from a run's finished vae, gcrf-hoc and mdn stages (CPU)."""
    run_dir = Path(run_dir)
    cpu = torch.device("cpu")
    vae, stats, vmeta = _vae_state_or_exit(run_dir, cpu)
    hoc = read_state(run_dir, HOC_STAGE)
    mck = read_state(run_dir, "mdn")
    cfg = GCRFConfig.from_dict(hoc.config)
    model = GCRF(cfg, with_color_encoder=False)
    model.grey_encoder.load_state_dict(vae.grey_encoder.state_dict())
    if vae.backbone is not None:
        model.attach_backbone(vae.backbone)
    model.decoder.load_state_dict(hoc.subset("decoder"))
    model.embed.load_state_dict(hoc.subset("embed"))
    model.mdn.load_state_dict(mck.subset("mdn"))
    info = {"vae": vmeta, "hoc": hoc.meta, "mdn": mck.meta}
    return model.eval(), stats, info


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


# --------------------------------------------------------------------------------------------
# Strokes: hint propagation for evaluation and the weak-unary tuning
# --------------------------------------------------------------------------------------------


class ImageHintSolver:
    """Solves the stroke (δ) system of :class:`engine.models.gcrf.GCRFField` for one image
    under many hint sets and a few weak-unary weights, as evaluation and tuning need.

    (I-Ŝ)ᵀ(I-Ŝ) is formed once per image (~1.2 s at 64x64 on one core); each weak-unary weight
    gets one Cholesky inverse (~0.6 s); each hint set is then a Woodbury solve (milliseconds,
    no rebasing), whatever its hint weight. Conjugate gradients would need ~100 memory-bound
    iterations (~3 s) per solve at these weak weights. Call with one weak-unary weight at a
    time: only the last inverse is kept.
    """

    def __init__(self, S_hat: torch.Tensor, stroke_weight: float):
        self.S_hat, self.stroke_weight = S_hat.float(), float(stroke_weight)
        self.KtK = normal_matrix(self.S_hat)
        self._solver: GCRFSolver | None = None
        self._base_weight = 0.0

    def __call__(
        self, coverage: torch.Tensor, target: torch.Tensor, base: torch.Tensor, base_weight: float,
        stroke_weight: float | None = None,
    ) -> torch.Tensor:
        """coverage (S, S), target and base (2, S, S) in ab/128 -> (2, S, S); ``stroke_weight``
        overrides the hint weight given at construction."""
        if self._solver is None or self._base_weight != float(base_weight):
            self._solver = None  # free the previous inverse first
            p = self.KtK.shape[0]
            self._solver = GCRFSolver(None, float(base_weight), max_rank=p, KtK=self.KtK)
            self._base_weight = float(base_weight)
        sw = self.stroke_weight if stroke_weight is None else float(stroke_weight)
        field = GCRFField(self.S_hat, float(base_weight), sw, solver=self._solver)
        return field.propagate(coverage, target, base)


def random_squares(rng: np.random.Generator, n: int, size: int, patch: int) -> list[tuple[int, int]]:
    """n top-left corners of patch x patch squares inside a size x size image."""
    hi = max(1, size - patch + 1)
    return [(int(rng.integers(0, hi)), int(rng.integers(0, hi))) for _ in range(n)]


def reveal_squares(ab: torch.Tensor, corners: list[tuple[int, int]], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Table 3's hints: each square reveals its *mean* ground-truth ab on all its pixels.

    ab (2, H, W) -> coverage (H, W) in {0, 1}, target ab (2, H, W) (later squares win).
    """
    cov = torch.zeros(ab.shape[-2:])
    tgt = torch.zeros_like(ab)
    for y, x in corners:
        sl = (slice(y, y + patch), slice(x, x + patch))
        cov[sl] = 1.0
        tgt[(slice(None), *sl)] = ab[(slice(None), *sl)].mean(dim=(1, 2), keepdim=True)
    return cov, tgt


def to_grid(cov: torch.Tensor, tgt: torch.Tensor, grid: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-weighted coverage and mean hint colour on a coarser grid (as strokes.rasterize);
    ``grid`` is a side or (h, w)."""
    if tuple(cov.shape[-2:]) == ((grid, grid) if isinstance(grid, int) else tuple(grid)):
        return cov, tgt
    c = F.adaptive_avg_pool2d(cov[None, None], grid)[0, 0]
    t = F.adaptive_avg_pool2d((tgt * cov)[None], grid)[0] / c.clamp(min=1e-8)
    return c, torch.where(c > 0, t, torch.zeros_like(t))


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


# --------------------------------------------------------------------------------------------
# Evaluation: Table 2 (eob / variance / SSIM) and Table 3 (PSNR vs revealed points)
# --------------------------------------------------------------------------------------------


class LevinBaseline:
    """Levin et al. (2004) on one test image, through ``engine.propagate.LevinField``.

    Points only (no base colorization): the pure propagation that Table 3 compares against.
    The field is built once per image and solves each hint set on its own grid (the full
    128x128 image with the default limits), upsampled guided by L when the grid is coarser.
    """

    def __init__(self, L: torch.Tensor, ab: torch.Tensor):
        from engine.io import photo_from_array
        from engine.propagate import LevinField

        rgb = recombine(L, ab[None] * AB_SCALE)[0].permute(1, 2, 0).numpy()
        self.L = L
        self.field = LevinField(photo_from_array(np.ascontiguousarray(rgb)))

    def __call__(self, coverage: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w, h = self.field.grid
        c, t = to_grid(coverage, target, (h, w))
        U = torch.from_numpy(self.field.solve(c.double().numpy(), t.double().numpy(), None)).float()
        if (h, w) != tuple(self.L.shape):
            U = guided_upsample_ab(U[None] * AB_SCALE, self.L)[0] / AB_SCALE
        return U


def _evenly_spaced(lab: D.LabSet, limit: int) -> D.LabSet:
    """``limit`` evenly spaced images: shards are in source order (grouped by class), so a
    limited run still covers every class."""
    if not limit or limit >= len(lab):
        return lab
    idx = torch.linspace(0, len(lab) - 1, limit).round().long()
    return D.LabSet(lab.L[idx], lab.ab[idx])


class _RevealImage:
    """One Table 3 image: its hint sets (nested: the first N of the drawn squares, so curves
    are monotone in information), its Ŝ and automatic colorization at the model grid, and
    PSNR of a grid-sized ab field guided-upsampled to the image."""

    def __init__(self, model: GCRF, L: torch.Tensor, ab: torch.Tensor, points: tuple[int, ...], patch: int, seed: int):
        size, g = L.shape[-1], model.cfg.size
        self.L, self.ab, self.g = L, ab, g
        self.model, self.Lg = model, F.interpolate(L, size=(g, g), mode="area")
        self.truth = recombine(L[0, 0], ab[None] * AB_SCALE)
        corners = random_squares(np.random.default_rng(seed), max(points), size, patch)
        self.hints = [reveal_squares(ab, corners[:n], patch) for n in points]

    @functools.cached_property
    def solve(self) -> "ImageHintSolver":
        """The paper-form hint solver at the model grid (models without a hint branch)."""
        return ImageHintSolver(self.model.similarity(self.Lg)[0], self.model.cfg.beta_test)

    @functools.cached_property
    def field(self):
        """The app's stroke field on this image (grey photo at its size): what the canvas solves."""
        from engine.io import photo_from_array
        from engine.propagate import GCRFStrokeField

        grey = (self.L[0, 0] / 100.0).clamp(0, 1).numpy()  # any grey image with this L: only L is read
        photo = photo_from_array(np.ascontiguousarray(grey))
        photo.L = self.L[0, 0].numpy().astype(np.float32)  # exact L, not a round trip through sRGB
        return GCRFStrokeField(self.model, photo)

    def app_fields(self, base: torch.Tensor | None, local: bool = True) -> list[torch.Tensor]:
        """The app's result for every hint set at full size (ab/128, (2, H, W)): the solve-grid
        edit guided-upsampled onto the base (upsampled from the model grid), as ``render_edit``.
        ``local``: see :meth:`engine.propagate.GCRFStrokeField.solve_hints`."""
        full_base = self.upsample(base) if base is not None else torch.zeros_like(self.ab)
        out = []
        for c, t in self.hints:
            x, gb = self.field.solve_hints(*to_grid(c, t, self.g), base, local=local)
            out.append(full_base + self.upsample(x.cpu() - gb.cpu()))
        return out

    def branch_fields(self, base: torch.Tensor | None) -> list[torch.Tensor]:
        """The hint branch's unary alone (no solve), at the model grid: what the solve adds."""
        feats, grey = self.model.grey_features(self.Lg)
        out = []
        for c, t in self.hints:
            from engine.types import Hints

            out.append(self.model.hint_unary(feats, grey, None if base is None else base[None], Hints(*to_grid(c, t, self.g)))[0])
        return out

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """ab/128 (2, s, s) -> (2, H, W), guided by the image's L."""
        if x.shape[-1] == self.L.shape[-1]:
            return x
        return guided_upsample_ab(x[None].float() * AB_SCALE, self.L[0, 0])[0] / AB_SCALE

    @functools.cached_property
    def base(self) -> torch.Tensor:
        """The automatic colorization (top MDN mode) at the grid; only the "over its colorization"
        curve needs it, so hints-only tuning never decodes it."""
        return self.model.colorize(self.Lg, 1, mode="means")[0].float()

    @property
    def grey(self) -> torch.Tensor:
        return torch.zeros(2, self.g, self.g)

    def rgb(self, x: torch.Tensor) -> torch.Tensor:
        """ab (2, s, s) at the grid or the image size -> RGB (1, 3, H, W) with the image's L."""
        full = x[None] * AB_SCALE if x.shape[-1] == self.L.shape[-1] else guided_upsample_ab(x[None] * AB_SCALE, self.L[0, 0])
        return recombine(self.L[0, 0], full)

    def gcrf_fields(self, base: torch.Tensor, base_weight: float, hint_weight: float | None = None) -> list[torch.Tensor]:
        return [self.solve(*to_grid(c, t, self.g), base, base_weight, hint_weight) for c, t in self.hints]

    def levin_fields(self) -> list[torch.Tensor]:
        levin = LevinBaseline(self.L[0, 0], self.ab)
        return [levin(c, t) for c, t in self.hints]

    def curve(self, fields: list[torch.Tensor]) -> list[float]:
        return [M.psnr(self.rgb(x), self.truth) for x in fields]

    def gcrf_curve(self, base: torch.Tensor, base_weight: float, hint_weight: float | None = None) -> list[float]:
        return self.curve(self.gcrf_fields(base, base_weight, hint_weight))

    def hint_overlay(self, k: int) -> torch.Tensor:
        """The grey image with hint set k's squares painted in their colours, (3, H, W)."""
        cov, tgt = self.hints[k]
        return recombine(self.L[0, 0], (tgt * cov)[None] * AB_SCALE)[0]


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
    lab = _evenly_spaced(D.load_lab(data, split, size), limit)
    beta = model.cfg.beta_test
    grid = [(w, h) for w in weights for h in hint_weights]
    scores: dict[tuple[float, float], list[list[float]]] = {k: [] for k in grid}
    t0 = time.time()
    for i in range(len(lab)):
        img = _RevealImage(model, lab.L[i : i + 1], lab.ab[i], points, patch, seed + i)
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
    lab = _evenly_spaced(D.load_lab(data, split, size), limit)
    beta = model.cfg.beta_test
    learned = bool(getattr(model, "has_hint_branch", False))
    keys = [*CURVES, *(["gcrf_canvas", "gcrf_hint_branch"] if learned else [])]
    res: dict[str, list[list[float]]] = {k: [] for k in keys}
    k_sheet = points.index(sheet_points) if sheet_points in points else len(points) // 2
    rows: list[list[torch.Tensor]] = []
    t0 = time.time()
    for i in range(len(lab)):
        img = _RevealImage(model, lab.L[i : i + 1], lab.ab[i], points, patch, seed + i)
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


HINT_UNARY_CANDIDATES = (0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01)  # x beta_test


@torch.no_grad()
def tune_hint_unary(
    model: GCRF, data: str, split: str = "train", limit: int = 20, points: tuple[int, ...] = (1, 10, 50),
    candidates: tuple[float, ...] = HINT_UNARY_CANDIDATES, size: int = 128, patch: int = 7, seed: int = 10_000,
) -> dict[str, Any]:
    """Pick the pull toward a hint branch's unary (x beta_test) on *training* images: mean
    Table 3 PSNR of the app's field, hints alone and over the automatic colorization. Sets
    ``model.cfg.hint_unary`` to the best and returns the scores."""
    model.eval()
    lab = _evenly_spaced(D.load_lab(data, split, size), limit)
    scores: dict[float, list[float]] = {c: [] for c in candidates}
    t0 = time.time()
    for c in candidates:
        model.cfg.hint_unary = c
        for i in range(len(lab)):
            img = _RevealImage(model, lab.L[i : i + 1], lab.ab[i], points, patch, seed + i)
            scores[c] += img.curve(img.app_fields(None)) + img.curve(img.app_fields(img.base, local=False))
    mean = {c: float(np.mean(v)) for c, v in scores.items()}
    best = max(candidates, key=lambda c: mean[c])
    model.cfg.hint_unary = best
    return {"hint_unary": best, "psnr": {str(c): round(v, 3) for c, v in mean.items()}, "points": list(points),
            "data": f"{Path(data).name} {split} ({len(lab)} images)", "seconds": round(time.time() - t0, 1)}


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
            sheet=Path(sheet).with_name(Path(sheet).stem + "_points.png") if sheet else None,
        )
        result["psnr_vs_points"]["points_only_tuning"] = tuned
    print(json.dumps(result, indent=2))
    return result


def checkpoint_method(path: str | Path) -> str:
    """The method a model file holds ("" if unreadable: the evaluator then reports why)."""
    from engine.errors import CheckpointError

    try:
        return load_checkpoint(path).method
    except CheckpointError:
        return ""
