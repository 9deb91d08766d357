"""Backbone training throughput (images/s) on this machine: fp32 eager is the baseline, measured
in the same run as bf16 autocast, channels-last and torch.compile; plus the data path alone
(crop, Lab, old-photo damage, soft encoding) so one can see which side bounds a step.

    python benchmarks/bench_backbone_train.py [--steps 20] [--batch 32] [--threads 2] [--compile]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from engine.color import AB_SCALE
from engine.models.backbone import Backbone, BackboneConfig
from training.augment import degrade_L, random_crops
from training.losses import rebalance_weights, rebalanced_ce, soft_encode
from training.stages.backbone import _to_lab


def data_step(rgb_u8: np.ndarray, bins: torch.Tensor, size: int, g: torch.Generator):
    x = torch.from_numpy(rgb_u8).permute(0, 3, 1, 2).float() / 255.0
    L, ab = _to_lab(random_crops(x, size, g))
    L_in = degrade_L(L, g)
    idx, wk = soft_encode(F.avg_pool2d(ab, 4), bins)
    return L_in, idx, wk


def time_variant(name: str, batch: tuple, steps: int, precision: str, channels_last: bool, compile_: bool) -> float:
    torch.manual_seed(0)
    model = Backbone(BackboneConfig())
    bins = model.bins * AB_SCALE
    class_w = rebalance_weights(torch.ones(len(bins)), bins)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model.net) if compile_ else model.net
    opt = torch.optim.AdamW(model.net.parameters(), 1e-3)
    L, idx, wk = batch
    if channels_last:
        L = L.contiguous(memory_format=torch.channels_last)

    def one():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = net(L).logits
        loss = rebalanced_ce(logits, idx, wk, class_w)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):  # warm-up (and compilation)
        one()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    dt = (time.perf_counter() - t0) / steps
    rate = L.shape[0] / dt
    print(f"{name:28s} {dt * 1000:8.1f} ms/step {rate:8.1f} img/s   (warm-up {warm:.1f} s)", flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    bins = Backbone(BackboneConfig()).bins * AB_SCALE
    g = torch.Generator().manual_seed(0)
    batch = data_step(rgb, bins, 64, g)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        data_step(rgb, bins, 64, g)
    d = (time.perf_counter() - t0) / args.steps
    print(f"{'data path only':28s} {d * 1000:8.1f} ms/step {args.batch / d:8.1f} img/s")
    base = time_variant("fp32 eager (baseline)", batch, args.steps, "fp32", False, False)
    rows = [
        ("bf16 autocast", "bf16", False, False),
        ("fp32 channels-last", "fp32", True, False),
        ("bf16 channels-last", "bf16", True, False),
    ]
    if args.compile:
        rows.append(("fp32 torch.compile", "fp32", False, True))
        rows.append(("bf16 torch.compile", "bf16", False, True))
    for name, prec, cl, comp in rows:
        r = time_variant(name, batch, args.steps, prec, cl, comp)
        print(f"{'':28s} ratio vs baseline: {r / base:.2f}x")


if __name__ == "__main__":
    main()
