"""Large archive scans through the CLI: 8 VAE-MDN colorizations of an 8000x6000 (48 MP) scan.

Each run is a separate process under ``/usr/bin/time -v``, so the figures are the operating
system's: wall time and maximum resident set size (peak memory).

* **strips** — ``divcolor colorize`` as shipped: the models work at their own size, each result
  is upsampled and written a strip of rows at a time (engine.io.save_colorizations).
* **whole** — the baseline, measured in the same run: the whole-image path the CLI used before
  (``Colorizer.sample`` at full size, every result held as a float image, then ``save_image``).

Goals (issue 15): 48 MP, 8 samples <= 20 s and <= 2 GiB peak on 2 cores; 108 MP (12000x9000)
works within the same peak (``--also 12000x9000``).

    python benchmarks/bench_large_scan.py [--size 8000x6000] [-n 8] [--also 12000x9000]
        [--checkpoint PATH] [--no-baseline] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "bw_demo" / "Harlem1932.jpg"

Image.MAX_IMAGE_PIXELS = None  # we make the big test scan ourselves

WHOLE = r"""
import sys, time
from pathlib import Path
from engine.colorizer import Colorizer
from engine.io import load_photo, save_image
scan, out, n, ck = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None
c = Colorizer(device="cpu")
photo = load_photo(scan)
for r in c.sample(photo, "vae-mdn", n=n, checkpoint=ck):
    save_image(out / f"{photo.stem}_vae-mdn_{r.index}.png", r.rgb, photo.alpha, photo.bit_depth)
"""


def make_scan(path: Path, width: int, height: int) -> str:
    """A grey JPEG scan of the given size: a real historical photo enlarged, plus film grain."""
    if SAMPLE.exists():
        with Image.open(SAMPLE) as im:
            src, what = im.convert("L"), SAMPLE.name
    else:
        yy, xx = np.mgrid[0:600, 0:800]
        src, what = Image.fromarray(((xx + yy) % 256).astype(np.uint8)), "a synthetic gradient"
    big = np.asarray(src.resize((width, height), Image.BILINEAR), dtype=np.int16)
    grain = np.random.default_rng(0).integers(-6, 7, size=(height, width), dtype=np.int16)
    Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8)).save(path, quality=92)
    return what


def measure(cmd: list[str], threads: int) -> tuple[float, float, int]:
    """(wall seconds, peak GiB, exit code) of one process, from /usr/bin/time -v."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    seconds = float("nan")
    if wall:
        h, m, s = wall.groups()
        seconds = int(h or 0) * 3600 + int(m) * 60 + float(s)
    return seconds, (int(rss.group(1)) / 2**20 if rss else float("nan")), done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="8000x6000", help="scan size WxH (default 8000x6000, 48 MP)")
    ap.add_argument("-n", type=int, default=8, help="colorizations per scan (default 8)")
    ap.add_argument("--also", action="append", default=[], metavar="WxH", help="also run the strip path at this size")
    ap.add_argument("--checkpoint", default="", help="a VAE-MDN model file (default: the shipped general one)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the whole-image baseline (slow, several GiB)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")
    args = ap.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("needs /usr/bin/time (GNU time): apt install time")

    rows = []
    with tempfile.TemporaryDirectory(prefix="divcolor-bench-") as tmp:
        sizes = [args.size, *args.also]
        for i, size in enumerate(sizes):
            w, h = (int(v) for v in size.lower().split("x"))
            scan = Path(tmp) / f"scan_{w}x{h}.jpg"
            what = make_scan(scan, w, h)
            mp = w * h / 1e6
            out = Path(tmp) / f"strips_{i}"
            cmd = [sys.executable, "-m", "engine.cli", "colorize", str(scan), "-o", str(out), "-n", str(args.n),
                   "--device", "cpu", "-q"] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
            t, peak, rc = measure(cmd, args.threads)
            rows.append((f"strips {w}x{h} ({mp:.0f} MP)", t, peak, rc))
            print(f"  {rows[-1][0]}: {t:.1f} s, {peak:.2f} GiB peak, exit {rc}", flush=True)
            if i == 0 and not args.no_baseline:
                out = Path(tmp) / "whole"
                out.mkdir()
                cmd = [sys.executable, "-c", WHOLE, str(scan), str(out), str(args.n), args.checkpoint]
                tb, peakb, rcb = measure(cmd, args.threads)
                rows.append((f"whole {w}x{h} ({mp:.0f} MP), baseline", tb, peakb, rcb))
                print(f"  {rows[-1][0]}: {tb:.1f} s, {peakb:.2f} GiB peak, exit {rcb}", flush=True)
            for f in Path(tmp).glob("*/*.png"):
                f.unlink()  # keep the disk small between runs

    print(f"\n{args.n} VAE-MDN colorizations per scan, CPU, {args.threads} threads; source: {what}")
    print(f"{'run':<40} {'wall s':>8} {'peak GiB':>9} {'exit':>5}")
    for name, t, peak, rc in rows:
        print(f"{name:<40} {t:8.1f} {peak:9.2f} {rc:5d}")
    if not args.no_baseline and len(rows) >= 2:
        (_, t, p, _), (_, tb, pb, _) = rows[0], rows[1]
        print(f"ratio whole/strips: time {tb / t:.2f}x, peak memory {pb / p:.2f}x")
    print("goals: 48 MP x 8 samples <= 20 s and <= 2 GiB peak; 108 MP within the same peak")


if __name__ == "__main__":
    main()
