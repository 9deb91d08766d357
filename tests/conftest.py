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

TINY_PIC = ["--size", "32", "--subsample", "2", "--embed-width", "4", "--embed-dim", "8", "--width", "8",
            "--n-blocks", "2", "--n-mix", "3", "--batch-size", "8", "--log-every", "1"]
TINY_VAE = ["--width", "4", "--latent-dim", "8", "--mdn-hidden", "16", "--batch-size", "8", "--log-every", "1"]


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
