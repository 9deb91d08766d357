"""Shared fixtures: offscreen Qt, tiny generated data shards, a tiny trained VAE-MDN."""

from __future__ import annotations

import io
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

# The ceiling of every wait in the tests (a signal, a condition, a worker's gate, a subprocess).
# Tests wait on events, never on the clock: this only ends a test that would otherwise hang, so
# it is far beyond what any machine needs (a busy 2-core one took 60 s for a 9 s wait).
WAIT_S = 600
WAIT_MS = WAIT_S * 1000

TINY_PIC = ["--size", "32", "--subsample", "2", "--embed-width", "4", "--embed-dim", "8", "--width", "8",
            "--n-blocks", "2", "--n-mix", "3", "--batch-size", "8", "--log-every", "1"]
TINY_VAE = ["--width", "4", "--latent-dim", "8", "--mdn-hidden", "16", "--batch-size", "8", "--log-every", "1"]


def two_region_grey(w: int = 120, h: int = 80) -> np.ndarray:
    """Dark left half, bright right half (a strong edge strokes must not cross), with texture."""
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.where(xx < w // 2, 0.25, 0.8) + 0.03 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    return np.clip(g, 0, 1).astype(np.float32)


@pytest.fixture
def photo_path(tmp_path):
    """A 120x80 two-region grey photo on disk (the GUI tests' default document)."""
    from engine.io import save_image

    p = tmp_path / "street.png"
    save_image(p, two_region_grey())
    return p


@pytest.fixture
def shown_dialogs(monkeypatch) -> list[tuple[str, str]]:
    """A message box nobody answers would hang the run: record (title, text) instead. GUI test
    modules make this autouse; tests may re-patch a box to answer it."""
    from PySide6.QtWidgets import QMessageBox

    shown: list[tuple[str, str]] = []
    for name in ("critical", "warning", "information"):
        monkeypatch.setattr(QMessageBox, name, lambda parent, title, text, *a, **k: shown.append((title, text)))
    return shown


def synthetic_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Colourful images with structure: a random background colour and a disc of another."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        cx, cy, r = rng.integers(16, 48, 2).tolist() + [rng.integers(8, 20)]
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        img = np.where(disc[..., None], fg, bg) * (0.6 + 0.4 * xx[..., None] / size)
        out[i] = img.clip(0, 255).astype(np.uint8)
    return out


def write_shard(path, images: np.ndarray) -> None:
    """The ../shared/data shard format: concatenated JPEGs + offsets."""
    blobs = []
    for img in images:
        b = io.BytesIO()
        Image.fromarray(img).save(b, "JPEG", quality=90, subsampling=0)
        blobs.append(np.frombuffer(b.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, labels=np.zeros(len(images), np.int32),
             ids=np.array([b"x"] * len(images)), source=np.array(b"synthetic"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_shard(d / "tiny_train_00.npz", synthetic_images(24, seed=1))
    write_shard(d / "tiny_test_00.npz", synthetic_images(6, seed=2))
    return str(d / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory):
    """A VAE-MDN trained for a few steps by the real stages and exported: the real file format."""
    from training.cli import main

    run = tmp_path_factory.mktemp("run")
    assert main(["vae", "--data", tiny_data, "--out", str(run), "--steps", "3", *TINY_VAE]) == 0
    assert main(["mdn", "--data", tiny_data, "--out", str(run), "--steps", "3", "--batch-size", "8", "--log-every", "1"]) == 0
    assert main(["export", "--out", str(run)]) == 0
    return run / "model.safetensors"


@pytest.fixture(scope="session")
def tiny_pic(tiny_data, tmp_path_factory):
    """A PIC run trained for a few steps by the real stage and exported (RUN_DIR/model.safetensors)."""
    from training.cli import main

    run = tmp_path_factory.mktemp("pic")
    assert main(["pic", "--data", tiny_data, "--out", str(run), "--steps", "3", *TINY_PIC]) == 0
    assert main(["export", "--out", str(run)]) == 0
    return run


@pytest.fixture
def colorizer(tiny_model):
    from engine.colorizer import Colorizer

    c = Colorizer(device="cpu", model_dirs=[])
    c.add_model(tiny_model)
    return c
