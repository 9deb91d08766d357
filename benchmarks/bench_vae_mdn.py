"""8 VAE-MDN colorizations of a 1024-px photo on the CPU, end to end (model + guided upsampling).

Baselines, measured in the same run: the same 8 colorizations asked for one at a time (what a
naive caller would do), and the full-size step (guided upsampling + Lab->RGB) done with torch
ops as before the CPU path moved to the export kernel. Goal: batched <= 0.5 s.

    python benchmarks/bench_vae_mdn.py [--checkpoint PATH] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.color import AB_SCALE, guided_upsample_ab, recombine  # noqa: E402
from engine.colorizer import Colorizer  # noqa: E402
from engine.io import load_photo, photo_from_array  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "bw_demo" / "Harlem1932.jpg"


def photo_1024():
    if SAMPLE.exists():
        p = load_photo(SAMPLE)
        img = Image.fromarray((p.rgb * 255).astype(np.uint8)).resize((1024, 1024), Image.LANCZOS)
        return photo_from_array(np.asarray(img)), f"{SAMPLE.name} resized to 1024x1024"
    rng = np.random.default_rng(0)
    return photo_from_array(rng.random((1024, 1024)).astype(np.float32)), "random 1024x1024"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    c = Colorizer(device="cpu")
    info = c.resolve("vae-mdn", "general", args.checkpoint)
    photo, what = photo_1024()
    n = 8
    batched = timed(lambda: c.sample(photo, n=n, checkpoint=args.checkpoint), args.repeats)
    one_by_one = timed(lambda: [c.sample(photo, n=1, seed=k, checkpoint=args.checkpoint) for k in range(n)], args.repeats)
    ab0 = (torch.rand(n, 2, 64, 64, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.4  # some colour
    up = timed(lambda: c.upsample(photo, ab0), args.repeats)
    L = torch.from_numpy(photo.L)
    torch_up = timed(lambda: recombine(L, guided_upsample_ab(ab0 * AB_SCALE, L)).permute(0, 2, 3, 1).numpy(), args.repeats)
    print(f"photo: {what}; model: {info.name}; torch threads: {torch.get_num_threads()}")
    print(f"{'case':40s} {'median s':>9s} {'ratio':>7s}")
    print(f"{'baseline: 8 x sample(n=1)':40s} {one_by_one:9.3f} {1.0:7.2f}")
    print(f"{'batched: sample(n=8)':40s} {batched:9.3f} {one_by_one / batched:7.2f}x")
    print(f"{'  of which upsampling + Lab->RGB':40s} {up:9.3f}")
    print(f"{'  baseline: that step in torch (before)':40s} {torch_up:9.3f} {torch_up / up:7.2f}x slower")
    print(f"goal <= 0.5 s: {'met' if batched <= 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
