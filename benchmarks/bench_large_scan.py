"""Large archive scans through the CLI: N VAE-MDN colorizations of an 8000x6000 (48 MP) scan.

Each run is a separate process under ``/usr/bin/time -v``, so the figures are the operating
system's: wall time, CPU time (user + system) and maximum resident set size (peak memory).
On a machine shared with other work, wall time grows with the load while CPU time barely does,
so both are printed, with the share of a CPU the run got.

* **cli** — ``divcolor colorize`` as shipped: the models work at their own size; the results
  are upsampled, converted and written a strip at a time by the numpy export kernel
  (``StripUpsampler.quantized``), one sample per thread, PNG through the fast deflater.
* **baseline**, measured in the same run: the strip path as it was before that kernel (torch
  ``recombine`` and ``pow`` per strip, quantise, PNG at zlib's default level, one sample after
  another), at a smaller size (``--baseline-size``, default 2000x1500) because it is slow; the
  ratio compares seconds per megapixel-sample.

Goals (issue 15): 48 MP, 8 samples <= 20 s and <= 2 GiB peak on 2 cores; 108 MP (12000x9000)
works within the same peak (``--also 12000x9000``).

    python benchmarks/bench_large_scan.py [--size 8000x6000] [-n 8] [--also 12000x9000]
        [--baseline-size 2000x1500] [--no-baseline] [--checkpoint PATH] [--threads 2]
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

BASELINE = r"""
import sys
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from engine.color import AB_SCALE, StripUpsampler
from engine.colorizer import Colorizer
from engine.files import atomic_write
from engine.image_writers import PngStream
from engine.io import load_photo, photo_from_L
from engine.pixels import quantize
scan, out, n, ck = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None
c = Colorizer(device="cpu")
model = c.model(c.resolve("vae-mdn", "general", ck))
photo = load_photo(scan)
with torch.no_grad():
    L = F.interpolate(torch.from_numpy(photo.L)[None, None], size=(model.input_size,) * 2, mode="area")[0, 0]
ab = torch.stack([r.ab_low for r in c.sample(photo_from_L(L.numpy()), "vae-mdn", n=n, checkpoint=ck)])
H, W = photo.L.shape
rows = max(1, (1 << 21) // W)
for k in range(n):
    up = StripUpsampler(ab[k : k + 1].float() * AB_SCALE, torch.from_numpy(photo.L))
    def write(fh, up=up):
        png = PngStream(fh, W, H, 3, 8, None, level=6)
        for y0 in range(0, H, rows):
            with torch.no_grad():
                rgb = up.rgb(y0, min(H, y0 + rows))[0].permute(1, 2, 0).numpy()
            png.write(quantize(rgb, 8))
        png.close()
    atomic_write(out / f"{photo.stem}_vae-mdn_{k}.png", write)
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


def measure(cmd: list[str], threads: int) -> dict:
    """Wall and CPU seconds, CPU share, peak GiB and exit code of one process, from /usr/bin/time -v."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, cwd=ROOT)

    def field(pattern: str, default: float = float("nan")) -> float:
        m = re.search(pattern, done.stderr)
        return float(m.group(1)) if m else default

    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    seconds = float("nan")
    if wall:
        h, m, s = wall.groups()
        seconds = int(h or 0) * 3600 + int(m) * 60 + float(s)
    return {
        "wall": seconds,
        "cpu": field(r"User time \(seconds\): ([\d.]+)") + field(r"System time \(seconds\): ([\d.]+)"),
        "share": field(r"Percent of CPU this job got: (\d+)%"),
        "peak": field(r"Maximum resident set size \(kbytes\): (\d+)") / 2**20,
        "rc": done.returncode,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="8000x6000", help="scan size WxH (default 8000x6000, 48 MP)")
    ap.add_argument("-n", type=int, default=8, help="colorizations per scan (default 8)")
    ap.add_argument("--also", action="append", default=[], metavar="WxH", help="also run the CLI at this size")
    ap.add_argument("--baseline-size", default="2000x1500", metavar="WxH", help="scan size of the baseline run")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline run")
    ap.add_argument("--checkpoint", default="", help="a VAE-MDN model file (default: the shipped general one)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = ap.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("needs /usr/bin/time (GNU time): apt install time")

    runs = [("cli", s) for s in [args.size, *args.also]]
    if not args.no_baseline:
        runs.insert(1, ("baseline", args.baseline_size))
    rows = []
    what = ""
    with tempfile.TemporaryDirectory(prefix="divcolor-bench-") as tmp:
        for i, (kind, size) in enumerate(runs):
            w, h = (int(v) for v in size.lower().split("x"))
            scan = Path(tmp) / f"scan_{w}x{h}.jpg"
            if not scan.exists():
                what = make_scan(scan, w, h)
            out = Path(tmp) / f"out_{i}"
            out.mkdir()
            if kind == "cli":
                cmd = [sys.executable, "-m", "engine.cli", "colorize", str(scan), "-o", str(out), "-n", str(args.n),
                       "--device", "cpu", "-q"] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
            else:
                cmd = [sys.executable, "-c", BASELINE, str(scan), str(out), str(args.n), args.checkpoint]
            r = measure(cmd, args.threads)
            r.update(kind=kind, size=f"{w}x{h}", mp=w * h / 1e6)
            r["written"] = len(list(out.glob("*.png")))
            rows.append(r)
            print(f"  {kind} {w}x{h}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU ({r['share']:.0f} % of a CPU), "
                  f"{r['peak']:.2f} GiB peak, {r['written']} files, exit {r['rc']}", flush=True)
            for f in out.glob("*"):
                f.unlink()  # keep the disk small between runs

    print(f"\n{args.n} VAE-MDN colorizations per scan, CPU, {args.threads} threads; source: {what}")
    print(f"{'run':<10} {'size':>11} {'MP':>5} {'wall s':>7} {'CPU s':>7} {'CPU %':>6} {'peak GiB':>9} "
          f"{'wall s/MP·n':>12} {'CPU s/MP·n':>11} {'exit':>5}")
    for r in rows:
        per = r["mp"] * args.n
        print(f"{r['kind']:<10} {r['size']:>11} {r['mp']:5.0f} {r['wall']:7.1f} {r['cpu']:7.1f} {r['share']:6.0f} "
              f"{r['peak']:9.2f} {r['wall'] / per:12.4f} {r['cpu'] / per:11.4f} {r['rc']:5d}")
    base = next((r for r in rows if r["kind"] == "baseline"), None)
    cli = rows[0]
    if base is not None:
        bp, cp = base["mp"] * args.n, cli["mp"] * args.n
        print(f"ratio baseline/cli per megapixel-sample: wall {base['wall'] / bp / (cli['wall'] / cp):.1f}x, "
              f"CPU {base['cpu'] / bp / (cli['cpu'] / cp):.1f}x (the baseline's fixed start-up cost is spread "
              "over fewer pixels, which flatters the CLI a little)")
    print(f"CLI wall time if it had {args.threads} free cores: about {cli['cpu'] / args.threads:.1f} s or more "
          "(CPU seconds / threads)")
    print("goals: 48 MP x 8 samples <= 20 s and <= 2 GiB peak on 2 cores; 108 MP within the same peak")


if __name__ == "__main__":
    main()
