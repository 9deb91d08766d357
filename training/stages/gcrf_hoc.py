"""G-CRF phase 2, stage ``gcrf-hoc`` (Messaoud et al. 2018, §3.3): the HOC term, and the
inference model assembled from a run's finished stages.

``gcrf-hoc`` trains the embedding network (the HOC term) and the decoder's two top layers,
everything else frozen; the loss is the decoder loss (without KL) on the G-CRF solution with
β = 1, H revealing a random fraction of unary pixels that falls 100% → 75 → 50 → 25 → 10% (the
paper's epochs 2, 4, 6, 8 of 15, scaled to ``--steps``).

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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from engine.gcrf_solver import gcrf_solve, similarity
from engine.models.gcrf import GCRF, METHOD, GCRFConfig

from .. import data as D
from ..batches import BatchSampler
from ..config import StageConfig
from ..loop import STATE_FILE, LoopSpec, autocast, cosine, frozen_grey_features, prepare, read_state, run_loop
from ..taps_cache import feeding, training_set
from ..losses import ColorStats, grad_loss, hist_loss, mah_loss
from .gcrf import HOC_STAGE
from .vae_mdn import load_vae, trained_flips


PAPER_BOUNDARIES = (2 / 15, 4 / 15, 6 / 15, 8 / 15)  # reveal-level changes: epochs 2, 4, 6, 8 of 15


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
    flips = trained_flips(vmeta)
    train = training_set(D.load_parts(cfg.data, "train", mcfg.size, cfg.limit or None), model.backbone, device, flips)
    sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed, ddp)

    def step(i: int):
        model.decoder.blocks[:3].eval()  # run_loop put the whole decoder in train mode
        idx = sampler(i)
        L, ab, taps = train.batch(idx, (torch.rand(len(idx)) < 0.5) & flips)
        L, ab = L.to(device), ab.to(device)
        with feeding(model.backbone, taps):
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
