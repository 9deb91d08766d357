"""Every shipped model on one borrowed GPU inside a fixed wall-clock budget.

    python3 training/recipes/gpu_timed.py DATA_DIR OUT_DIR [--minutes 8.5] [--dry-run]

A borrowed GPU here is lent for one command of at most ten minutes, and no stage has ever been
timed on one, so fixed step counts would either waste the lease or run past it and return
nothing. Instead each stage gets a share of the time that is left; a short probe, in the stage's
own run directory (its steps count), measures seconds per step, and the stage's ``--steps`` are
set from that so its learning-rate schedule ends inside its share. A stage that still overruns
(``--max-minutes``) is closed at the step it reached so the stages after it can go on. Stages run
in priority order (backbone, the general family's VAE-MDN, PIC and G-CRF, then the faces family's) and a stage that no
longer fits is skipped; what finished is exported to OUT_DIR/models as it finishes.

All stages run in this one process (``training.cli.main``): an interpreter start with CUDA costs
seconds that would come out of the training. One backbone (the paper preset's decoder, width 32, over
the pretrained EfficientNet-Lite0 encoder, whose maps are encoded once per data set), on natural
photos and faces together, serves both families, so the lease trains one network instead of two and the app holds one in memory; it is
exported as ``backbone_wide`` so its heads can ship beside heads on the older backbones. The
heads keep the CPU preset's shapes, whose files fit the 10 MiB cap, and get the GPU's steps.
The first lease (training/README.md) found the faces heads on this shared backbone worse than on
the CPU faces backbone fine-tuned on lfw64 (VAE-MDN .0470 vs .0453): a faces fine-tune is the
next stage to add, in a second call, since two 24 MiB backbones and five heads exceed what one
call brings back.

DATA_DIR holds natural64_train_*.npz and lfw64_train_00.npz (carried with the work tree, so
≤ 64 MiB). ``--dry-run``: every stage for two steps on the CPU with a dozen images (the test
suite runs it, so this recipe cannot rot between the rare GPU sessions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.cli import main as _cli_main  # noqa: E402
from training.loop import LOG_FILE, read_state  # noqa: E402

BACKBONE = "backbone_wide"
PROBE_STEPS = 40  # enough to get past cuDNN's autotuning and the first allocations (--probe-steps)
# Time kept for each export still to come: the tuning runs on the CPU. Seen on the H200 box's 16
# cores with 16 tuning images: PIC 22 s; a G-CRF export was still tuning after 38 s (killed).
EXPORT_S = {"gcrf": 100.0, "pic": 30.0}
EXPORT_OTHER_S = 5.0


def export_seconds(words: list[str]) -> float:
    dest = Path(words[words.index("--dest") + 1]).name
    return next((t for k, t in EXPORT_S.items() if dest.startswith(k + "_")), EXPORT_OTHER_S)


def cli(words: list[str]) -> int:
    """One ``divcolor-train`` command in this process; a crash is that stage's failure, not the
    lease's (on the first lease an export's RuntimeError ended the driver and every stage after)."""
    try:
        return _cli_main(words)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - SystemExit from a stage's "run X first", or a bug
        traceback.print_exc()
        print(f"[gpu_timed] divcolor-train {' '.join(words[:1])} failed; going on without it", file=sys.stderr, flush=True)
        return 1


@dataclass
class Stage:
    """One training stage: its CLI words, its share of the remaining time and a step cap."""

    name: str  # the CLI stage
    run: str  # run directory under OUT/runs
    args: list[str]
    share: float
    cap: int  # the most steps worth running (more overfits the heads' small data)
    floor_s: float = 20.0  # skip the stage when less than this is left for it
    exports: list[list[str]] = field(default_factory=list)  # export argument lists run after it


class Plan:
    """Wall-clock bookkeeping: the deadline, and what each stage did (written to plan.json)."""

    def __init__(self, seconds: float, out: Path):
        self.t0 = time.time()
        self.deadline = self.t0 + seconds
        self.out = out
        self.record: list[dict] = []
        self.failed: set[str] = set()

    def left(self) -> float:
        return self.deadline - time.time()

    def note(self, **rec) -> None:
        rec["at_s"] = round(time.time() - self.t0, 1)
        self.record.append(rec)
        print(f"[gpu_timed] {json.dumps(rec)}", file=sys.stderr, flush=True)
        (self.out / "plan.json").write_text(json.dumps(self.record, indent=1) + "\n")


def _log_times(log: Path) -> list[tuple[int, float]]:
    rows = []
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
                rows.append((int(r["step"]), float(r["time"])))
            except (ValueError, KeyError):
                continue
    return rows


def seconds_per_step(log: Path) -> float | None:
    """From the probe's log: the second half of its steps (the first pay for warm-up)."""
    rows = _log_times(log)
    if len(rows) < 2:
        return None
    half = rows[len(rows) // 2 :] if len(rows) >= 4 else rows
    (s0, t0), (s1, t1) = half[0], half[-1]
    if s1 <= s0:
        return None
    return max((t1 - t0) / (s1 - s0), 1e-4)


def train_stage(st: Stage, plan: Plan, runs: Path, common: list[str], budget_s: float, dry: bool,
                probe: int = PROBE_STEPS) -> bool:
    """Probe, size, train and (if it overran) close one stage; True when it finished."""
    run = runs / st.run
    base = [st.name, "--out", str(run), *st.args, *common]
    log = run / st.name / LOG_FILE
    if dry:
        ok = cli([*base, "--steps", "2", "--log-every", "1"]) == 0
        plan.note(stage=st.name, run=st.run, steps=2, ok=ok)
        return ok
    t = time.time()
    if cli([*base, "--steps", str(st.cap), "--stop-after", str(probe), "--log-every", str(max(1, probe // 8))]) != 0:
        plan.note(stage=st.name, run=st.run, ok=False, why="probe failed")
        return False
    sps = seconds_per_step(log) or 1.0
    rows = _log_times(log)
    done = rows[-1][0] if rows else probe
    rest = budget_s - (time.time() - t)
    steps = int(min(st.cap, max(done + 1, done + rest / sps)))
    every = max(10, steps // 20)
    rc = cli([*base, "--steps", str(steps), "--log-every", str(every), "--max-minutes", f"{max(rest, 10) * 1.4 / 60:.3f}"])
    reached = int(read_state(run, st.name, need_finished=False).meta.get("step", 0))
    closed = False
    if rc == 0 and reached < steps:  # overran its share: close it where it is, so later stages can use it
        rc = cli([*base, "--steps", str(reached), "--log-every", str(every)])
        closed = True
    plan.note(stage=st.name, run=st.run, s_per_step=round(sps, 4), steps=steps, reached=reached, closed_early=closed,
              seconds=round(time.time() - t, 1), ok=rc == 0)
    return rc == 0


def stages(data: Path, models: Path, dry: bool) -> list[Stage]:
    nat, faces = str(data / "natural64"), str(data / "lfw64")
    bb = str(models / f"{BACKBONE}.safetensors")
    bb_args = ["--data", f"{nat},{faces}", "--preset", "paper", "--batch-size", "128", "--warmup", "300"]
    if dry:  # the preset's bf16 is emulated (slow) on CPUs without native bf16
        bb_args += ["--precision", "fp32"]
    out = [Stage("backbone", "backbone", bb_args, share=0.42, cap=60000, floor_s=60,
                 exports=[["export", "--out", "{runs}/backbone", "--half", "--dest", bb]])]
    for fam, d, extra in (("general", nat, []), ("faces", faces, ["--latent-dim", "32"])):
        vae = ["--data", d, "--preset", "cpu", "--backbone-file", bb, *extra]
        out += [
            Stage("vae", fam, vae, share=0.07 if fam == "general" else 0.05, cap=12000),
            Stage("mdn", fam, ["--data", d, "--preset", "cpu"], share=0.04 if fam == "general" else 0.03, cap=8000,
                  exports=[["export", "--out", f"{{runs}}/{fam}", "--half", "--dest", str(models / f"vae_mdn_{fam}.safetensors")]]),
        ]
        if fam == "general":  # PIC before the G-CRFs: the G-CRF stages are the longest chain
            out.append(Stage("pic", "general-pic", ["--data", nat, "--preset", "cpu", "--backbone-file", bb],
                             share=0.10, cap=30000,
                             exports=[["export", "--out", "{runs}/general-pic", "--half", "--data", nat,
                                       "--dest", str(models / "pic_general.safetensors")]]))
        g = f"{fam}-gcrf"
        out += [
            Stage("gcrf-unary", g, ["--data", d, "--init-from", f"{{runs}}/{fam}"], share=0.0, cap=0, floor_s=5),
            Stage("gcrf-hoc", g, ["--data", d, "--preset", "cpu"], share=0.07 if fam == "general" else 0.05, cap=12000),
            Stage("gcrf-hints", g, ["--data", d], share=0.04 if fam == "general" else 0.03, cap=6000,
                  exports=[["export", "--out", f"{{runs}}/{g}", "--data", d, "--half",
                            "--dest", str(models / f"gcrf_{fam}.safetensors")]]),
        ]
    return out


PACK_ORDER = [BACKBONE, "vae_mdn_general", "pic_general", "gcrf_general", "vae_mdn_faces", "gcrf_faces"]


def pack(models: Path, dest: Path, part_mib: float = 15, total_mib: float = 62) -> list[Path]:
    """The exported models as one .tgz cut into parts (a borrowed machine returns at most 8 files
    of ≤ 16 MiB, ≤ 64 MiB in all): in PACK_ORDER, dropping the last models while it is too big.
    Rejoin with ``cat models.tgz.* | tar xz``."""
    import tarfile

    names = [f"{n}.safetensors" for n in PACK_ORDER if (models / f"{n}.safetensors").exists()]
    extra = [f.name for f in sorted(models.glob("*.json"))]
    dest.mkdir(parents=True, exist_ok=True)
    whole = dest / "models.tgz"
    while True:
        with tarfile.open(whole, "w:gz", compresslevel=6) as tar:
            for n in names + extra:
                tar.add(models / n, arcname=n)
        if whole.stat().st_size <= total_mib * 2**20 or not names:
            break
        print(f"[gpu_timed] pack: {whole.stat().st_size / 2**20:.1f} MiB is too much; leaving out {names[-1]}", file=sys.stderr)
        names.pop()
    parts, size = [], int(part_mib * 2**20)
    with open(whole, "rb") as fh:
        while chunk := fh.read(size):
            parts.append(dest / f"models.tgz.{len(parts):02d}")
            parts[-1].write_bytes(chunk)
    whole.unlink()
    print(f"[gpu_timed] packed {', '.join(names + extra)} into {len(parts)} parts", file=sys.stderr)
    return parts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pack"]:  # pack MODELS_DIR DEST: a separate call, so it runs even after a timeout
        pack(Path(argv[1]), Path(argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--minutes", type=float, default=8.5, help="wall-clock budget for everything, exports included")
    p.add_argument("--dry-run", action="store_true", help="two steps per stage on the CPU with a dozen images")
    p.add_argument("--device", default="cuda", help="where to train (the timed plan on a CPU: a check of the plan)")
    p.add_argument("--limit", type=int, default=0, help="use N images of each set (0: all)")
    p.add_argument("--backbone", type=Path, help="train the heads on this backbone file instead of training one")
    p.add_argument("--only", help="comma-separated runs to train (backbone, general, general-pic, general-gcrf, "
                   "faces, faces-gcrf); default all")
    p.add_argument("--probe-steps", type=int, default=PROBE_STEPS, help="steps that measure each stage's speed")
    a = p.parse_args(argv)
    import torch

    os.environ.setdefault("DIVCOLOR_CACHE", str(a.out / "cache"))
    torch.backends.cuda.matmul.allow_tf32 = True  # the heads train in fp32: TF32 on the tensor cores
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    runs, models = a.out / "runs", a.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    plan = Plan(a.minutes * 60, a.out)
    common = (["--device", "cpu", "--threads", "1", "--limit", "12", "--batch-size", "4"] if a.dry_run
              else ["--device", a.device, *(["--limit", str(a.limit)] if a.limit else [])])
    todo = stages(a.data, models, a.dry_run)
    if a.backbone:  # a second lease: the heads on the backbone the first one trained
        shutil.copy2(a.backbone, models / f"{BACKBONE}.safetensors")
        todo = [st for st in todo if st.name != "backbone"]
    if a.only:
        keep = set(a.only.split(","))
        todo = [st for st in todo if st.run in keep]
    # Exports tune on the CPU (PIC's temperature: raster-order samples; G-CRF: 4096² solves per
    # image): fewer images than the CPU recipes use, so the tuning does not eat the lease.
    n = "2" if a.dry_run else "16"
    tune = ["--tune-images", n, "--hint-tune-images", n, "--beta-tune-images", n]
    for i, st in enumerate(todo):
        needs = {w.split("{runs}/", 1)[1] for w in st.args if "{runs}/" in w}  # --init-from another run
        st.args = [w.replace("{runs}", str(runs)) for w in st.args]
        if "backbone" in plan.failed:
            plan.note(stage=st.name, run=st.run, skipped="no backbone")
            continue
        if st.run in plan.failed or needs & plan.failed:
            plan.note(stage=st.name, run=st.run, skipped="an earlier stage of this run failed")
            plan.failed.add(st.run)
            continue
        shares = sum(s.share for s in todo[i:]) or 1.0
        exports_left = sum(export_seconds(ex) for s in todo[i:] for ex in s.exports)
        budget = max(0.0, plan.left() - exports_left) * st.share / shares
        if st.cap and not a.dry_run and budget < st.floor_s:
            plan.note(stage=st.name, run=st.run, skipped=f"{budget:.0f} s left for it")
            plan.failed.add(st.run)
            continue
        if st.cap == 0:  # a stage with no steps (gcrf-unary copies from the VAE-MDN run)
            ok = cli([st.name, "--out", str(runs / st.run), *st.args]) == 0
            plan.note(stage=st.name, run=st.run, ok=ok)
        else:
            ok = train_stage(st, plan, runs, common, budget, a.dry_run, a.probe_steps)
        if not ok:
            plan.failed.add(st.run)
            continue
        for ex in st.exports:
            words = [w.replace("{runs}", str(runs)) for w in ex]
            if "--data" in words:  # the exports that tune (G-CRF, PIC)
                words += tune
            t = time.time()
            rc = cli(words)
            plan.note(export=words[words.index("--dest") + 1], ok=rc == 0, seconds=round(time.time() - t, 1))
            if rc != 0:
                plan.failed.add(st.run)
    if (a.out / "plan.json").exists():
        shutil.copy2(a.out / "plan.json", models / "plan.json")
    made = sorted(m.name for m in models.glob("*.safetensors"))
    print(f"[gpu_timed] {len(made)} models in {models}: {', '.join(made)}", file=sys.stderr)
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
