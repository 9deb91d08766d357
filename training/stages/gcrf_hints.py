"""G-CRF stage ``gcrf-hints``: a learned hint branch (Zhang et al. 2017) trained on a finished
G-CRF model, everything else frozen: simulated user hints (points and short strokes), what the
branch should make of them, and its training loop. Its export is in ``gcrf_export``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from engine.gcrf_solver import similarity
from engine.models.gcrf import GCRF, METHOD, GCRFConfig

from .. import data as D
from ..batches import BatchSampler
from ..config import StageConfig
from ..loop import STATE_FILE, LoopSpec, autocast, cosine, frozen_grey_features, prepare, read_state, run_loop
from ..taps_cache import feeding, training_set
from .gcrf import HINTS_STAGE
from .gcrf_hoc import assemble
from .vae_mdn import trained_flips


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
    vae_state = run_dir / "vae" / STATE_FILE  # mirrors as the run's VAE saw them; with only --init, both
    flips = trained_flips(read_state(run_dir, "vae").meta) if vae_state.exists() else True
    train = training_set(D.load_parts(cfg.data, "train", mcfg.size, cfg.limit or None), model.backbone, device, flips)
    sampler = BatchSampler(len(train), cfg.batch_size, cfg.seed, ddp)

    def step(i: int):
        model.eval()
        net.train()
        idx = sampler(i)
        L, ab, taps = train.batch(idx, (torch.rand(len(idx)) < 0.5) & flips)
        L, ab = L.to(device), ab.to(device)
        b = len(idx)
        with feeding(model.backbone, taps):
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
