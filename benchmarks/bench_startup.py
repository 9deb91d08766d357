"""How long `divcolor gui` takes to put a window on screen, against bare imports in the same run.

Every figure is measured from spawning a fresh interpreter (``time.time()`` just before
``Popen``) to the moment named, offscreen, settings in a throwaway folder; each is the median
of ``--runs`` runs after ``--warmup`` unmeasured ones (a warm machine: files in the page cache).

* ``import PySide6.QtWidgets`` and ``import torch`` — baselines: the least any Qt window costs,
  and what the engine costs before it can do anything.
* ``eager (pre-#13 order)`` — torch, the engine and every view imported, the facade made and
  the main window built *before* anything is shown: what ``divcolor gui`` did before issue 13.
* ``divcolor gui: window painted`` — the real command (``python -m divcolor_gui gui``) up to the
  first paint of its startup window (``DIVCOLOR_STARTUP_TRACE=painted``).
* ``divcolor gui: main window painted`` — the same command until the engine is loaded and the
  main window painted in its place (``DIVCOLOR_STARTUP_TRACE=ready``).
* ``longest event-loop stall while loading`` — a 10 ms timer runs while the engine loads on the
  worker thread: the longest gap between two ticks, from the first paint to the main window's
  (the window's responsiveness; the main window's construction runs on the GUI thread and
  counts).

Goal (issue 13): a window on screen in <= 2 s on a warm machine (it took ~8.3 s).

    python benchmarks/bench_startup.py [--runs 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 2.0
MARK = "divcolor-startup:"

REACHED = "import sys, time; print(f'{MARK} reached {{time.time():.4f}}', file=sys.stderr, flush=True)"

EAGER = r"""
import os, sys, time
from divcolor_gui.app import _application, on_first_paint
from divcolor_gui.main_window import MainWindow
from divcolor_gui.settings import Settings
from engine.colorizer import Colorizer

app = _application()
win = MainWindow(Colorizer(), Settings())
win.force_close = True


def painted():
    print(f"MARK painted {time.time():.4f}", file=sys.stderr, flush=True)
    os._exit(0)


on_first_paint(win, painted)
win.show()
app.exec()
""".replace("MARK", MARK)

STALL = r"""
import os, sys, time
from PySide6.QtCore import QTimer
from divcolor_gui.app import Launcher, _application
from divcolor_gui.settings import Settings

app = _application()
launcher = Launcher(Settings())
gaps, last = [], [None]


def tick():
    now = time.perf_counter()
    if last[0] is not None:
        gaps.append(now - last[0])
    last[0] = now


def painted():
    timer.start(10)


def done(win):
    print(f"MARK stall {max(gaps or [0.0]):.4f}", file=sys.stderr, flush=True)
    os._exit(0)


timer = QTimer()
timer.timeout.connect(tick)
launcher.painted.connect(painted)
launcher.window_painted.connect(done)
launcher.failed.connect(lambda text: os._exit(1))
launcher.start()
app.exec()
""".replace("MARK", MARK)


def once(argv: list[str], env: dict[str, str], mark: str) -> float:
    """Seconds from spawning ``argv`` to its ``divcolor-startup: MARK t`` line (a value, for
    ``stall``, which is printed as is)."""
    t0 = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    for line in done.stderr.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == MARK and parts[1] == mark:
            return float(parts[2]) if mark == "stall" else float(parts[2]) - t0
    raise SystemExit(f"{' '.join(argv[:3])}… printed no '{mark}' mark (exit {done.returncode}):\n{done.stderr[-3000:]}")


def median(argv: list[str], env: dict[str, str], mark: str, runs: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        once(argv, env, mark)
    times = [once(argv, env, mark) for _ in range(runs)]
    return statistics.median(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="measured runs per row (the median is shown)")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs first, so files are cached")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="divcolor-bench-startup-"))
    env = {k: v for k, v in os.environ.items() if k != "DIVCOLOR_STARTUP_TRACE"}
    env.update(QT_QPA_PLATFORM=env.get("QT_QPA_PLATFORM", "offscreen"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"), XDG_STATE_HOME=str(home / "state"))
    py = sys.executable
    rows = [
        ("import PySide6.QtWidgets", [py, "-c", "import PySide6.QtWidgets; " + REACHED.format(MARK=MARK)], {}, "reached"),
        ("import torch", [py, "-c", "import torch; " + REACHED.format(MARK=MARK)], {}, "reached"),
        ("eager (pre-#13 order)", [py, "-c", EAGER], {}, "painted"),
        ("divcolor gui: window painted", [py, "-m", "divcolor_gui", "gui"], {"DIVCOLOR_STARTUP_TRACE": "painted"}, "painted"),
        ("divcolor gui: main window painted", [py, "-m", "divcolor_gui", "gui"], {"DIVCOLOR_STARTUP_TRACE": "ready"}, "ready"),
        ("longest event-loop stall while loading", [py, "-c", STALL], {}, "stall"),
    ]
    load = os.getloadavg()[0]
    print(f"{args.runs} runs per row after {args.warmup} warm-up, offscreen, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at start", flush=True)
    res: dict[str, float] = {}
    for name, argv, extra, mark in rows:
        med, times = median(argv, {**env, **extra}, mark, args.runs, args.warmup)
        res[name] = med
        print(f"{name:<40} {med:7.2f} s   runs {', '.join(f'{t:.2f}' for t in times)}", flush=True)

    qt, torch_s = res["import PySide6.QtWidgets"], res["import torch"]
    eager, painted, ready = res["eager (pre-#13 order)"], res["divcolor gui: window painted"], res["divcolor gui: main window painted"]
    print()
    print(f"window painted / import PySide6.QtWidgets   {painted / qt:6.2f}x")
    print(f"window painted / import torch               {painted / torch_s:6.2f}x")
    print(f"eager / window painted (speed-up)           {eager / painted:6.2f}x")
    print(f"main window painted / eager (cost of defer) {ready / eager:6.2f}x")
    print(f"goal: a window in <= {GOAL_S:.0f} s on a warm machine: {'met' if painted <= GOAL_S else 'NOT met'} "
          f"({painted:.2f} s; load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
