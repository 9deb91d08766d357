"""``divcolor colorize …``: headless use of the same facade the app uses.

The ``divcolor`` command itself belongs to the app package, which adds ``gui`` and dispatches
here for ``colorize``: the engine never names the GUI (a test holds it to that). ``python -m
engine.cli colorize …`` works without Qt installed.

What a user can count on:

* every value is checked when the command line is read, and a bad one is answered with a
  sentence naming it and what would work, never a traceback;
* a bad photo is reported and skipped; the exit code says whether all succeeded (0), some
  failed (1), or the command could not start (2); Ctrl-C stops it with one line saying how many
  photos were done (exit code 130), never a traceback;
* results are never written over each other (``photo.jpg`` and ``photo.png`` in one folder get
  ``photo_jpg_…`` and ``photo_png_…``) nor over an input photo, and appear whole or not at all
  (which photos a batch takes and how results are named: :mod:`engine.batch`);
* large scans (100+ megapixels) are colorized at the model's size and upsampled and written a
  strip at a time, so memory stays bounded; running out of memory is one clear sentence;
* models are loaded once for the whole run;
* results keep the photo's EXIF and say how they were made (XMP provenance), unless
  ``--no-metadata``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .batch import expand_inputs, file_key, output_paths, unique_photos
from .errors import DivcolorError

__all__ = ["METHODS", "add_colorize_command", "build_parser", "main", "run"]

METHODS = ("vae-mdn", "gcrf", "pic", "levin")
STROKE_METHODS = ("levin", "gcrf")
FORMATS = {"png": ".png", "jpg": ".jpg", "tiff": ".tif"}
MAX_SAMPLES = 100
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 10.0
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it


# --------------------------------------------------------------------------------------------
# Argument types: refuse bad values with a sentence that names the value and the fix
# --------------------------------------------------------------------------------------------


def _whole(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a whole number from {low} to {high}, not “{text}”") from None
    if not low <= value <= high:
        shown = text if len(text) <= 24 else text[:21] + "..."
        raise argparse.ArgumentTypeError(f"{what} must be a whole number from {low} to {high}, not {shown}")
    return value


def sample_count(text: str) -> int:
    """``-n``: how many colorizations per photo."""
    return _whole(text, "-n (colorizations per photo)", 1, MAX_SAMPLES)


def seed_value(text: str) -> int:
    """``--seed``: any whole number a 64-bit generator can take."""
    return _whole(text, "--seed", 0, MAX_SEED)


def temperature_value(text: str) -> float:
    """``--temperature``: a finite number above 0 (1 is the model's own setting)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TEMPERATURE):
        raise argparse.ArgumentTypeError(
            f"--temperature must be a number above 0 and at most {MAX_TEMPERATURE:g} "
            f"(1 is the model's own setting; lower gives safer colours), not “{text}”"
        )
    return value


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def version_text() -> str:
    from .metadata import divcolor_version

    return f"divcolor {divcolor_version()}"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for: finding it imports ``engine.metadata``
    (Pillow, numpy: 0.2-0.7 s), which every other command, the app's start included, skips."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def build_parser(
    more_commands: Callable[[argparse._SubParsersAction], None] | None = None,
) -> argparse.ArgumentParser:
    """The parser for ``divcolor`` with the engine's commands (``colorize``); the app passes
    ``more_commands`` to add its own (``gui``) without the engine knowing about them."""
    p = argparse.ArgumentParser(
        prog="divcolor", description="Diverse and controllable colorization of black-and-white photos."
    )
    p.add_argument("--version", action=_VersionAction, help="print divcolor's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add_colorize_command(sub)
    if more_commands is not None:
        more_commands(sub)
    return p


def add_colorize_command(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "colorize",
        help="colorize photos without the app, writing OUTDIR/<stem>_<method>_<k>.png",
        description="Colorize photos without the app. Writes OUTDIR/<stem>_<method>_<k>.<format> at each "
        "photo's size; a photo that cannot be read is reported and skipped.",
    )
    c.add_argument("images", nargs="+", metavar="IMAGE", help="photo files, or folders whose photos to colorize")
    c.add_argument("-o", "--out", required=True, metavar="OUTDIR",
                   help="folder for the results (created if missing); input photos in it are never overwritten")
    c.add_argument("--method", default="vae-mdn", choices=METHODS, metavar="{" + ",".join(METHODS) + "}",
                   help="vae-mdn (default), gcrf or pic: diverse colorizations; levin, or gcrf with --strokes: "
                   "propagate colour strokes")
    c.add_argument("-n", type=sample_count, default=8, metavar="N",
                   help=f"colorizations per photo, 1 to {MAX_SAMPLES} (default 8; stroke propagation makes one)")
    c.add_argument("--seed", type=seed_value, default=0, metavar="S",
                   help="which set of colorizations: the same seed gives the same results (default 0)")
    c.add_argument("--temperature", type=temperature_value, default=1.0, metavar="T",
                   help="lower: safer colours, higher: more varied; 1 is the model's own setting (PIC: calibrated "
                   "to real photos)")
    c.add_argument("--model", choices=["faces", "general"], default="general",
                   help="which shipped model family (default general; faces for portraits)")
    c.add_argument("--checkpoint", metavar="PATH", help="a .safetensors model file to use instead of a shipped one")
    c.add_argument("--strokes", metavar="FILE.json", help="colour strokes to propagate (with --method levin or gcrf)")
    c.add_argument("--base", choices=["sample", "grey"], default="sample",
                   help="what --method gcrf --strokes paints over: sample (default) the G-CRF's own most likely "
                   "colorization, as the app does; grey: nothing, the strokes alone colour the photo (hints-only, "
                   "the papers' protocol). levin always starts from grey")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to run the models: auto (a CUDA GPU if there is one), cpu or cuda")
    c.add_argument("--format", choices=sorted(FORMATS), default="png",
                   help="file format of the results (default png; jpg is always 8-bit and drops transparency)")
    c.add_argument("--no-metadata", action="store_true",
                   help="write pixels only: no EXIF from the photo, no colour profile, no provenance (XMP)")
    c.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return c


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


class _Quiet:
    """Warnings and log lines become one ``divcolor: note:`` line each, without library paths."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self) -> "_Quiet":
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        from PIL import Image

        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # engine.decode checks sizes itself
        warnings.showwarning = self._show  # type: ignore[assignment]
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("divcolor: note: %(message)s"))
        self._handler.setLevel(logging.ERROR if self.quiet else logging.WARNING)
        self._logger = logging.getLogger("engine")
        self._logger.addHandler(self._handler)
        self._propagate, self._logger.propagate = self._logger.propagate, False
        return self

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        if not self.quiet:
            print(f"divcolor: note: {message}", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate
        self._warnings.__exit__(*exc)


@contextlib.contextmanager
def _photo_notes(photo: Path, quiet: bool) -> Iterator[None]:
    """Warnings raised while colorizing one photo (Pillow on damaged metadata, …) become one
    ``divcolor: note: PHOTO: message`` line each, once per photo, after it: the photo named,
    no library file or line."""
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every photo reports its own, not only the first
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # engine.decode checks sizes itself
        try:
            yield
        finally:
            if not quiet:
                for message in dict.fromkeys(str(w.message).strip() for w in caught):
                    print(f"divcolor: note: {photo}: {message}", file=sys.stderr)


def _out_of_memory(exc: BaseException) -> bool:
    """engine.colorizer.is_out_of_memory, without importing torch for a command that failed early."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "defaultcpuallocator", "not enough memory")
    )


def _memory_message(f: Path, count: int) -> str:
    return (
        f"not enough memory to colorize {f} ({count} colorizations). Ask for fewer (-n), close other programs, "
        "or scale the photo down; on a GPU, --device cpu may help."
    )


def _for_each_photo(files: list[Path], work: Callable[[Path], str], quiet: bool, count: int = 1) -> int:
    """Run ``work`` on every photo; a failure is reported and skipped, and sets the exit code."""
    if not files:
        print("divcolor: no photos to colorize (the folders given hold no image files)", file=sys.stderr)
        return 1
    failed = finished = 0
    for f in files:
        try:
            with _photo_notes(f, quiet):
                done = work(f)
            finished += 1
            if not quiet:
                print(f"{f}: {done}", flush=True)
        except KeyboardInterrupt:
            # Ctrl-C: the photo being written leaves no file (engine.files), so the count is exact.
            print(f"divcolor: interrupted: {finished} of {len(files)} photos done"
                  + (f" ({failed} failed)" if failed else ""), file=sys.stderr)
            return INTERRUPTED
        except DivcolorError as e:
            failed += 1
            print(f"divcolor: skipped {f}: {e}", file=sys.stderr)
        except OSError as e:
            failed += 1
            where = e.filename or f
            why = e.strerror or str(e)
            print(f"divcolor: could not write the results of {f}: {where}: {why}. Check that the output folder "
                  "is writable and has free space, or choose another -o folder.", file=sys.stderr)
        except (MemoryError, RuntimeError) as e:
            if not _out_of_memory(e):
                raise
            failed += 1
            print(f"divcolor: skipped {f}: {_memory_message(f, count)}", file=sys.stderr)
    if failed:
        print(f"divcolor: {failed} of {len(files)} photos failed", file=sys.stderr)
    return 1 if failed else 0


def _prepare(args: argparse.Namespace, method: str, count: int) -> tuple[list[Path], list[list[Path]], set[str]] | int:
    """Inputs, their collision-free outputs and the set of input identities; or an exit code."""
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        print(f"divcolor: -o {args.out} is a file, not a folder: give the folder the results should go to", file=sys.stderr)
        return 2
    given, skipped = expand_inputs(args.images)
    files, notes = unique_photos(given)
    notes = skipped + notes
    plans, renamed = output_paths(files, out, method, count, FORMATS[args.format])
    from .files import sweep_unfinished  # here, not at the top: the app's start skips it

    swept = sweep_unfinished(out)
    if swept:
        notes.append(f"removed {swept} unfinished result file{'s' if swept > 1 else ''} that a stopped run left in {out}")
    if not args.quiet:
        for note in notes + renamed:
            print(f"divcolor: note: {note}", file=sys.stderr)
    return files, plans, {file_key(f) for f in files}


def _check_not_inputs(paths: list[Path], inputs: set[str], photo: Path) -> None:
    for p in paths:
        if file_key(p) in inputs:
            raise DivcolorError(
                f"its result {p.name} would overwrite the input photo {p}; choose another -o folder"
            )


def colorize(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from .colorizer import Colorizer
    from .io import load_photo, photo_from_L
    from .save import save_colorizations
    from .metadata import export_metadata

    if args.method == "levin" or args.strokes is not None:
        return colorize_strokes(args)
    try:
        colorizer = Colorizer(device=args.device)
        info = colorizer.resolve(args.method, args.model, args.checkpoint)
        model = colorizer.model(info)  # loaded once, here, for every photo
    except DivcolorError as e:
        print(f"divcolor: {e}", file=sys.stderr)
        return 2
    prepared = _prepare(args, info.method, args.n)
    if isinstance(prepared, int):
        return prepared
    files, plans, inputs = prepared
    plan = dict(zip(files, plans))
    size = int(getattr(model, "input_size", 0) or model.cfg.size)

    def work(f: Path) -> str:
        paths = plan[f]
        _check_not_inputs(paths, inputs, f)
        t0 = time.perf_counter()
        photo = load_photo(f)
        # The models see the photo at their own size: sample on that copy, then upsample and
        # write each result at full size a strip at a time (engine.save.save_colorizations).
        with torch.no_grad():
            L = F.interpolate(torch.from_numpy(photo.L)[None, None], size=(size, size), mode="area")[0, 0]
        small = photo_from_L(L.numpy())
        results = colorizer.sample(
            small, method=info.method, n=args.n, seed=args.seed, temperature=args.temperature,
            family=args.model, checkpoint=args.checkpoint,
        )
        ab_low = torch.stack([r.ab_low for r in results])
        metas = None
        if not args.no_metadata:
            metas = [
                export_metadata(photo.exif, method=info.method, model=info.name, model_path=info.path,
                                seed=args.seed, sample=r.index, temperature=args.temperature)
                for r in results
            ]
        save_colorizations(paths, photo, ab_low, metas)
        return f"{len(results)} colorizations in {time.perf_counter() - t0:.2f} s"

    return _for_each_photo(files, work, args.quiet, args.n)


def colorize_strokes(args: argparse.Namespace) -> int:
    """``--method levin|gcrf --strokes FILE``: propagate the file's strokes over each photo.

    The strokes file is read before any photo so a bad one stops the run at once (exit 2) with
    its name in the message, instead of failing once per photo.
    """
    from .colorizer import Colorizer
    from .io import load_photo
    from .save import save_image
    from .metadata import export_metadata
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
    prepared = _prepare(args, method, 1)
    if isinstance(prepared, int):
        return prepared
    files, plans, inputs = prepared
    plan = dict(zip(files, plans))

    def work(f: Path) -> str:
        path = plan[f][0]
        _check_not_inputs([path], inputs, f)
        t0 = time.perf_counter()
        photo = load_photo(f)
        # The G-CRF edits one of its own colorizations (the seed's first) unless --base grey; Levin starts from grey.
        base = (
            colorizer.sample(photo, method=method, n=1, seed=args.seed, temperature=args.temperature, family=args.model)[0]
            if method != "levin" and args.base == "sample" else None
        )
        clipped = clip_strokes(strokes, photo.size)
        result = colorizer.field(photo, method).propagate(clipped, base)
        meta = None
        if not args.no_metadata:
            model_path = None
            if method != "levin":
                model_path = colorizer.resolve(method, args.model).path
            meta = export_metadata(photo.exif, method=result.method, model=result.model, model_path=model_path,
                                   seed=args.seed, sample=0, temperature=args.temperature, strokes=clipped)
        save_image(path, result.rgb, photo.alpha, photo.bit_depth, meta)
        return f"{len(strokes)} strokes propagated ({result.method}) in {time.perf_counter() - t0:.2f} s"

    return _for_each_photo(files, work, args.quiet)


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed engine command (``colorize``), with warnings kept to one line each.

    Running out of memory outside any one photo (loading the models) is one sentence and exit
    code 1 too, never a traceback."""
    with _Quiet(getattr(args, "quiet", False)):
        if args.command == "colorize":
            try:
                return colorize(args)
            except KeyboardInterrupt:  # before the first photo (loading the models): nothing written
                print("divcolor: interrupted: no photos done", file=sys.stderr)
                return INTERRUPTED
            except (MemoryError, RuntimeError) as e:
                if not _out_of_memory(e):
                    raise
                print("divcolor: not enough memory to load the models and start colorizing. Close other "
                      "programs and retry; on a GPU, --device cpu may help.", file=sys.stderr)
                return 1
    print("divcolor: no command given; try `divcolor colorize --help`", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.cli colorize …`` (the ``divcolor`` command adds the app on top)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
