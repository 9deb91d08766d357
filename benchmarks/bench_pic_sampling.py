"""PIC sampling: cached (incremental) generation against the naive sampler, in the same run.

Naive = the whole decoder rerun once per chroma pixel (g(L) computed once for both, so the
ratio is the decoder's alone; rerunning g too would only flatter the cached sampler). Both draw
the same noise, and the script checks that they return the same samples. Also the end-to-end
figure the user sees: 8 samples of a 1024-px photo through the facade, guided upsampling
included. Goals: cached >= 25x naive; 8 samples <= 20 s on CPU.

    python benchmarks/bench_pic_sampling.py [--checkpoint PATH] [--threads N] [--naive-rows R]

``--naive-rows R`` times the naive sampler on the first R rows only and scales to the full
grid (every naive step costs the same: one full forward); 0 (the default) runs it whole.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_vae_mdn import photo_1024, timed  # noqa: E402
from engine.colorizer import Colorizer  # noqa: E402
from engine.errors import CheckpointError  # noqa: E402
from engine.models.pic import PIC, Noise, PICConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--naive-rows", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    c = Colorizer(device="cpu")
    try:
        info = c.resolve("pic", "general", args.checkpoint)
    except CheckpointError:  # no trained PIC yet: the cpu-preset architecture, untrained
        info, model, name = None, PIC(PICConfig()).eval(), "untrained cpu-preset PIC"
    else:
        model, name = c.model(info), info.name  # a broken file is an error, not a fallback
    n, s = 8, model.cfg.chroma_size
    photo, what = photo_1024()
    L = torch.nn.functional.interpolate(torch.from_numpy(photo.L)[None, None], size=(model.cfg.size,) * 2, mode="area")
    with torch.no_grad():
        cond = model.condition(L).expand(n, -1, -1, -1)
    noise = Noise.draw(n, s, s, model.cfg.n_mix, torch.Generator().manual_seed(0), "cpu", cond.dtype)

    t_cached = timed(lambda: model.sample_cached(cond, noise), args.repeats)
    cached = model.sample_cached(cond, noise)

    rows = args.naive_rows or s
    t = time.perf_counter()
    naive = model.sample_naive(cond, noise, rows=rows)
    t_naive = (time.perf_counter() - t) * s / rows
    same = torch.equal(naive[:, :, :rows], cached[:, :, :rows])

    t_e2e = float("nan")
    if info is not None:
        t_e2e = timed(lambda: c.sample(photo, "pic", n=n, checkpoint=args.checkpoint), args.repeats)

    print(f"model: {name}; chroma {s}x{s}, {n} samples; photo: {what}; torch threads: {torch.get_num_threads()}")
    print(f"{'case':60s} {'seconds':>9s} {'ratio':>8s}")
    scaled = f" (timed {rows} of {s} rows, scaled)" if rows < s else ""
    print(f"{'baseline: naive, decoder rerun per pixel' + scaled:60s} {t_naive:9.2f} {1.0:8.1f}")
    print(f"{'cached generation':60s} {t_cached:9.2f} {t_naive / t_cached:7.1f}x")
    print(f"{'end to end: sample(n=8) of the 1024-px photo':60s} {t_e2e:9.2f}")
    print(f"identical samples: {same}; goals: ratio >= 25x {'met' if t_naive / t_cached >= 25 else 'NOT met'}, "
          f"8 samples <= 20 s {'met' if t_e2e <= 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
