"""The grey encoder's throughput on the CPU (EfficientNet-Lite, frozen, batch of 64 grey images),
as the feature cache and inference run it: batch norms folded and channels-last (``fused``),
against the plain network loaded from the wheel (NCHW, separate batch norms) in the same run.
Also checks that both give the same maps.

    python benchmarks/bench_encoder.py [--variant lite0] [--sizes 128,160,224] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models import encoder as E  # noqa: E402


def rate(net: E.EfficientNetLite, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        net.features(x[:4])
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            net.features(x)
            times.append(time.perf_counter() - t)
    return len(x) / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite0")
    ap.add_argument("--sizes", default="128,160,224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    plain = E.build(a.variant)
    fast = E.fused(E.build(a.variant))
    print(f"{a.variant}, batch {a.batch}, {a.threads} threads")
    print(f"{'size':>5} {'plain img/s':>12} {'fused img/s':>12} {'ratio':>6} {'max |diff|':>11}")
    for size in (int(s) for s in a.sizes.split(",")):
        x = E.EfficientNetLite.normalise(torch.rand(a.batch, 1, size, size))
        with torch.inference_mode():
            diff = max(float((p - f).abs().max()) for p, f in zip(plain.features(x[:8]), fast.features(x[:8])))
        r0, r1 = rate(plain, x, a.repeats), rate(fast, x, a.repeats)
        print(f"{size:>5} {r0:>12.1f} {r1:>12.1f} {r1 / r0:>5.2f}x {diff:>11.2e}")


if __name__ == "__main__":
    main()
