"""Regenerate the README screenshots from the real window: gallery, strokes, attention overlay.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/make_screenshots.py \
        [IMAGE] [--checkpoint MODEL.safetensors] [--out docs/screenshots] [--theme dark|light]

Uses the shipped models (``Colorizer()``) unless ``--checkpoint`` adds one; with no model at
all it still writes the three states (the gallery then explains that no model was found).
Waiting is event-driven: each state is grabbed when the window reports it ready or idle.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "bw_demo" / "einstein_portrait.jpg"


def wait_until(pred: Callable[[], bool], timeout_s: float = 300.0) -> bool:
    """Run the event loop until ``pred()`` holds (checked every 20 ms) or the timeout passes."""
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
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", default=str(DEFAULT_IMAGE))
    ap.add_argument("--checkpoint", action="append", default=[], help="extra model file(s) to load")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--theme", choices=["dark", "light"], default="dark")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-shipped", action="store_true", help="ignore resources/models (only --checkpoint)")
    args = ap.parse_args(argv)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from engine.colorizer import Colorizer
    from engine.strokes import Stroke

    from divcolor_gui.main_window import MainWindow
    from divcolor_gui.settings import Settings

    colorizer = Colorizer(device=args.device, model_dirs=[] if args.no_shipped else None)
    for ck in args.checkpoint:
        colorizer.add_model(ck)
    settings = Settings(Path(tempfile.mkdtemp(prefix="divcolor-shots-")) / "settings.ini")
    settings.theme = args.theme
    win = MainWindow(colorizer, settings)
    win.force_close = True
    win.error_sink = lambda title, text: print(f"{title}: {text}", file=sys.stderr)
    win.resize(1440, 900)
    win.show()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ready = {"done": False}
    win.ready.connect(lambda: ready.__setitem__("done", True))
    win.open_path(args.image)
    if not wait_until(lambda: ready["done"] and win.is_idle()):
        print("timed out waiting for the gallery", file=sys.stderr)
        return 1
    settle()
    win.grab().save(str(out / "gallery.png"))

    # strokes: relative to the photo so any image works; tuned for the Einstein portrait
    W, H = win.doc.photo.size
    rel = lambda pts: tuple((x * W, y * H) for x, y in pts)  # noqa: E731
    r = max(3.0, min(W, H) / 60)
    for color, pts, radius in (
        ((46, 64, 110), [(0.62, 0.93), (0.72, 0.9), (0.85, 0.95)], 1.6 * r),  # jacket: navy
        ((205, 150, 120), [(0.44, 0.45), (0.5, 0.5), (0.56, 0.45)], r),  # face: skin
        ((120, 60, 40), [(0.06, 0.2), (0.08, 0.6)], 1.4 * r),  # background left: brown
        ((40, 90, 70), [(0.9, 0.15), (0.93, 0.5)], 1.4 * r),  # background right: green
        ((180, 60, 60), [(0.5, 0.82)], 0.8 * r),  # point hint: lips/chin
    ):
        win.add_stroke(Stroke(color, radius, rel(pts)))
    win.brush.set_color((46, 64, 110))
    win.canvas_panel.split.setValue(30)
    if not wait_until(win.is_idle):
        return 1
    settle()
    win.grab().save(str(out / "strokes.png"))

    # attention overlay of a pixel on the face (or its disabled state, with the reason shown)
    win.canvas_panel.split.setValue(0)
    shown = {"done": False}
    win.overlay.shown.connect(lambda x, y: shown.__setitem__("done", True))
    win.act["attention"].trigger()
    if win.overlay.available:
        win.overlay.request(int(0.5 * W), int(0.45 * H))
        wait_until(lambda: shown["done"])
    else:  # what the user sees on hovering the disabled toggle, shown where a grab can catch it
        win.statusBar().showMessage(win.overlay.reason)
    settle()
    win.grab().save(str(out / "attention.png"))
    print("\n".join(str(out / n) for n in ("gallery.png", "strokes.png", "attention.png")))
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
