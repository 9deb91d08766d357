"""``divcolor``: the app by default, ``divcolor colorize …`` for headless use of the same facade."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import DivcolorError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}


def _expand(inputs: list[str]) -> list[Path]:
    """Files as given; folders become their image files (sorted, not recursive)."""
    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="divcolor", description="Diverse and controllable colorization of black-and-white photos.")
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("colorize", help="colorize photos headless, writing OUTDIR/<stem>_<method>_<k>.png")
    c.add_argument("images", nargs="+", metavar="IMAGE", help="photo files or folders of photos")
    c.add_argument("-o", "--out", required=True, metavar="OUTDIR")
    c.add_argument("--method", default="vae-mdn", help="vae-mdn (default), pic or gcrf: diverse colorizations; levin or gcrf with --strokes: propagate strokes")
    c.add_argument("-n", type=int, default=8, help="number of colorizations per photo (default 8; levin and gcrf make one)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--temperature", type=float, default=1.0,
                   help="lower: safer colours, higher: more varied; 1.0 is the model's own setting (PIC: calibrated to real photos)")
    c.add_argument("--model", choices=["faces", "general"], default="general", help="which shipped model (default general)")
    c.add_argument("--checkpoint", metavar="PATH", help="a .safetensors model file instead of a shipped one")
    c.add_argument("--strokes", metavar="FILE.json", help="colour strokes to propagate (with --method levin or gcrf)")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    c.add_argument("-q", "--quiet", action="store_true")
    g = sub.add_parser("gui", help="open the app (default when no command is given)")
    g.add_argument("image", nargs="?", help="photo to open")
    g.add_argument("--screenshot", metavar="OUT.png", help="open IMAGE, wait for the first results, save a screenshot of the window and exit")
    return p


def colorize(args: argparse.Namespace) -> int:
    from .colorizer import Colorizer
    from .io import load_photo, save_image

    if args.method == "levin" or args.strokes is not None:
        return colorize_strokes(args)
    try:
        colorizer = Colorizer(device=args.device)
        info = colorizer.resolve(args.method, args.model, args.checkpoint)
    except DivcolorError as e:
        print(f"divcolor: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    files = _expand(args.images)

    def work(f: Path) -> str:
        photo = load_photo(f)
        results = colorizer.sample(photo, info.method, args.n, args.seed, args.temperature, args.model, args.checkpoint)
        for r in results:
            save_image(out / f"{photo.stem}_{info.method}_{r.index}.png", r.rgb, photo.alpha, photo.bit_depth)
        return f"{len(results)} colorizations in {colorizer.last_seconds:.2f} s"

    return _for_each_photo(files, work, args.quiet)


def _for_each_photo(files: list[Path], work: Callable[[Path], str], quiet: bool) -> int:
    """Run ``work`` on every photo; a failure is reported and skipped, and sets the exit code."""
    if not files:
        print("divcolor: no images given (folders contained no photos)", file=sys.stderr)
        return 1
    failed = 0
    for f in files:
        try:
            done = work(f)
            if not quiet:
                print(f"{f}: {done}")
        except DivcolorError as e:
            failed += 1
            print(f"divcolor: skipped {f}: {e}", file=sys.stderr)
        except OSError as e:
            failed += 1
            print(f"divcolor: could not write results for {f}: {e}", file=sys.stderr)
    if failed:
        print(f"divcolor: {failed} of {len(files)} photos failed", file=sys.stderr)
    return 1 if failed else 0


STROKE_METHODS = ("levin", "gcrf")


def colorize_strokes(args: argparse.Namespace) -> int:
    """``--method levin|gcrf --strokes FILE``: propagate the file's strokes over each photo.

    The strokes file is read before any photo so a bad one stops the run at once (exit 2) with
    its name in the message, instead of failing once per photo.
    """
    from .colorizer import Colorizer
    from .io import load_photo, save_image
    from .strokes import clip_strokes, load_strokes

    if args.method not in STROKE_METHODS:
        print(f"divcolor: --strokes works with --method {' or '.join(STROKE_METHODS)}, not {args.method}", file=sys.stderr)
        return 2
    if args.strokes is None:
        print(f"divcolor: --method {args.method} needs --strokes FILE.json (the colours to propagate)", file=sys.stderr)
        return 2
    try:
        strokes = load_strokes(args.strokes)
        colorizer = Colorizer(device=args.device)
        colorizer.stroke_family = args.model
        method = colorizer.field_method(args.method)
    except DivcolorError as e:
        print(f"divcolor: {e}", file=sys.stderr)
        return 2
    if method != args.method and not args.quiet:
        print(f"divcolor: note: no {args.method} model is available; using {method} propagation instead", file=sys.stderr)
    out = Path(args.out)
    files = _expand(args.images)

    def work(f: Path) -> str:
        t0 = time.perf_counter()
        photo = load_photo(f)
        # The G-CRF edits one of its own colorizations (the seed's first); Levin starts from grey.
        base = colorizer.sample(photo, method, 1, args.seed, args.temperature, args.model)[0] if method != "levin" else None
        result = colorizer.field(photo, method).propagate(clip_strokes(strokes, photo.size), base)
        save_image(out / f"{photo.stem}_{result.method}_0.png", result.rgb, photo.alpha, photo.bit_depth)
        return f"{len(strokes)} strokes propagated ({result.method}) in {time.perf_counter() - t0:.2f} s"

    return _for_each_photo(files, work, args.quiet)


def gui(image: str | None, screenshot: str | None = None) -> int:
    try:
        from divcolor_gui.app import run  # type: ignore[import-not-found]
    except ImportError:
        print(
            "divcolor: the desktop app is not built yet. Use `divcolor colorize IMAGE -o OUTDIR` meanwhile.",
            file=sys.stderr,
        )
        return 1
    return run(image, screenshot=screenshot)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "colorize":
        return colorize(args)
    return gui(getattr(args, "image", None), getattr(args, "screenshot", None))


if __name__ == "__main__":
    sys.exit(main())
