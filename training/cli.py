"""``divcolor-train STAGE --data PATH --out RUN_DIR [--preset cpu|paper] …``.

Stages: backbone (shared grey network); vae, mdn, mdn-tune (VAE-MDN); gcrf-unary, gcrf-hoc, gcrf-mdn (G-CRF); pic (PIC); eval; export. Rerunning a
stage's command resumes it; `report RUN_DIR` plots its curves. Every stage works under ``torchrun --nproc-per-node N``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.checkpoint import load_checkpoint
from engine.errors import CheckpointError, ConfigError, DivcolorError
from engine.files import atomic_write
from engine.models.gcrf import METHOD as GCRF_METHOD

from .config import add_config_args, check_data_path, config_from_args
from .loop import Stopped, recover_run, teardown_distributed
from .stage_registry import TRAIN_STAGES
from .stages import backbone, gcrf, gcrf_eval, gcrf_export, pic, vae_mdn


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="divcolor-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    for name, (cls, _, help_) in TRAIN_STAGES.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add_config_args(sp, cls)
    ev = sub.add_parser("eval", help="print the papers' metrics on a test split as JSON")
    ev.add_argument("--data", required=True, help="shard prefix, .npz or image folder")
    ev.add_argument("--out", help="run directory (uses RUN_DIR/model.safetensors, writes RUN_DIR/eval.json)")
    ev.add_argument("--checkpoint", help="model file to evaluate (instead of --out)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--samples", type=_count(1), default=5)
    ev.add_argument("--limit", type=_count(0), default=0, help="evaluate N evenly spaced images (0: all)")
    ev.add_argument("--json", help="also write the result to this file")
    ev.add_argument("--sheet", help="also save a contact sheet (grey | truth | samples) of evenly spaced images, JPEG at a "
                    "reader's size (PNG if the name ends in .png)")
    ev.add_argument("--demo", help="also colorize the historical photos in this folder, e.g. ../shared/data/bw_demo "
                    "(mean chroma; a second sheet beside --sheet)")
    ev.add_argument("--size", type=_count(0), default=0,
                    help="compare at this resolution (default 0: the photos' own; the model sees its working size)")
    ev.add_argument("--threads", type=_count(0), default=0, help="torch CPU threads (0: torch's default)")
    ev.add_argument("--reveal-data", help="G-CRF: also PSNR vs revealed points (Table 3) on this data (natural128)")
    ev.add_argument("--points", type=_point_counts, help="G-CRF: revealed-point counts for --reveal-data "
                    "(default 1,2,5,10,20,50,100)")
    ev.add_argument("--sample-limit", type=_count(1), default=200,
                    help="PIC: diversity metrics on N evenly spaced images (bpd uses all, or --limit)")
    rs = sub.add_parser("results", help="write docs/RESULTS.md: every shipped model's figures beside the papers'",
                        description="Collect the eval JSONs of every model file in --models (rerunning evals with "
                        "--rerun) and the speed benchmarks, and write the results report.")
    from .results import add_arguments

    add_arguments(rs)
    ex = sub.add_parser("export", help="write the checkpoint the app loads")
    ex.add_argument("--out", required=True, help="run directory with finished stages")
    ex.add_argument("--dest", help="where to write (default RUN_DIR/model.safetensors)")
    ex.add_argument("--half", action="store_true", help="store weights as float16 (halves the file)")
    ex.add_argument("--data", help="G-CRF / PIC: training data to tune the stroke weight / sampling temperature on "
                    "(default: the training stage's); VAE-MDN ignores it")
    ex.add_argument("--tune-images", type=int, default=None,
                    help="G-CRF: training images the stroke weight is tuned on (default 16; 0: keep the model's; a "
                         "run's tuning is cached in RUN_DIR/gcrf-hoc/tune.json); PIC: training images the sampling "
                         "temperature is calibrated on (default 64; 0: T = 1)")
    ex.add_argument("--beta-tune-images", type=int, default=64,
                    help="G-CRF: training images β of the automatic solve is tuned on, by error-of-best (0: keep "
                         "the paper's beta_test; cached in RUN_DIR/gcrf-hoc/beta.json)")
    ex.add_argument("--hint-tune-images", type=int, default=64,
                    help="G-CRF with a hint branch: training images the pull toward the branch is tuned on (0: keep "
                         "the stage's; cached in RUN_DIR/gcrf-hints/tune.json)")
    ex.add_argument("--hint-data", help="G-CRF with a hint branch: data whose train split tunes the pull toward the "
                    "branch (Table 3's protocol at 128 px, e.g. natural128; default --data)")
    ex.add_argument("--method", choices=["auto", "backbone", "vae-mdn", "gcrf", "pic"], default="auto",
                    help="auto: the run's head (pic if a pic stage, gcrf if gcrf-hoc, vae-mdn if vae or mdn), a backbone only in a run with no head")
    ex.add_argument("--unfinished", action="store_true",
                    help="PIC / backbone / G-CRF hint branch: export the weights of a stage that is not finished yet")
    ca = sub.add_parser("calibrate", help="PIC: measure a model file's sampling temperature and spread curve again on "
                        "a training split, in place (what export does; for files exported before the curve existed)")
    ca.add_argument("--checkpoint", required=True, help="the PIC .safetensors file (rewritten with the new calibration)")
    ca.add_argument("--data", required=True, help="data whose train split it is measured on (the model's own)")
    ca.add_argument("--images", type=_count(1), default=64, help="training images (2 samples each)")
    rp = sub.add_parser("report", help="plot a run's training curves (every stage's log.jsonl) to a PNG")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="the --out of a training run (or one stage's directory)")
    rp.add_argument("--dest", help="where to write the PNG (default RUN_DIR/report.png)")
    return p


def _count(low: int):
    """An argparse type for a whole number of at least ``low`` (argparse words the error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= v <= 10**9:
            raise argparse.ArgumentTypeError(f"{v} must be between {low} and {10**9}")
        return v

    parse.__name__ = "count"
    return parse


def _point_counts(text: str) -> tuple[int, ...]:
    """``--points 1,2,5,10``: whole numbers from 0 to 10000, comma-separated."""
    try:
        counts = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not counts or not all(0 <= v <= 10_000 for v in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: give counts from 0 to 10000, e.g. 1,2,5,10,20,50,100")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A bad setting, missing or corrupt data, or an unusable model file
    is answered by one sentence on stderr and exit code 2; a traceback means a bug."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except Stopped as e:  # asked to stop, and saved: the shell's convention for a signal's exit
        print(f"divcolor-train {args.stage}: {e}", file=sys.stderr)
        return 128 + e.signum
    except DivcolorError as e:
        print(f"divcolor-train {args.stage}: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.stage in TRAIN_STAGES:
        cls, fn, _ = TRAIN_STAGES[args.stage]
        cfg = config_from_args(cls, args)
        try:
            recover_run(Path(cfg.out), repair=int(os.environ.get("RANK", "0")) == 0)
            fn(cfg)
        except BaseException:
            teardown_distributed(finished=False)
            raise
        teardown_distributed(finished=True)
        return 0
    if args.stage == "report":
        from .report import report

        print(report(args.run_dir, args.dest))
        return 0
    if args.stage == "export":
        run = Path(args.out)
        if not run.is_dir():
            raise ConfigError(f"--out {args.out} is not a run directory; give the --out of a finished training run.")
        metrics = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else None
        method = args.method if args.method != "auto" else _run_method(run)
        dest = Path(args.dest) if args.dest else None
        n = args.tune_images  # None: each method's own default
        tune = {} if n is None else {"tune_images": n}
        if method == "backbone":
            backbone.export(run, dest, metrics, args.half, need_finished=not args.unfinished)
        elif method == "pic":
            pic.export(run, dest, metrics, args.half, need_finished=not args.unfinished, data=args.data,
                       **({} if n is None else {"calibrate_images": n}))
        elif method == "gcrf" and (run / gcrf.HINTS_STAGE).is_dir():
            gcrf_export.export_hints(run, dest, args.half, need_finished=not args.unfinished, data=args.data,
                              hint_data=args.hint_data, hint_tune_images=args.hint_tune_images,
                              beta_tune_images=args.beta_tune_images, **tune)
        elif method == "gcrf":
            gcrf_export.export(run, dest, metrics, args.half, data=args.data, beta_tune_images=args.beta_tune_images,
                        **tune)
        else:
            vae_mdn.export(run, dest, metrics, args.half)
        return 0
    if args.stage == "calibrate":
        check_data_path(args.data)
        pic.recalibrate(Path(args.checkpoint), args.data, args.images)
        return 0
    if args.stage == "results":
        from .results import run_results

        return run_results(args)
    if args.stage == "eval":
        from .stages.evaluate import evaluate

        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if not (args.checkpoint or args.out):
            print("divcolor-train eval: give --checkpoint or --out", file=sys.stderr)
            return 2
        check_data_path(args.data)
        ckpt = Path(args.checkpoint) if args.checkpoint else Path(args.out) / (
            backbone.MODEL_FILE if _run_method(Path(args.out)) == "backbone" else vae_mdn.MODEL_FILE)
        method = _checkpoint_method(ckpt)
        options = {"demo": args.demo, "size": args.size}
        if method == backbone.METHOD:
            result = backbone.evaluate_backbone(ckpt, args.data, args.split, args.limit, sheet=args.sheet, demo=args.demo)
        elif method == pic.METHOD:
            result = pic.evaluate_pic(ckpt, args.data, args.split, args.samples, args.limit, args.sample_limit, sheet=args.sheet,
                                      **options)
        elif method == GCRF_METHOD:
            result = gcrf_eval.evaluate_gcrf(ckpt, args.data, args.split, args.samples, args.limit, sheet=args.sheet,
                                        reveal_data=args.reveal_data, reveal_limit=min(args.limit or 100, 100),
                                        tune_limit=min(args.limit or 30, 30), points=args.points, **options)
        else:
            result = evaluate(ckpt, args.data, args.split, args.samples, args.limit, sheet=args.sheet, **options)
        dest = args.json or (str(Path(args.out) / "eval.json") if args.out else None)
        if dest:
            atomic_write(dest, json.dumps(result, indent=2) + "\n")
        return 0
    return 2



def _run_method(run: Path) -> str:
    """What ``export`` writes from a run directory by default: its head, where it has one. A
    family's heads train in the run directory of its backbone (training/recipes), so a run that
    holds a backbone and a VAE-MDN exports the VAE-MDN; the backbone wants ``--method backbone``
    there (the recipes pass it). Until this order, such a run silently exported its backbone
    under the head's name."""
    if (run / pic.STAGE).is_dir():
        return "pic"
    if (run / gcrf.HOC_STAGE).is_dir() or (run / gcrf.HINTS_STAGE).is_dir():
        return "gcrf"
    if (run / "vae").is_dir() or (run / "mdn").is_dir() or not (run / backbone.STAGE).is_dir():
        return "vae-mdn"
    return "backbone"


def _checkpoint_method(path: str | Path) -> str:
    """The method a model file holds ("" if unreadable: the evaluator then reports why)."""
    try:
        return load_checkpoint(path).method
    except CheckpointError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
