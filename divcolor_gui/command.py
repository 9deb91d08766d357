"""The ``divcolor`` command: the app by default, the engine's commands (``colorize``) headless.

The command belongs to the app package so that the engine never names the GUI: this module
builds the engine's parser (:func:`engine.cli.build_parser`), adds ``gui``, and dispatches.
Qt is imported only when the app is actually opened, so ``divcolor colorize`` and
``divcolor --version`` work (and start fast) on machines without a display.
"""

from __future__ import annotations

import argparse
import sys

from engine import cli as engine_cli


def _add_gui(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gui", help="open the app (what `divcolor` alone does)", description="Open the divcolor app.")
    g.add_argument("image", nargs="?", help="a photo to open")
    g.add_argument("--screenshot", metavar="OUT.png",
                   help="open IMAGE, wait for the first results, save a screenshot of the window and exit")


def build_parser() -> argparse.ArgumentParser:
    """``divcolor``'s parser: the engine's commands plus ``gui``."""
    p = engine_cli.build_parser(_add_gui)
    p.epilog = "Without a command, divcolor opens the app. `divcolor COMMAND --help` tells more."
    return p


def gui(image: str | None, screenshot: str | None = None) -> int:
    try:
        from .app import run
    except ImportError as e:  # Qt or one of its system libraries is missing
        print(
            f"divcolor: the app cannot start ({e}). Install the desktop libraries (see README), or use "
            "`divcolor colorize IMAGE -o OUTDIR` without it.",
            file=sys.stderr,
        )
        return 1
    return run(image, screenshot=screenshot)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``divcolor`` command (pyproject's gui-scripts)."""
    args = build_parser().parse_args(argv)
    if args.command in (None, "gui"):
        return gui(getattr(args, "image", None), getattr(args, "screenshot", None))
    return engine_cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
