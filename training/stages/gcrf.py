"""G-CRF (Messaoud et al. 2018, §3.3 and §4): the run's layout, phase 1 (``gcrf-unary``) and
stage 2 (``gcrf-mdn``).

A G-CRF run directory holds the same ``vae`` and ``mdn`` stages as a VAE-MDN run plus
``gcrf-hoc`` (and, for the learned hint branch, ``gcrf-hints``); ``divcolor-train export``
assembles them into one ``.safetensors`` file (method "gcrf"). One module per purpose:

- here, ``gcrf-unary`` (stage 1, phase 1): the unary term is the VAE-MDN decoder, trained with
  the same losses (L_hist + 0.1 L_mah + 1e-3 L_grad + 1e-2 KL), so this stage *is* the ``vae``
  stage and writes ``RUN_DIR/vae``. CPU time is never spent twice: in a RUN_DIR that already
  has a finished ``vae`` stage it does nothing, and ``--init-from OTHER_RUN`` copies OTHER_RUN's
  finished ``vae`` (and ``mdn``, if finished) states instead of training.
- here, ``gcrf-mdn`` (stage 2): the MDN over z. Phase 2 leaves the colour encoder untouched, so
  the codes z, and hence the MDN, are exactly VAE-MDN's: this is the ``mdn`` stage (and nothing
  to do when ``--init-from`` brought a finished one).
- ``gcrf_hoc``: phase 2, the HOC term (embedding network + the decoder's two top layers), and
  the inference model assembled from a run's finished stages.
- ``gcrf_hints``: the learned hint branch (Zhang et al. 2017) on a finished model.
- ``gcrf_export``: the file the app loads, and the weights tuned on the training split at export
  (β of the automatic solve, the strokes' weak unary, the pull toward the hint branch).
- ``gcrf_reveal``: revealed-point hints (Table 3's squares) and their solves on one image,
  shared by the export's tuning and the evaluation.
- ``gcrf_eval``: Table 2 (eob / variance / SSIM) and Table 3 (PSNR vs revealed points).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from engine.checkpoint import load_checkpoint
from engine.files import atomic_write

from ..loop import STATE_FILE, read_state
from .vae_mdn import MDNStageConfig, VAEStageConfig, train_mdn, train_vae


MODEL_FILE = "model.safetensors"
HOC_STAGE = "gcrf-hoc"
HINTS_STAGE = "gcrf-hints"


@dataclass
class GCRFUnaryStageConfig(VAEStageConfig):
    init_from: str = ""

    HELP: ClassVar[dict[str, str]] = {
        **VAEStageConfig.HELP,
        "init_from": "RUN_DIR of a VAE-MDN run: copy its finished vae (and mdn) stage instead of training",
    }


@dataclass
class GCRFMDNStageConfig(MDNStageConfig):
    pass


def _copy_atomic(src: Path, dst: Path) -> None:
    with open(src, "rb") as fh:
        atomic_write(dst, lambda out: shutil.copyfileobj(fh, out))


def adopt_stages(src_run: Path, run_dir: Path) -> list[str]:
    """Copy the finished ``vae`` (required) and ``mdn`` (if finished) states of another run."""
    src_run, run_dir = Path(src_run), Path(run_dir)
    copied = []
    for stage, required in (("vae", True), ("mdn", False)):
        src, dst = src_run / stage / STATE_FILE, run_dir / stage / STATE_FILE
        if dst.exists():
            continue  # already here (adopted before, or trained in this RUN_DIR): keep it
        if not src.exists() or not load_checkpoint(src).meta.get("finished"):
            if required:
                raise SystemExit(f"--init-from {src_run}: no finished vae stage there ({src}); run `divcolor-train vae` for it first")
            continue
        _copy_atomic(src, dst)
        log = src.parent / "log.jsonl"
        if log.exists():
            _copy_atomic(log, dst.parent / "log.jsonl")
        copied.append(stage)
    return copied


def _finished_step(run_dir: Path, stage: str, steps: int) -> int | None:
    """The step of a finished stage that already reached ``steps`` (nothing to do), else None."""
    path = Path(run_dir) / stage / STATE_FILE
    if not path.exists():
        return None
    meta = load_checkpoint(path).meta
    step = int(meta.get("step", 0))
    return step if meta.get("finished") and step >= steps else None


def train_unary(cfg: GCRFUnaryStageConfig) -> int:
    """Phase 1: the VAE (unary term) — adopted from ``--init-from`` or trained as ``vae``."""
    run_dir = Path(cfg.out)
    if cfg.init_from:
        if int(os.environ.get("RANK", "0")) != 0:
            return 0  # under torchrun only rank 0 copies (atomically); there is nothing to train
        copied = adopt_stages(Path(cfg.init_from), run_dir)
        ck = read_state(run_dir, "vae")
        what = ", ".join(copied) if copied else "nothing (already present)"
        print(f"gcrf-unary: adopted {what} from {cfg.init_from}; VAE config {ck.config}", file=sys.stderr)
        return int(ck.meta.get("step", 0))
    done = _finished_step(run_dir, "vae", cfg.steps)
    if done is not None:
        print(f"gcrf-unary: {run_dir / 'vae'} is finished (step {done}); nothing to do", file=sys.stderr)
        return done
    return train_vae(cfg)


def train_gcrf_mdn(cfg: GCRFMDNStageConfig) -> int:
    """Stage 2: the MDN over z of the (unchanged) phase-1 encoder = the ``mdn`` stage."""
    done = _finished_step(Path(cfg.out), "mdn", cfg.steps)
    if done is not None:  # e.g. adopted by gcrf-unary --init-from: skip encoding the dataset
        print(f"gcrf-mdn: {Path(cfg.out) / 'mdn'} is finished (step {done}); nothing to do", file=sys.stderr)
        return done
    return train_mdn(cfg)
