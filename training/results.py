"""``divcolor-train results``: ``docs/RESULTS.md`` from the shipped models, their eval JSONs
and the speed benchmarks, in one command that needs no hand edits after a retrain.

For every model file in ``--models`` (default ``resources/models/``) it reads the file's own
metadata (method, training data, steps, the settings of every stage, time and machine when the
file records them) and the eval JSON ``docs/results/<stem>_eval.json``; ``--rerun`` runs those
evals again (``stale``: only for files changed since their eval). The report puts our figures
next to the papers' (Deshpande et al. Table 3, Messaoud et al. Tables 2-3, Royer et al.'s
bits/dim), with the grey and flat true-tint baselines measured on the same images, the targets
of issue 12, the speed benchmarks with their in-run baselines (``docs/results/bench_*.json``,
refreshed with ``--bench``) and the contact sheets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from engine.checkpoint import load_checkpoint
from engine.models.encoder import VARIANTS as ENCODER_VARIANTS
from engine.errors import CheckpointError, ConfigError
from engine.files import atomic_write

from .loop import machine

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO / "resources" / "models"
DEFAULT_RESULTS = REPO / "docs" / "results"
DEFAULT_DEST = REPO / "docs" / "RESULTS.md"
DEFAULT_DATA = REPO.parent / "shared" / "data"
TEST_SETS = {"faces": "lfw64", "general": "natural128"}  # issue 12: the project's own test splits
BENCHMARKS = ("vae_mdn", "pic_sampling", "gcrf_strokes", "backbone_train", "large_scan", "switch")
LABELS = {"vae-mdn": "VAE-MDN", "pic": "PIC", "gcrf": "G-CRF", "backbone": "backbone"}

# The papers' figures (5 samples for eob; see docs/RESULTS.md for the protocols).
PAPER_TABLE = [  # (source, method, set, eob, variance, pairwise SSIM)
    ("Deshpande et al. 2017, Table 3", "VAE-MDN (ours)", "LFW", ".030", "1.1e-3", "—"),
    ("Deshpande et al. 2017, Table 3", "VAE-MDN (ours+skip)", "LFW", ".031", "4.4e-4", "—"),
    ("Deshpande et al. 2017, Table 3", "VAE-MDN (ours)", "ImageNet-val", ".043", "6.8e-4", "—"),
    ("Deshpande et al. 2017, Table 3", "VAE-MDN (ours+skip)", "ImageNet-val", ".041", "6.0e-4", "—"),
    ("Messaoud et al. 2018, Table 2", "VAE-MDN", "LFW", ".035", "1.81e-2", ".49"),
    ("Messaoud et al. 2018, Table 2", "VAE-MDN", "ILSVRC-2015", ".033", "7.17e-3", ".48"),
    ("Messaoud et al. 2018, Table 2", "PIC", "LFW", ".043", "5.32e-2", ".36"),
    ("Messaoud et al. 2018, Table 2", "PIC", "ILSVRC-2015", ".035", "6.74e-2", ".19"),
    ("Messaoud et al. 2018, Table 2", "G-CRF (ours)", "LFW", "(unreadable in our copy)", "8.86e-3", ".61"),
    ("Messaoud et al. 2018, Table 2", "G-CRF (ours)", "ILSVRC-2015", "(unreadable in our copy)", "8.80e-3", ".52"),
]
PAPER_PSNR = {"points": [10, 50, 100], "Levin et al. (paper)": [26.5, 28.5, 30.0], "G-CRF (paper)": [26.7, 29.3, 30.4]}
PAPER_BPD = "2.72 (CIFAR-10, 32 px), 2.51 (ILSVRC, 128 px)"
POINT_LABELS = {"gcrf_points_only": "G-CRF, hints only", "gcrf": "G-CRF, hints over its automatic colorization",
                "levin": "Levin et al. (same points)", "sample": "its automatic colorization, no hints",
                "grey": "grey (no colour)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``results`` subcommand's options (training/cli.py adds the subparser)."""
    p.add_argument("--models", default=str(DEFAULT_MODELS), help="folder of model files to report (default: the shipped ones)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="where eval JSONs, sheets and bench_*.json live")
    p.add_argument("--dest", default=str(DEFAULT_DEST), help="the report to write (default docs/RESULTS.md)")
    p.add_argument("--data-root", default=str(DEFAULT_DATA), help="folder of the shared data shards")
    p.add_argument("--test-set", action="append", default=[], metavar="FAMILY=SET",
                   help="test data per model family, a name under --data-root or a path (default faces=lfw64, "
                   "general=natural128); repeatable")
    p.add_argument("--demo", default=None, help="historical photos to colorize (default DATA_ROOT/bw_demo if present)")
    p.add_argument("--rerun", nargs="?", const="all", choices=["none", "stale", "all"], default="none",
                   help="run the evals again: all, or stale (missing, or the model file changed since); "
                   "a bare --rerun means all")
    p.add_argument("--limit", type=int, default=200, help="with --rerun: N evenly spaced test images per model (0: all)")
    p.add_argument("--samples", type=int, default=5, help="with --rerun: samples per image (the papers use 5)")
    p.add_argument("--bench", nargs="?", const=",".join(BENCHMARKS), default="",
                   help="also run these benchmarks (comma-separated names of benchmarks/bench_NAME.py; a bare "
                   f"--bench runs all: {', '.join(BENCHMARKS)}) and save their output as bench_NAME.json")
    p.add_argument("--bench-timeout", type=int, default=1800, help="seconds each benchmark may take")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for evals and benchmarks (default 1)")


# --- the models ------------------------------------------------------------------------------

@dataclass
class Shipped:
    """One model file and what its metadata says."""

    path: Path
    method: str
    meta: dict[str, Any]

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def family(self) -> str:
        """``vae_mdn_faces`` -> faces; a backbone named for its encoder, ``backbone_general_lite0``, -> general."""
        parts = self.stem.split("_")
        return parts[-2] if len(parts) > 2 and parts[-1] in ENCODER_VARIANTS else parts[-1]

    @property
    def label(self) -> str:
        return f"{LABELS.get(self.method, self.method)} {self.family}"

    def eval_path(self, results: Path) -> Path:
        return results / f"{self.stem}_eval.json"


def shipped_models(folder: Path) -> list[Shipped]:
    """Every readable model file in ``folder`` (an unreadable one is named on stderr, not fatal)."""
    out = []
    for f in sorted(folder.glob("*.safetensors")):
        try:
            ck = load_checkpoint(f)
        except CheckpointError as e:
            print(f"results: skipping {f.name}: {e}", file=sys.stderr)
            continue
        out.append(Shipped(f, ck.method, dict(ck.meta)))
    order = {"backbone": 0, "vae-mdn": 1, "gcrf": 2, "pic": 3}
    return sorted(out, key=lambda m: (m.family, order.get(m.method, 9), m.stem))


def test_data(model: Shipped, data_root: Path, overrides: dict[str, str]) -> str:
    name = overrides.get(model.family) or TEST_SETS.get(model.family) or (model.meta.get("data") or {}).get("path", "")
    p = Path(name)
    return str(p if p.is_absolute() or p.exists() else data_root / name)


def _rel(path: str | Path, start: Path = REPO) -> str:
    """``path`` relative to the repository when it lies in the repository's folder (the shared
    data beside it becomes ``../shared/data/…``), else as given: JSON and report stay portable."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    r = p.resolve()
    return os.path.relpath(r, start.resolve()) if r.is_relative_to(start.resolve().parent) else str(p)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


def rerun_eval(model: Shipped, data: str, results: Path, limit: int, samples: int, demo: str | None) -> dict[str, Any]:
    """Run the model's eval (the same functions as ``divcolor-train eval``) and save its JSON,
    with the sheets under ``results`` and their paths relative to the repository."""
    from .stages import backbone as B
    from .stages import gcrf_eval as G
    from .stages import pic as P
    from .stages.evaluate import evaluate

    sheet = results / f"{model.stem}_{Path(data).name}_test.jpg"  # JPEG at a reader's size: sheets live in the repository
    print(f"results: evaluating {model.path.name} on {data} ({limit or 'all'} images)", file=sys.stderr, flush=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the evals print their JSON; the report is ours
        if model.method == B.METHOD:
            res = B.evaluate_backbone(model.path, data, "test", 0, sheet=sheet, demo=demo)
        elif model.method == P.METHOD:
            res = P.evaluate_pic(model.path, data, "test", samples, 0, limit, sheet=str(sheet), demo=demo)
        elif model.method == "gcrf":
            res = G.evaluate_gcrf(model.path, data, "test", samples, limit, sheet=sheet, demo=demo)
        else:
            res = evaluate(model.path, data, "test", samples, limit, sheet=sheet, demo=demo, quiet=True)
    for key in ("contact_sheet", "demo_sheet", "backbone_demo_sheet"):
        if key in res:
            res[key] = _rel(res[key])
    if "checkpoint_digest" not in res:  # the backbone's eval does not name its file's digest
        from .stages.evaluate import file_digest

        res["checkpoint_digest"] = file_digest(model.path)
    res["command"] = f"divcolor-train results --rerun (eval of {_rel(model.path)} on {_rel(data)}, limit {limit})"
    atomic_write(model.eval_path(results), _json_text(res))
    return res


def load_eval(model: Shipped, results: Path) -> tuple[dict[str, Any] | None, str]:
    """The model's eval and where it came from: its JSON, else the metrics in its own file
    (what the last export embedded), else nothing."""
    from .stages.evaluate import file_digest

    p = model.eval_path(results)
    if p.exists():
        try:
            ev = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            return None, f"{p.name} unreadable ({e})"
        if ev.get("checkpoint_digest") == file_digest(model.path):
            return ev, _rel(p)
        return ev, f"{_rel(p)} (STALE: measured on another version of the file; rerun with --rerun stale)"
    metrics = model.meta.get("metrics") or {}
    if metrics:
        return metrics, "the model file's embedded metrics (older eval, fewer fields; rerun with --rerun stale)"
    return None, "not evaluated yet (run with --rerun stale)"


def is_stale(model: Shipped, results: Path) -> bool:
    from .stages.evaluate import file_digest

    p = model.eval_path(results)
    if not p.exists():
        return True
    try:
        return json.loads(p.read_text()).get("checkpoint_digest") != file_digest(model.path)
    except (OSError, ValueError):
        return True


def points_results(model: Shipped, results: Path, ev: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """Table 3 (PSNR vs revealed points) for a G-CRF model: the G-CRF eval's own JSON files
    (``gcrf_<family>*points*.json``) first, else the eval's or the file's ``psnr_vs_points``."""
    out = []
    for f in sorted(results.glob(f"{model.stem}*points*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        d = d.get("psnr_vs_points", d) if isinstance(d, dict) else {}
        if isinstance(d, dict) and d.get("points"):
            out.append((_rel(f), d))
    if not out:
        for src, d in ((("eval JSON", ev or {}), ("model file metadata", model.meta.get("metrics") or {}))):
            if isinstance(d.get("psnr_vs_points"), dict):
                out.append((src, d["psnr_vs_points"]))
                break
    return out


# --- benchmarks --------------------------------------------------------------------------------

def run_benchmark(name: str, results: Path, threads: int, timeout: int) -> dict[str, Any]:
    """Run benchmarks/bench_NAME.py (it prints its own table with an in-run baseline and ratios)
    and keep its output, the command, the time and the machine in bench_NAME.json."""
    script = REPO / "benchmarks" / f"bench_{name}.py"
    if not script.is_file():
        raise ConfigError(f"--bench {name}: there is no {_rel(script)}; choose from {', '.join(BENCHMARKS)}.")
    cmd = [sys.executable, str(script), "--threads", str(threads)]
    print(f"results: running {_rel(script)}", file=sys.stderr, flush=True)
    t0 = time.time()
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        output, rc = done.stdout + (("\n" + done.stderr[-3000:]) if done.returncode else ""), done.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        output, rc = out + f"\n(stopped after {timeout} s)", -1
    res = {"benchmark": name, "command": shlex.join(["python", _rel(script), *cmd[2:]]), "returncode": rc,
           "output": output.rstrip(), "seconds": round(time.time() - t0, 1),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}
    atomic_write(results / f"bench_{name}.json", _json_text(res))
    return res


def load_benchmarks(results: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(results.glob("bench_*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict):
            out.append({"file": _rel(f), **d})
    return out


# --- the report --------------------------------------------------------------------------------

def _f(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, (int, float)):
        if v != 0 and abs(v) < 0.01:
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return str(v)


def _pct(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return "—"
    return f"{(a / b - 1) * 100:+.0f} %"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _stage_commands(model: Shipped) -> list[str]:
    """The training commands that made the file, rebuilt from the settings it records (only the
    flags that differ from the stage's defaults), then the export; a recorded command wins."""
    from .stage_registry import TRAIN_STAGES

    meta = model.meta
    recorded = meta.get("commands") or meta.get("command")
    if recorded:
        return list(recorded) if isinstance(recorded, list) else [str(recorded)]
    run = f"runs/{model.stem}"
    lines = []
    configs = _stage_configs(model)
    if model.method == "gcrf":  # the G-CRF run's own names for its VAE and MDN stages, in training order
        renamed = {"vae": "gcrf-unary", "mdn": "gcrf-mdn"}
        configs = {renamed.get(k, k): v for k, v in configs.items()}
        order = ["gcrf-unary", "gcrf-mdn", "gcrf-hoc"]
        configs = dict(sorted(configs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9))
    for stage, cfg in configs.items():
        if stage not in TRAIN_STAGES:
            continue
        cls = TRAIN_STAGES[stage][0]
        defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        # a file from before a field existed was trained as that field's ABSENT value says
        cfg = {**getattr(cls, "ABSENT", {}), **cfg}
        data = cfg.get("data", "")
        if isinstance(data, list):
            data = " ".join(data)
        args = [f"divcolor-train {stage} --data {shlex.quote(str(data))} --out {run}"]  # a mix's *K: quoted
        for k, v in cfg.items():
            if k in ("data", "out") or k not in defaults or defaults[k] == v:  # data is above; unknown keys are no flags
                continue
            if v is None:
                continue
            if k == "backbone_file":  # wherever it was staged, the app and these commands find it shipped here
                v = f"resources/models/{Path(str(v)).name}"
            args.append(f"--{k.replace('_', '-')} {v if v != '' else repr('')}")
        lines.append(" ".join(args))
    if lines:
        lines.append(f"divcolor-train export --out {run} --half --dest resources/models/{model.path.name}")
    return lines


TIME_KEYS = ("cpu_hours", "wall_hours", "wall_seconds", "train_seconds", "seconds_trained", "training_seconds",
             "machine", "hostname", "device_name", "images_per_second", "img_s")


def _stage_configs(model: Shipped) -> dict[str, dict[str, Any]]:
    """{stage: its settings} as the file records them (the backbone keeps its one stage flat)."""
    training = model.meta.get("training") or {}
    if model.method == "backbone":
        return {"backbone": training} if isinstance(training, dict) else {}
    return {k: v for k, v in training.items() if isinstance(v, dict)} if isinstance(training, dict) else {}


def _time_info(meta: dict[str, Any]) -> list[str]:
    """Time and machine facts the file records, wherever the training stages put them."""
    found: list[str] = []

    def walk(d: dict[str, Any], where: str) -> None:
        for k, v in d.items():
            if k == "metrics":
                continue
            if isinstance(v, dict):
                walk(v, f"{where}{k}.")
            elif k in TIME_KEYS:
                found.append(f"{where}{k} = {v}")

    walk(meta, "")
    return found


def _provenance(model: Shipped, src: str, data: str) -> list[str]:
    meta = model.meta
    d = meta.get("data") or {}
    if isinstance(d, dict):
        data_txt = f"{d.get('path', '?')} {d.get('split', '')} ({d.get('images', '?')} images)"
    else:
        data_txt = str(d)
    steps = meta.get("steps")
    steps_txt = ", ".join(f"{k} {v}" for k, v in steps.items()) if isinstance(steps, dict) else _f(steps, 0)
    threads = ", ".join(f"{k} {c['threads']}" for k, c in _stage_configs(model).items() if "threads" in c)
    timing = _time_info(meta)
    lines = [
        f"### `{_rel(model.path)}` ({model.path.stat().st_size / 2**20:.1f} MiB, {LABELS.get(model.method, model.method)})",
        "",
        f"- created {meta.get('created', '?')}; trained on {data_txt}; steps: {steps_txt}",
        f"- torch threads per stage: {threads or 'not recorded'}; time and machine: "
        + ("; ".join(timing) if timing else "not recorded in the file (training/README.md gives the wall times "
                                              "of the runs that made it)"),
    ]
    if meta.get("backbone_file"):
        digest = (meta.get("config") or {}).get("backbone", "?")
        lines.append(f"- looks through the shared backbone `{meta['backbone_file']}` (digest {digest})")
    lines.append(f"- evaluated on: {_rel(data)} test; eval: {src}")
    cmds = _stage_commands(model)
    if cmds:
        lines += ["", "```bash", *cmds, "```"]
    return lines + [""]


def _img(path: str | None, dest_dir: Path, alt: str) -> str:
    if not path:
        return ""
    p = Path(path)
    p = p if p.is_absolute() else REPO / p
    if not p.exists():
        return f"({alt}: `{path}` is missing)"
    return f"![{alt}]({os.path.relpath(p, dest_dir)})"


def _targets(rows: list[tuple[Shipped, dict[str, Any]]]) -> list[str]:
    """Issue 12's targets, each with its measured value and whether it is met."""
    out = []

    def check(what: str, value: Any, ok: bool | None) -> None:
        out.append([what, _f(value), "—" if ok is None else ("met" if ok else "**not met**")])

    for m, ev in rows:
        tint = ev.get("baseline_true_tint_l1")
        eob, first, var = ev.get("error_of_best_l1"), ev.get("first_sample_error_l1"), ev.get("variance")
        colf, colf_t = ev.get("colourfulness"), ev.get("colourfulness_truth")
        num = lambda *v: all(isinstance(x, (int, float)) for x in v)  # noqa: E731
        if m.method == "vae-mdn" and m.family == "general":
            check(f"{m.label}: best-of-{ev.get('samples', 5)} L1 ≥ 20 % below the flat tint ({_f(tint)})", eob,
                  eob <= 0.8 * tint if num(eob, tint) else None)
            check(f"{m.label}: first sample L1 at or below the flat tint", first, first <= tint if num(first, tint) else None)
            check(f"{m.label}: variance ≥ 5e-3", var, var >= 5e-3 if num(var) else None)
            check(f"{m.label}: colourfulness within 15 % of the truth's ({_f(colf_t, 1)})", colf,
                  abs(colf / colf_t - 1) <= 0.15 if num(colf, colf_t) and colf_t else None)
        if m.method in ("vae-mdn", "gcrf") and m.family == "faces":
            check(f"{m.label}: best-of-{ev.get('samples', 5)} L1 ≤ .035", eob, eob <= 0.035 if num(eob) else None)
            check(f"{m.label}: variance ≥ 3e-3", var, var >= 3e-3 if num(var) else None)
            if m.method == "gcrf":
                s = ev.get("pairwise_ssim")
                check(f"{m.label}: pairwise SSIM ≥ .6", s, s >= 0.6 if num(s) else None)
        if m.method == "pic":
            check(f"{m.label}: best-of-{ev.get('samples', 5)} L1 ≥ 10 % below the flat tint ({_f(tint)})", eob,
                  eob <= 0.9 * tint if num(eob, tint) else None)
            gain = ev.get("uses_L_bits_per_dim")
            check(f"{m.label}: bits/dim with the true L ≥ 0.5 below a blank L", gain, gain >= 0.5 if num(gain) else None)
        if m.method != "backbone" and "demo_mean_chroma" in ev:
            c = ev["demo_mean_chroma"]
            check(f"{m.label}: bw_demo mean chroma > 8", c, c > 8 if num(c) else None)
    return _table(["target (issue 12)", "measured", ""], out) if out else ["(no evals to check)", ""]


def render(models: list[Shipped], evals: dict[str, tuple[dict[str, Any] | None, str]], data: dict[str, str],
           benches: list[dict[str, Any]], dest: Path, command: str, results: Path) -> str:
    """The whole report as Markdown."""
    dest_dir = dest.parent
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    have = [(m, evals[m.stem][0]) for m in models if evals[m.stem][0]]
    methods = [(m, e) for m, e in have if m.method != "backbone"]
    L: list[str] = [
        "# divcolor results",
        "",
        f"Generated by `{command}` on {now} ({machine()}). Do not edit by hand: rerun the command "
        "(`--rerun stale` re-evaluates the model files that changed, `--bench` refreshes the speed figures; "
        "see training/README.md).",
        "",
        "Units: errors are in ab/128 (the models' units) on the test split named per row; **L1** is the mean absolute "
        "error over pixels and both channels (Deshpande et al.'s wording), **L2** the mean per-pixel Euclidean distance. "
        "*Best of K* is the smallest error among K samples per image (error-of-best), *first* the first sample alone "
        "(the most likely colorization for VAE-MDN and G-CRF, PIC's first draw). Baselines on the same images: **grey** "
        "(no colour) and **flat tint** (each photo painted in its own true mean ab: an oracle no method can know). "
        "Colourfulness is Hasler and Süsstrunk's M (0 grey, ~33 moderately, ~59 quite colourful). Our images are "
        "64-128 px JPEG shards, not the papers' sets: compare orders of magnitude, not third decimals.",
        "",
        "## The gap: every method beside grey, the flat tint and the backbone (L1, ab/128)",
        "",
    ]
    families = list(dict.fromkeys(m.family for m, _ in have))
    rows = []
    for fam in families:
        fam_evals = [(m, e) for m, e in have if m.family == fam]
        ordered = sorted(fam_evals, key=lambda me: me[0].method == "backbone")  # a method's images first
        ref = next((e for m, e in ordered if e.get("baseline_true_tint_l1") is not None), {})
        bb = next((e.get("backbone_error_l1") for m, e in fam_evals if e.get("backbone_error_l1") is not None), None)
        bb_txt = _f(bb)
        if bb is None:  # no head looks through it yet: the backbone's own eval, on its own images
            own = next((e for m, e in fam_evals if m.method == "backbone"), None)
            bb_txt = f"{_f(own.get('error_l1'))} (its own eval: {own.get('data', '?')})" if own else "—"
        cells = [fam, str(ref.get("data", "—")), _f(ref.get("baseline_grey_l1")), _f(ref.get("baseline_true_tint_l1")), bb_txt]
        for meth in ("vae-mdn", "gcrf", "pic"):
            e = next((e for m, e in fam_evals if m.method == meth), None)
            cells.append(f"{_f(e.get('error_of_best_l1'))} / {_f(e.get('first_sample_error_l1'))}" if e else "—")
        rows.append(cells)
    L += _table(["family", "test images (first eval's)", "grey", "flat tint (oracle)", "backbone best guess",
                 "VAE-MDN best / first", "G-CRF best / first", "PIC best / first"], rows)
    L += ["Papers (L1, best of 5): VAE-MDN LFW .030-.035, ImageNet-val .033-.043; PIC ImageNet .035; "
          "G-CRF LFW/ILSVRC: see Table 2 below. Each row's baselines are those of the first eval of the family; every "
          "eval JSON holds its own, measured on its own images.", ""]

    L += ["## Papers' Tables 2-3: error-of-best, variance, pairwise SSIM", ""]
    rows = []
    for m, e in methods:
        rows.append([m.label, str(e.get("data", "—")), f"{e.get('samples', '—')} ({e.get('sampling', 'means')})",
                     _f(e.get("error_of_best")), _f(e.get("error_of_best_l1")), _f(e.get("first_sample_error_l1")),
                     _f(e.get("variance")), _f(e.get("pairwise_ssim")), _f(e.get("baseline_grey_l1")),
                     _f(e.get("baseline_true_tint_l1")), _pct(e.get("error_of_best_l1"), e.get("baseline_true_tint_l1"))])
    L += _table(["model", "test data", "samples", "eob L2", "eob L1", "first L1", "variance", "pairwise SSIM", "grey L1",
                 "flat tint L1", "eob vs tint"], rows)
    L += ["The papers' figures (their data: LFW, ImageNet/ILSVRC at their resolutions; eob as mean absolute error):", ""]
    L += _table(["source", "method", "set", "eob", "variance", "pairwise SSIM"], [list(r) for r in PAPER_TABLE])

    L += ["## Table 3: PSNR vs revealed points (G-CRF hints only, G-CRF over a sample, Levin)", ""]
    any_points = False
    for m, e in have:
        if m.method != "gcrf":
            continue
        for src, d in points_results(m, results, e):
            any_points = True
            pts = d.get("points", [])
            rows = []
            for k, v in d.items():
                if isinstance(v, list) and len(v) == len(pts) and k != "points" and all(isinstance(x, (int, float)) for x in v):
                    rows.append([POINT_LABELS.get(k, k), *[_f(x, 2) for x in v]])
            for name in ("G-CRF (paper)", "Levin et al. (paper)"):
                rows.append([name, *[_f(PAPER_PSNR[name][PAPER_PSNR["points"].index(p)], 1) if p in PAPER_PSNR["points"]
                                     else "—" for p in pts]])
            L += [f"{m.label}: {d.get('protocol', '')} (source: {src})", ""]
            L += _table(["N revealed points", *[str(p) for p in pts]], rows)
            if d.get("contact_sheet"):
                L += [d.get("contact_sheet_columns", ""), "", _img(d["contact_sheet"], dest_dir, f"{m.label} points"), ""]
    if not any_points:
        L += ["No PSNR-vs-points results yet (the G-CRF eval writes `docs/results/gcrf_<family>_points*.json`; "
              "`divcolor-train eval --reveal-data ../shared/data/natural128` also puts them in the eval JSON).", ""]

    L += ["## PIC: bits per dimension with and without the photo's L", ""]
    rows = []
    for m, e in methods:
        if m.method == "pic":
            rows.append([m.label, str(e.get("bits_per_dim_images", "—")), _f(e.get("bits_per_dim")),
                         _f(e.get("bits_per_dim_blank_L")), _f(e.get("bits_per_dim_other_L")), _f(e.get("uses_L_bits_per_dim")),
                         PAPER_BPD])
    L += _table(["model", "test images", "true L", "blank L (flat, its mean)", "another photo's L",
                 "gain from L (target ≥ 0.5)", "paper (true L)"], rows) if rows else ["(no PIC model)", ""]

    L += ["## Colourfulness (Hasler & Süsstrunk 2003) against the ground truth", ""]
    rows = []
    for m, e in have:
        if m.method == "backbone":
            rows.append([m.label, "(single output)", _f(e.get("colourfulness_truth"), 1), "—", _f(e.get("colourfulness"), 1),
                         _f(e.get("demo_mean_chroma"), 1)])
            continue
        c, t = e.get("colourfulness"), e.get("colourfulness_truth")
        rows.append([m.label, _f(c, 1), _f(t, 1), _pct(c, t), _f(e.get("backbone_colourfulness"), 1),
                     f"{_f(e.get('demo_mean_chroma'), 1)}" + (f" (backbone {_f(e.get('backbone_demo_mean_chroma'), 1)})"
                                                            if e.get("backbone_demo_mean_chroma") is not None else "")])
    L += _table(["model", "samples", "ground truth", "samples vs truth", "backbone best guess",
                 "bw_demo mean chroma (Lab)"], rows)

    L += ["## Issue 12's targets", ""]
    L += _targets(have)

    L += ["## Speed (benchmarks, each with a baseline measured in the same run)", ""]
    if benches:
        for b in benches:
            L += [f"### {b.get('benchmark', b['file'])}", "",
                  f"`{b.get('command', '?')}` on {b.get('date', '?')}, {b.get('machine', '?')} "
                  f"(exit {b.get('returncode', '?')}, {b.get('seconds', '?')} s; `{b['file']}`)", "",
                  "```", str(b.get("output", json.dumps({k: v for k, v in b.items() if k != 'file'}, indent=2))), "```", ""]
    else:
        L += ["No benchmark results yet: `divcolor-train results --bench` runs `benchmarks/bench_*.py`.", ""]

    L += ["## Contact sheets", ""]
    for m, e in have:
        pics = []
        if e.get("contact_sheet"):
            pics.append(f"Test split ({e.get('contact_sheet_columns', 'grey | truth | samples')}):\n\n"
                        + _img(e["contact_sheet"], dest_dir, f"{m.label} test split"))
        if e.get("demo_sheet"):
            pics.append(f"bw_demo ({e.get('demo_sheet_columns', 'grey | colorized')}):\n\n" + _img(e["demo_sheet"], dest_dir, f"{m.label} bw_demo"))
        if e.get("backbone_demo_sheet"):
            pics.append("bw_demo, the backbone's best guess (grey | colorized pairs):\n\n"
                        + _img(e["backbone_demo_sheet"], dest_dir, f"{m.label} backbone bw_demo"))
        if pics:
            L += [f"### {m.label}", "", *[p + "\n" for p in pics]]

    L += ["## The models: how each file was made, and its eval", ""]
    for m in models:
        L += _provenance(m, evals[m.stem][1], data[m.stem])
    return "\n".join(L).rstrip() + "\n"


def run_results(args: argparse.Namespace) -> int:
    """The ``results`` subcommand."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    models_dir, results, dest, root = Path(args.models), Path(args.results), Path(args.dest), Path(args.data_root)
    if not models_dir.is_dir():
        raise ConfigError(f"--models {args.models} is not a folder; give the folder of model files (resources/models).")
    overrides = {}
    for item in args.test_set:
        fam, _, name = item.partition("=")
        if not name:
            raise ConfigError(f"--test-set {item!r}: write FAMILY=SET, e.g. general=natural128.")
        overrides[fam] = name
    demo = args.demo if args.demo is not None else (str(root / "bw_demo") if (root / "bw_demo").is_dir() else None)
    results.mkdir(parents=True, exist_ok=True)
    models = shipped_models(models_dir)
    data = {m.stem: test_data(m, root, overrides) for m in models}
    for m in models:
        if args.rerun == "all" or (args.rerun == "stale" and is_stale(m, results)):
            rerun_eval(m, data[m.stem], results, args.limit, args.samples, demo)
    for name in [n.strip() for n in args.bench.split(",") if n.strip()]:
        run_benchmark(name.removeprefix("bench_").removesuffix(".py"), results, args.threads, args.bench_timeout)
    evals = {m.stem: load_eval(m, results) for m in models}
    command = "divcolor-train results" + "".join(
        f" {flag} {shlex.quote(str(v))}" for flag, v, default in (
            ("--models", _rel(models_dir), _rel(DEFAULT_MODELS)), ("--results", _rel(results), _rel(DEFAULT_RESULTS)),
            ("--dest", _rel(dest), _rel(DEFAULT_DEST)),
        ) if v != default)
    text = render(models, evals, data, load_benchmarks(results), dest, command, results)
    atomic_write(dest, text)
    print(f"wrote {dest} ({len(models)} models)", file=sys.stderr)
    return 0
