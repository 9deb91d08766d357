"""Regenerate the README screenshots from the real window: gallery, strokes, attention, ambiguity.

    python docs/screenshots/make_screenshots.py [IMAGE] [--out docs/screenshots] [--threads N]

Makes every screenshot the README links, each in a fresh Qt process on an offscreen 1920x1080
screen: the window at 1440x900 (``<state>_<theme>.jpg``) and at 150 % scaling
(``QT_SCALE_FACTOR=1.5``: 1280x720 logical pixels, grabbed at 1920x1080 —
``<state>_<theme>_150.jpg``), in the light and the dark theme. Each is written for reading: JPEG
q85 at most ``SHOT_WIDTH`` px wide (a quarter of a MB, not two). The states are the gallery, the
same photo with strokes (and the before/after split), the attention overlay of a pixel, and the
ambiguity map. ``--one`` makes one theme and scale in this process (what each child runs).

Uses the shipped models (``Colorizer()``) unless ``--checkpoint`` adds one or ``--no-shipped``
drops them; with no model at all the gallery explains that no model was found. Waiting is
event-driven: each state is grabbed when the window reports it ready or idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = ROOT / "resources" / "samples" / "killarney_1910.jpg"
STATES = ("gallery", "strokes", "attention", "ambiguity")
THEMES = ("light", "dark")
SCALES = {1.0: "", 1.5: "_150"}
SCREEN = {"windowFrameMargins": False,
          "screens": [{"name": "hd", "x": 0, "y": 0, "width": 1920, "height": 1080,
                       "logicalDpi": 96, "logicalBaseDpi": 96, "dpr": 1}]}

# Strokes for the default photo (a motor coach on a tree-lined road near Killarney, 1910), as
# fractions of the photo's width and height so any size works: (colour, points, radius factor).
STROKES = (
    ((128, 30, 34), [(0.30, 0.50), (0.38, 0.52), (0.45, 0.55)], 1.3),  # the coach: maroon
    ((62, 110, 48), [(0.05, 0.10), (0.15, 0.18), (0.24, 0.08)], 2.0),  # foliage, left: green
    ((70, 120, 55), [(0.78, 0.12), (0.90, 0.30), (0.95, 0.55)], 2.0),  # trees, right: green
    ((150, 190, 225), [(0.63, 0.06), (0.68, 0.10)], 1.2),  # sky: pale blue
    ((150, 120, 85), [(0.35, 0.90), (0.50, 0.92), (0.62, 0.88)], 1.6),  # the road: dust
    ((40, 60, 120), [(0.60, 0.68)], 0.8),  # a point hint: a coat, navy
)
ATTENTION_AT = (0.12, 0.62)  # a pixel on the stone wall
SHOT_WIDTH, SHOT_QUALITY = 1280, 85


def wait_until(pred: Callable[[], bool], timeout_s: float = 600.0) -> bool:
    """Run the event loop until ``pred()`` holds (checked every 20 ms) or the timeout passes."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    poll = QTimer()
    poll.timeout.connect(lambda: loop.quit() if pred() else None)
    poll.start(20)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    if not pred():
        loop.exec()
    poll.stop()
    return pred()


def settle(ms: int = 300) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def one(args: argparse.Namespace) -> int:
    """One theme at the scale this process was started with: the four states."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from engine.colorizer import Colorizer
    from engine.strokes import Stroke

    from divcolor_gui.main_window import MainWindow
    from divcolor_gui.settings import Settings

    colorizer = Colorizer(device=args.device, model_dirs=[] if args.no_shipped else None)
    for ck in args.checkpoint:
        colorizer.add_model(ck)
    settings = Settings(Path(tempfile.mkdtemp(prefix="divcolor-shots-")) / "settings.ini")
    settings.theme = args.theme
    settings.samples_per_batch = args.samples
    win = MainWindow(colorizer, settings)
    win.force_close = True
    win.fit_screen = False
    win.error_sink = lambda title, text: print(f"{title}: {text}", file=sys.stderr)
    scaled = app.primaryScreen().devicePixelRatio() > 1
    avail = app.primaryScreen().availableGeometry()
    # 1440x900 at 100 %; at 150 % the whole 1920x1080 screen, which is 1280x720 logical pixels
    win.resize(avail.width(), avail.height()) if scaled else win.resize(1440, 900)
    win.move(avail.topLeft())
    win.show()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = SCALES[1.5] if scaled else SCALES[1.0]
    written: list[Path] = []

    def shot(state: str) -> None:
        settle()
        from PySide6.QtCore import Qt

        path = out / f"{state}_{args.theme}{suffix}.jpg"
        pix = win.grab()
        if pix.width() > SHOT_WIDTH:
            pix = pix.scaledToWidth(SHOT_WIDTH, Qt.TransformationMode.SmoothTransformation)
        pix.save(str(path), "JPG", SHOT_QUALITY)
        written.append(path)

    ready = {"done": False}
    win.ready.connect(lambda: ready.__setitem__("done", True))
    win.open_path(args.image)
    field_done = lambda: win.session.field_state.state in ("ready", "failed")  # noqa: E731
    if not wait_until(lambda: ready["done"] and win.is_idle() and field_done()):
        print("timed out waiting for the gallery", file=sys.stderr)
        return 1
    shot("gallery")

    W, H = win.doc.photo.size
    r = max(3.0, min(W, H) / 60)
    for color, pts, k in STROKES:
        win.add_stroke(Stroke(color, k * r, tuple((x * W, y * H) for x, y in pts)))
    win.brush.set_color(STROKES[0][0])
    win.canvas_panel.split.setValue(25)
    if not wait_until(win.is_idle):
        return 1
    hx, hy = int(0.40 * W), int(0.60 * H)
    win.canvas.hovered.emit(float(hx), float(hy))  # the stroke preview swatch and the pixel readout
    shot("strokes")

    win.canvas_panel.split.setValue(0)
    shown = {"done": False}
    win.overlay.shown.connect(lambda x, y: shown.__setitem__("done", True))
    win.act["attention"].trigger()
    if win.overlay.available:
        win.overlay.request(int(ATTENTION_AT[0] * W), int(ATTENTION_AT[1] * H))
        wait_until(lambda: shown["done"])
    else:  # what the user sees on hovering the disabled toggle, shown where a grab can catch it
        win.statusBar().showMessage(win.overlay.reason)
    shot("attention")

    if win.act["attention"].isChecked():
        win.act["attention"].trigger()
    amb = {"done": False}
    win.ambiguity.shown.connect(lambda: amb.__setitem__("done", True))
    win.act["ambiguity"].trigger()
    wait_until(lambda: amb["done"] or not win.act["ambiguity"].isChecked(), 120)
    shot("ambiguity")
    print("\n".join(str(p) for p in written))
    win.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", default=str(DEFAULT_IMAGE))
    ap.add_argument("--checkpoint", action="append", default=[], help="extra model file(s) to load")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--theme", choices=THEMES, default="dark", help="with --one: the theme")
    ap.add_argument("--samples", type=int, default=6, help="samples per method in the gallery")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-shipped", action="store_true", help="ignore resources/models (only --checkpoint)")
    ap.add_argument("--one", action="store_true", help="one theme at this process's scale (set QT_SCALE_FACTOR yourself)")
    ap.add_argument("--scales", default="1,1.5", help="with the default (all): the scale factors to make")
    args = ap.parse_args(argv)
    if args.one:
        return one(args)
    screen = Path(tempfile.mkdtemp(prefix="divcolor-screen-")) / "screen.json"
    screen.write_text(json.dumps(SCREEN))
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--scales") and a != "--one"]
    code = 0
    for scale in (float(s) for s in args.scales.split(",")):
        for theme in THEMES:
            env = dict(os.environ, QT_QPA_PLATFORM=f"offscreen:configfile={screen}", QT_SCALE_FACTOR=f"{scale:g}")
            cmd = [sys.executable, str(Path(__file__).resolve()), *passed, "--one", "--theme", theme]
            print(f"{theme} at {scale:g}x …", file=sys.stderr, flush=True)
            code = subprocess.run(cmd, env=env, cwd=ROOT).returncode or code
    return code


if __name__ == "__main__":
    sys.exit(main())
