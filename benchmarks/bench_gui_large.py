"""The app on a big photo: open, first samples, a stroke and a full-size export of a 48 MP scan.

Each size runs the real main window (offscreen) with the shipped models in its own process
under ``/usr/bin/time -v``, so peak memory is the operating system's figure. The baseline,
measured in the same run, is the same session on a 1-megapixel photo: the app works on a preview
of at most ``divcolor_gui.imaging.PREVIEW_PIXELS``, so a big photo should cost about what a
small one does, plus reading it and writing the full-size export.

Goal (issue 15): an 8000x6000 photo opens in seconds and the app stays <= 3 GiB (it took 37 s
and 12.7 GiB before previews; 16 samples ran out of memory at 17 GiB).

    python benchmarks/bench_gui_large.py [--size 8000x6000] [-n 6] [--also 12000x9000]
        [--no-baseline] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_large_scan import make_scan, measure  # noqa: E402  (same scan maker and /usr/bin/time reader)

SESSION = r"""
import json, os, sys, time
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from pathlib import Path
from PySide6.QtCore import QEventLoop
from engine.colorizer import Colorizer
from engine.strokes import Stroke
from divcolor_gui.app import _application
from divcolor_gui.imaging import full_size
from divcolor_gui.main_window import MainWindow
from divcolor_gui.settings import Settings

scan, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
app = _application()
win = MainWindow(Colorizer(device="cpu"), Settings(out.parent / "settings.ini"))
win.force_close = True
win.gallery.count.setValue(n)
win.show()
exported = []
win.exported.connect(exported.append)


def wait(pred, what, limit=1800):
    t = time.perf_counter()
    while not pred():
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.002)
        if time.perf_counter() - t > limit:
            raise SystemExit(f"timed out waiting for {what}")


wait(lambda: win.session.models_listed, "the model listing")
marks = {}
t0 = time.perf_counter()
win.open_path(scan)
wait(lambda: win.doc.photo is not None, "the photo")
marks["open_s"] = time.perf_counter() - t0
wait(lambda: len(win.session.all_samples()) >= 1, "the first sample")
marks["first_sample_s"] = time.perf_counter() - t0
wait(lambda: win.is_idle() and win.session.field_state.state in ("ready", "failed"), "all samples and the stroke field")
marks["samples_s"] = time.perf_counter() - t0
marks["samples"] = len(win.session.all_samples())
w, h = win.doc.photo.size
t = time.perf_counter()
win.add_stroke(Stroke((200, 60, 40), max(2.0, w / 100), ((w * 0.3, h * 0.4), (w * 0.5, h * 0.45))))
wait(lambda: win.is_idle(), "the stroke")
marks["stroke_s"] = time.perf_counter() - t
t = time.perf_counter()
win.export_to(out)
wait(lambda: exported or not win.session.export_jobs.busy, "the export")
marks["export_s"] = time.perf_counter() - t
marks["exported"] = bool(exported)
marks["preview"] = f"{w}x{h}"
marks["full"] = "%dx%d" % full_size(win.doc.photo)
print("MARKS " + json.dumps(marks), flush=True)
win.close()
"""


def run(scan: Path, out: Path, n: int, threads: int) -> dict:
    import os
    import re
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", SESSION, str(scan), str(out), str(n)],
                          capture_output=True, text=True, env=env)
    m = re.search(r"^MARKS (.*)$", done.stdout, re.M)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0 or not m:
        print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
    marks = json.loads(m.group(1)) if m else {}
    marks["peak_gib"] = int(rss.group(1)) / 2**20 if rss else float("nan")
    marks["rc"] = done.returncode
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="8000x6000", help="photo size WxH (default 8000x6000, 48 MP)")
    ap.add_argument("--also", action="append", default=[], help="another size to run (e.g. 12000x9000)")
    ap.add_argument("-n", type=int, default=6, help="samples per method (the gallery's count)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-baseline", action="store_true", help="skip the 1 MP baseline")
    args = ap.parse_args()
    sizes = ([] if args.no_baseline else ["1155x866"]) + [args.size] + args.also
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size in sizes:
            w, h = (int(v) for v in size.split("x"))
            scan = Path(d) / f"scan_{w}x{h}.jpg"
            make_scan(scan, w, h)
            r = run(scan, Path(d) / f"out_{w}x{h}.png", args.n, args.threads)
            scan.unlink()
            rows.append((size, r))
            print(f"{size:>11}  {json.dumps(r)}", flush=True)
    base = rows[0][1] if not args.no_baseline else None
    print(f"\n{'photo':>11} {'open s':>7} {'samples s':>9} {'stroke s':>8} {'export s':>8} {'peak GiB':>8}  ratio (open, peak) vs 1 MP")
    for size, r in rows:
        ratio = ""
        if base and base.get("open_s"):
            ratio = f"{r.get('open_s', float('nan')) / base['open_s']:.1f}x, {r['peak_gib'] / base['peak_gib']:.2f}x"
        print(f"{size:>11} {r.get('open_s', float('nan')):7.2f} {r.get('samples_s', float('nan')):9.1f} "
              f"{r.get('stroke_s', float('nan')):8.2f} {r.get('export_s', float('nan')):8.2f} {r['peak_gib']:8.2f}  {ratio}")
    print(f"\n{args.n} samples per method with the shipped models, CPU, {args.threads} threads; preview = what the app works on.")


if __name__ == "__main__":
    main()
