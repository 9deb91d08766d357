"""The training loop every stage shares: resume, atomic checkpoints, logs, bf16, torchrun.

Resume is exact: each step seeds its own randomness from (seed, step) and batches come from a
per-epoch permutation, so a run killed and restarted continues as if it had never stopped.
A polite kill (SIGTERM, SIGINT / Ctrl+C, SIGHUP) finishes the step, saves and exits (128 +
the signal's number), so nothing since the last periodic save is lost; only SIGKILL loses that.
Distributed runs (``torchrun --nproc-per-node N``) average gradients with an explicit
all-reduce after backward instead of wrapping in DDP: stages call several sub-modules per step
(encoder, decoder, frozen feature nets), which DDP's single-forward contract does not fit.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from engine.checkpoint import Checkpoint, load_checkpoint, now_iso, save_checkpoint, state_dict_mismatch
from engine.errors import CheckpointError, ConfigError, DataError, TrainingError
from engine.files import atomic_path, atomic_write

STATE_FILE = "state.safetensors"
PREV_STATE_FILE = "state.prev.safetensors"  # the state before the last save: the fallback if that one is damaged
DAMAGED_STATE_FILE = "state.damaged.safetensors"  # a damaged state, kept for a post-mortem instead of deleted
LOG_FILE = "log.jsonl"


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def teardown_distributed(finished: bool) -> None:
    """Leave the torchrun process group (a no-op outside torchrun) while the interpreter is whole.

    Otherwise the group is freed during interpreter shutdown: gloo's worker threads still hold
    the last collective's tensors, releasing them needs the GIL, and the runtime aborts the rank
    ("terminate called without an active exception", SIGABRT) after the stage has finished;
    seen in gdb, about 1 run in 30. ``finished``: wait for every rank first (after a failure
    that barrier would hang the others).
    """
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()  # drop the group's last references now, so its threads are joined before exit


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local)
    return torch.device(name)


def prepare(threads: int, device: str) -> tuple[torch.device, Dist]:
    """What every stage does first: CPU threads, the device, and the torchrun group if any."""
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    return dev, setup_distributed(dev)


def machine() -> str:
    """This machine in one line (the CPU model, cores, memory, GPU, torch)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores{mem}{gpu}; {platform.system()} {platform.release()}; torch {torch.__version__}"


@functools.cache
def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX512-BF16 / AMX), where bf16 autocast makes a
    head's training step ~1.9x faster than fp32 (2-core box, backbone + VAE); elsewhere bf16 is
    emulated and slower. ``DIVCOLOR_FP32=1`` turns it off (bit-for-bit comparisons with fp32)."""
    if os.environ.get("DIVCOLOR_FP32") == "1":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 is fast on ``device``: CUDA, or a CPU with native bf16 (:func:`cpu_has_bf16`)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def autocast(device: torch.device):
    """bf16 autocast where it is native (:func:`bf16_native`); losses are computed in float32 by the
    stages (they cast the network's outputs), so only the convolutions run in bf16."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_native(device))


@torch.no_grad()
def frozen_grey_features(model: torch.nn.Module, L: torch.Tensor, device: torch.device) -> tuple[list, torch.Tensor]:
    """A frozen model's grey features, run in bf16 where that is fast and handed on as float32,
    so what is trained on them (and anything as precision-sensitive as the G-CRF's AᵀA) sees
    the same numbers it will see at inference."""
    with autocast(device):
        feats, grey = model.grey_features(L)
    return [f if f is None else f.float() for f in feats], grey.float()


# --- optimizer state <-> flat tensors (safetensors cannot hold nested dicts) -----------------

def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --- the state file and its fallback --------------------------------------------------------

def recover_state(stage_dir: Path, repair: bool = True) -> Checkpoint | None:
    """The stage's saved state, or the previous one when the last is damaged; None if there is none.

    Each save first keeps the state it replaces as PREV_STATE_FILE, so a crash while saving, a
    full disk or a damaged file costs the steps since the previous save, not the run. With
    ``repair`` (only one process of a torchrun group) a damaged state is moved aside and the
    previous one copied in its place, so every later reader of STATE_FILE gets a good file.
    """
    stage_dir = Path(stage_dir)
    state, prev = stage_dir / STATE_FILE, stage_dir / PREV_STATE_FILE
    if not state.exists() and not prev.exists():
        return None
    problem = "is missing (the run was stopped while saving)"
    if state.exists():
        try:
            return load_checkpoint(state)
        except CheckpointError as e:
            problem = f"is damaged ({e})"
    try:
        ck = load_checkpoint(prev)
    except CheckpointError as e:
        why = "there is no earlier state" if not prev.exists() else f"the previous state is damaged too ({e})"
        raise CheckpointError(
            f"Cannot resume {stage_dir}: {state.name} {problem}, and {why}; delete {stage_dir} to start this stage over."
        ) from e
    print(f"{stage_dir.name}: {state.name} {problem}; resuming from the previous state ({prev.name}, step "
          f"{ck.meta.get('step', 0)})", file=sys.stderr, flush=True)
    if repair:
        if state.exists():
            os.replace(state, stage_dir / DAMAGED_STATE_FILE)
        with atomic_path(state) as tmp:
            shutil.copyfile(prev, tmp)
    return ck


def recover_run(run_dir: Path, repair: bool = True) -> None:
    """Check the unfinished stages of a run directory before a stage reads any of them (stages
    read earlier states directly, e.g. the VAE's statistics, before the loop starts)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for d in sorted(run_dir.iterdir()):
        if d.is_dir() and ((d / STATE_FILE).exists() or (d / PREV_STATE_FILE).exists()):
            if _finished(d / STATE_FILE):
                continue
            recover_state(d, repair)


def _finished(path: Path) -> bool:
    """Whether a state file says its stage is finished (header only; False if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return bool(json.loads((f.metadata() or {}).get("divcolor", "{}")).get("finished"))
    except Exception:  # noqa: BLE001 - unreadable or damaged: not known to be finished
        return False


def _sweep_temps(out: Path) -> None:
    """Remove temporaries of a state write cut short by a kill (this process's naming and
    engine.files' hidden ``.state.safetensors.*`` files)."""
    for stale in [*out.glob(STATE_FILE + ".*.tmp"), *out.glob("." + STATE_FILE + ".*")]:
        stale.unlink(missing_ok=True)


def _truncate_log(path: Path, start: int) -> None:
    """Drop log lines after the resumed step: they belong to steps that will be run again."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) > start:
                continue
        except (ValueError, AttributeError, TypeError):
            continue  # a line cut short by a kill
        keep.append(line)
    atomic_write(path, "".join(x + "\n" for x in keep))


def _check_same_run(ck: Checkpoint, meta: dict[str, Any], modules: dict[str, torch.nn.Module], where: Path) -> None:
    """Resuming with other model settings must say so, not fail inside load_state_dict."""
    old, new = ck.meta.get("config"), meta.get("config")
    if isinstance(old, dict) and isinstance(new, dict):
        diff = [k for k in sorted(set(old) & set(new)) if old[k] != new[k]]  # fields added since: not a change
    else:
        diff = []
    if diff:
        shown = ", ".join(f"--{k.replace('_', '-')} {old.get(k)!r} (now {new.get(k)!r})" for k in diff[:4])
        raise ConfigError(
            f"{where} was started with other settings: {shown}; rerun with the run's settings or choose a new --out."
        )
    for name, m in modules.items():
        problem = state_dict_mismatch(m.state_dict(), ck.subset(name))
        if problem:
            raise ConfigError(f"{where} holds a run with another network ({name}: {problem}); choose a new --out.")


# --- logging -------------------------------------------------------------------------------

TENSORBOARD_DIR = "tensorboard"


def tensorboard_writer(log_dir: Path, start: int) -> Any | None:
    """A TensorBoard SummaryWriter when the ``tensorboard`` package is installed, else None
    (JSONL stays the record; TensorBoard is a convenience for those who use it). Events after
    ``start`` are purged: a resumed run redoes those steps."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - ImportError, or a tensorboard too broken to import
        return None
    try:
        return SummaryWriter(str(log_dir), purge_step=start + 1 if start else None)
    except Exception as e:  # noqa: BLE001 - logging must never stop training
        print(f"TensorBoard logging is off: {e}", file=sys.stderr)
        return None


class Logger:
    """One JSON line per log step in RUN_DIR; a live line on a terminal, plain lines otherwise;
    the same scalars in RUN_DIR/STAGE/tensorboard when TensorBoard is installed."""

    def __init__(self, path: Path, total: int, enabled: bool, tag: str = "", start: int = 0):
        self.path, self.total, self.enabled, self.tag = path, total, enabled, tag
        self.tty = sys.stderr.isatty()
        self.t0 = time.time()
        self.tb = tensorboard_writer(path.parent / TENSORBOARD_DIR, start) if enabled else None

    def log(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"step": step, "time": round(time.time() - self.t0, 2), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{self.tag}/{k}" if self.tag else k, v, step)
        pct = 100.0 * step / max(self.total, 1)
        body = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        line = f"[{pct:5.1f}%] step {step}/{self.total} {body}"
        if self.tty:
            print("\r" + line[:160].ljust(160), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def event(self, step: int, name: str, fields: dict[str, Any]) -> None:
        """A JSON line that is not a training step (e.g. the bad images skipped); not printed:
        whoever noticed it has said so on the terminal already."""
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "event": name, **fields}) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.enabled and self.tty:
            print(file=sys.stderr)


# --- the loop --------------------------------------------------------------------------------

StepFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]


class Stopped(TrainingError):
    """The run was asked to stop by a signal and saved its state first; rerunning resumes."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None)


class StopRequest:
    """Notes SIGTERM / SIGINT / SIGHUP while training instead of dying mid-step: the loop then
    saves and stops. A second signal is not caught (Ctrl+C twice kills at once). Handlers are
    installed only on the main thread (Python allows no other) and restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:  # nohup's ignored SIGHUP stays ignored
                    self._old[s] = signal.signal(s, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))  # the next one acts as before

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    def agreed(self, ddp: "Dist", device: torch.device) -> int | None:
        """The signal, as every rank of a torchrun job sees it (each must stop at the same step).
        ``device``: the parameters' (NCCL reduces GPU tensors only)."""
        if ddp.world <= 1:
            return self.signum
        flag = torch.tensor([float(self.signum or 0)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None


@dataclass
class LoopSpec:
    run_dir: Path
    stage: str
    steps: int
    seed: int = 0
    log_every: int = 20
    checkpoint_minutes: float = 3.0
    max_minutes: float = 0.0  # stop early (and checkpoint) after this wall time; 0 = no limit
    stop_after: int = 0  # stop early (and checkpoint) after this many steps of this invocation
    grad_clip: float = 0.0


MIN_STATS_IMAGES = 2
"""Training-set statistics (the VAE stage's PCA of colour fields) need two images that differ in
colour: from one, the spread is 0/0 and every loss NaN; from identical ones, 0 and every loss
absurd (1e25). Measured: two different 64-pixel images train with finite losses."""


def check_statistics(stage: str, extra: dict[str, torch.Tensor] | None, meta: dict[str, Any]) -> None:
    """Refuse, before the first step, training-set statistics that make every loss NaN or absurd
    whatever the learning rate: a one-image folder ended in "the loss became nan … rerun with a
    lower --lr", which no --lr fixes."""
    if not extra:
        return
    broken = any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in extra.values())
    sigma = extra.get("stats.pca_sigma")
    flat = sigma is not None and not broken and sigma.numel() > 0 and float(sigma.max()) < 1e-6
    if not (broken or flat):
        return
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    n = data.get("images")
    have = f"{n} training image{'' if n == 1 else 's'}" if isinstance(n, int) else "the training images"
    folder = str(data.get("path", "")).endswith("/")
    where = " (a folder without train/ and test/ keeps about 1 image in 10 for testing)" if n == 1 and folder else ""
    why = (f"{have}{where} {'is' if n == 1 else 'are'} too few" if broken
           else f"{have} do not differ in colour, too little")
    raise DataError(  # divcolor-train prints it after the stage's name
        f"{why} for the {stage} stage's colour statistics (a PCA over the training set, which needs at least "
        f"{MIN_STATS_IMAGES} images that differ in colour), so the loss would be NaN or absurd at any --lr; "
        "add images to --data and rerun."
    )


def run_loop(
    spec: LoopSpec,
    modules: dict[str, torch.nn.Module],
    opt: torch.optim.Optimizer,
    step_fn: StepFn,
    meta: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    sched: Callable[[int], float] | None = None,
    ddp: Dist = Dist(),
    on_step: Callable[[int], None] | None = None,
) -> int:
    """Train ``modules`` for ``spec.steps`` steps, resuming from ``run_dir/stage`` if present.

    Returns the step reached. ``meta`` (config, data description) goes into the state file;
    ``extra_tensors`` (e.g. training-set statistics) are saved with it. ``sched(step)`` gives a
    learning-rate multiplier.
    """
    out = spec.run_dir / spec.stage
    state_path = out / STATE_FILE
    check_statistics(spec.stage, extra_tensors, meta)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    base_lrs = [g["lr"] for g in opt.param_groups]
    start = 0
    ck = recover_state(out, repair=ddp.main)
    if ck is not None:
        _check_same_run(ck, meta, modules, out)
        for name, m in modules.items():
            m.load_state_dict(ck.subset(name))
        load_optimizer(opt, ck.tensors, ck.meta.get("optimizer", {}))
        start = int(ck.meta.get("step", 0))
        if ddp.main:
            print(f"resuming {spec.stage} from step {start} ({state_path})", file=sys.stderr)
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        _sweep_temps(out)
        _truncate_log(out / LOG_FILE, start)
    logger = Logger(out / LOG_FILE, spec.steps, ddp.main, spec.stage, start)
    data = meta.get("data")
    if isinstance(data, dict) and data.get("skipped_images"):
        logger.event(start, "skipped_images", {"count": data["skipped_images"], "skipped": data.get("skipped", [])})

    saved_step = [start if ck is not None else -1]
    # Wall time summed over every resumed run of this stage (an interrupted hour still counts).
    trained_before = float((ck.meta.get("time") or {}).get("train_seconds", 0.0)) if ck is not None else 0.0

    def save(step: int, finished: bool) -> None:
        if not ddp.main:
            return
        tensors = {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}
        ot, om = optimizer_tensors(opt)
        tensors.update(ot)
        tensors.update(extra_tensors or {})
        if state_path.exists() and saved_step[0] != step:  # (re-saving a step only marks it finished)
            os.replace(state_path, out / PREV_STATE_FILE)  # kept until the next save: the fallback
        took = {"train_seconds": round(trained_before + time.time() - t_start, 3), "machine": machine(),
                "threads": torch.get_num_threads(), "world_size": ddp.world}
        save_checkpoint(
            state_path, tensors,
            {**meta, "stage": spec.stage, "step": step, "finished": finished, "optimizer": om, "time": took},
        )
        saved_step[0] = step

    stopped: int | None = None
    with StopRequest() as stop:
        try:
            last_save = time.time()
            t_start = time.time()
            step = start
            for m in modules.values():
                m.train()
            while step < spec.steps:
                torch.manual_seed(spec.seed * 1_000_003 + step)
                if sched is not None:
                    for g, lr in zip(opt.param_groups, base_lrs):
                        g["lr"] = lr * sched(step)
                loss, logs = step_fn(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if ddp.world > 1:
                    for p in params:
                        if p.grad is not None:
                            dist.all_reduce(p.grad)
                            p.grad /= ddp.world
                if spec.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
                opt.step()
                step += 1
                if on_step is not None:
                    on_step(step)
                if not math.isfinite(loss.item()):
                    raise TrainingError(
                        f"{spec.stage}: the loss became {loss.item()} at step {step} (training diverged); rerun with a "
                        f"lower --lr (now {base_lrs[0]:g}): it resumes from the last saved state, step {max(saved_step[0], 0)}."
                    )
                if step % spec.log_every == 0 or step == spec.steps:
                    logger.log(step, {"loss": loss.item(), **logs, "lr": opt.param_groups[0]["lr"]})
                stopped = stop.agreed(ddp, params[0].device if params else torch.device("cpu"))
                if stopped is not None:
                    break
                if time.time() - last_save > spec.checkpoint_minutes * 60:
                    save(step, False)
                    last_save = time.time()
                if (spec.max_minutes and time.time() - t_start > spec.max_minutes * 60) or (
                    spec.stop_after and step - start >= spec.stop_after
                ):
                    if ddp.main:
                        print(f"\n{spec.stage}: stopping at step {step} of {spec.steps}; rerun to continue", file=sys.stderr)
                    break
            save(step, step >= spec.steps)
        finally:
            logger.close()  # also flushes TensorBoard when a step fails
    if stopped is not None and step < spec.steps:  # (a stop during the last step: finished anyway)
        name = signal.Signals(stopped).name
        raise Stopped(f"{spec.stage}: stopped by {name} at step {step} of {spec.steps}, state saved; "
                      "rerun the same command to continue.", stopped)
    return step


def read_state(run_dir: Path, stage: str, need_finished: bool = True):
    """The saved state of an earlier stage, with a message saying which command to run first."""
    path = Path(run_dir) / stage / STATE_FILE
    if not path.exists() and not (path.parent / PREV_STATE_FILE).exists():
        raise SystemExit(f"{path} not found: run `divcolor-train {stage}` with the same --out first")
    ck = recover_state(path.parent, repair=int(os.environ.get("RANK", "0")) == 0)
    if need_finished and not ck.meta.get("finished"):
        raise SystemExit(f"stage '{stage}' in {run_dir} is not finished (step {ck.meta.get('step')}); rerun it to resume")
    return ck


def cosine(total: int, warmup: int = 100, floor: float = 0.05) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def half_floats(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An export's tensors in float16 (``--half``): weights and statistics; integer buffers kept."""
    return {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}


def stage_times(**stage_metas: dict[str, Any] | None) -> dict[str, Any]:
    """{stage: its wall time, threads and machine} for an exported file (results.py reports them)."""
    return {k: m["time"] for k, m in stage_metas.items() if m and m.get("time")}


def stamp() -> str:
    return now_iso()
