"""The GPU recipe is run rarely and on a borrowed machine: a dry run on the CPU (two steps per
stage, a few images, the paper preset's shapes) keeps every command in it valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import synthetic_images, write_shard

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_recipe_dry_run_trains_exports_and_evaluates_every_model(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("natural64", "lfw64"):
        write_shard(data / f"{name}_train_00.npz", synthetic_images(12, seed=1))
        write_shard(data / f"{name}_test_00.npz", synthetic_images(3, seed=2))
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "PY": sys.executable, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", str(ROOT / "training/recipes/gpu_all.sh"), str(data), str(out)],
                       env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    models = out / "models"
    # both backbones; the heads of the general family (the faces' heads run the same commands)
    names = ["backbone_general", "backbone_faces", "vae_mdn_general", "gcrf_general", "pic_general"]
    for name in names:
        assert (models / f"{name}.safetensors").stat().st_size > 0, name

    from engine.colorizer import load_model

    heads = [n for n in names if not n.startswith("backbone")]
    for name in heads:
        model = load_model(models / f"{name}.safetensors", [models])
        assert model.cfg.backbone, f"{name} was not trained on a backbone"
        assert json.loads((models / f"{name}_eval.json").read_text())["error_of_best"] > 0
    gcrf = load_model(models / "gcrf_general.safetensors", [models])
    assert gcrf.has_hint_branch  # the gcrf-hints stage ran and was exported with the model
    from engine.checkpoint import load_checkpoint

    meta = load_checkpoint(models / "gcrf_general.safetensors").meta
    assert meta["stroke_tuning"]["images"] == 2  # --tune-images
    assert "(2 images)" in meta["hint_tuning"]["data"]  # --hint-tune-images: the pull toward the branch, in the file
    assert meta["config"]["hint_unary"] == meta["hint_tuning"]["hint_unary"] == gcrf.cfg.hint_unary
    assert meta["beta_tuning"]["images"] == 2 and gcrf.cfg.beta_auto == meta["beta_tuning"]["best"]
    assert load_checkpoint(models / "pic_general.safetensors").meta["sampling"]["images"] == 2  # calibrated on 2
    # the paper preset's widths, not the CPU ones
    vae = load_model(models / "vae_mdn_general.safetensors", [models])
    assert vae.cfg.width == 128
