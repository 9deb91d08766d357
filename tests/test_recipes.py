"""The GPU recipe is run rarely and on a borrowed machine: a dry run on the CPU (two steps per
stage, a few images, the shipped shapes) keeps every command in it valid, and its timed path
(probe, size, close an overrun) runs here on a tiny backbone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

from conftest import synthetic_images, write_shard

ROOT = Path(__file__).resolve().parents[1]


def _gpu_timed():
    """The recipe's driver module (a script in training/recipes, not a package)."""
    sys.path.insert(0, str(ROOT / "training/recipes"))
    import gpu_timed

    return gpu_timed


def test_gpu_recipe_dry_run_trains_and_exports_every_model(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("natural64", "lfw64"):
        write_shard(data / f"{name}_train_00.npz", synthetic_images(12, seed=1))
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "PY": sys.executable, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", str(ROOT / "training/recipes/gpu_all.sh"), str(data), str(out)],
                       env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    models = out / "models"
    # one backbone (natural photos and faces together) under every head of both families
    heads = ["vae_mdn_general", "pic_general", "gcrf_general", "vae_mdn_faces", "gcrf_faces"]
    plan = json.loads((models / "plan.json").read_text())
    assert all(rec.get("ok", True) and "skipped" not in rec for rec in plan), plan

    from engine.checkpoint import load_checkpoint
    from engine.colorizer import load_model

    bb = load_checkpoint(models / "backbone_wide.safetensors")
    from training.stages.backbone import BackboneStageConfig

    assert bb.config["width"] == BackboneStageConfig.PRESETS["paper"]["width"]  # the paper preset's, not the CPU one
    assert bb.config["encoder"] == "lite0"  # the decoder over the pretrained encoder
    assert [s["path"] for s in bb.meta["data"]["sets"]] == ["natural64", "lfw64"]
    for name in heads:
        model = load_model(models / f"{name}.safetensors", [models])
        assert model.cfg.backbone == bb.meta["digest"], f"{name} was not trained on the shared backbone"
    gcrf = load_model(models / "gcrf_general.safetensors", [models])
    assert gcrf.has_hint_branch  # the gcrf-hints stage ran and was exported with the model
    meta = load_checkpoint(models / "gcrf_general.safetensors").meta
    assert meta["stroke_tuning"]["images"] == 2  # --tune-images
    assert meta["beta_tuning"]["images"] == 2 and gcrf.cfg.beta_auto == meta["beta_tuning"]["best"]
    assert load_checkpoint(models / "pic_general.safetensors").meta["sampling"]["images"] == 2  # calibrated on 2

    # packed for the trip back: parts of at most 15 MiB that rejoin into the same files
    pack = _gpu_timed().pack
    parts = pack(models, tmp_path / "back", part_mib=0.5)
    assert len(parts) > 1 and all(p.stat().st_size <= 2**19 for p in parts)
    import io
    import tarfile

    joined = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(joined), mode="r:gz") as tar:
        got = tar.getnames()
        assert tar.extractfile("backbone_wide.safetensors").read() == (models / "backbone_wide.safetensors").read_bytes()
    assert got[0] == "backbone_wide.safetensors" and set(got) >= {f"{n}.safetensors" for n in heads}
    small = pack(models, tmp_path / "small", part_mib=0.5, total_mib=(models / "backbone_wide.safetensors").stat().st_size / 2**20 * 1.05)
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in small)), mode="r:gz") as tar:
        assert [n for n in tar.getnames() if n.endswith(".safetensors")] == ["backbone_wide.safetensors"]


def test_the_default_recipes_chain_backbone_and_heads_on_the_encoder(tmp_path):
    """With a stand-in trainer: each family's backbone is exported where its heads look for it,
    the heads train in the backbone's run directory, and the shipped names are written in place."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "fake-train"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{log}"\n')
    fake.chmod(0o755)
    env = {**os.environ, "TRAIN": str(fake), "DATA": str(tmp_path / "data"), "RUNS": str(tmp_path / "runs")}
    for script in ("backbone_defaults.sh", "vae_mdn_defaults.sh"):
        for family in ("general", "faces"):
            r = subprocess.run(["bash", str(ROOT / "training/recipes" / script), family], env=env,
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
    calls = [c.split() for c in log.read_text().splitlines()]
    arg = lambda c, flag: c[c.index(flag) + 1] if flag in c else None
    dests = [arg(c, "--dest") for c in calls if c[0] == "export"]
    assert dests == ["resources/models/backbone_general_lite0.safetensors", "resources/models/backbone_faces_lite0.safetensors",
                     "resources/models/vae_mdn_general.safetensors", "resources/models/vae_mdn_faces.safetensors"]
    faces_bb = next(c for c in calls if c[0] == "backbone" and arg(c, "--data").endswith("lfw64"))
    assert arg(faces_bb, "--init") == dests[0]  # faces start from the general decoder
    vaes = [c for c in calls if c[0] == "vae"]
    assert [arg(c, "--backbone-file") for c in vaes] == dests[:2]
    assert arg(vaes[0], "--data") == f"{tmp_path / 'data'}/natural64,{tmp_path / 'data'}/natural128*4"  # the weighted mix
    assert all(arg(c, "--method") == "vae-mdn" for c in calls if c[0] == "export" and "vae_mdn" in arg(c, "--dest"))
    runs = {arg(c, "--out") for c in calls if c[0] in ("backbone", "vae", "mdn") and "general" in arg(c, "--out")}
    assert runs == {str(tmp_path / "runs" / "general")}
    general_evals = [c for c in calls if c[0] == "eval" and "natural128" in arg(c, "--data")]
    assert all(arg(c, "--limit") == "200" for c in general_evals) and len(general_evals) == 2


def _timed_stage(tiny_data, budget_s, monkeypatch, tmp_path, fast_probe=False):
    """One tiny backbone stage through the GPU recipe's timed path (probe, size, train, close)."""
    gpu_timed = _gpu_timed()
    monkeypatch.setenv("DIVCOLOR_CACHE", str(tmp_path / "cache"))
    if fast_probe:  # the probe measured a speed the stage then does not keep up
        monkeypatch.setattr(gpu_timed, "seconds_per_step", lambda log: 1e-4)
        # and took no time: however slow this machine's probe was, the whole budget is left to
        # size the stage from (the training loop keeps the real clock for --max-minutes)
        monkeypatch.setattr(gpu_timed, "time", types.SimpleNamespace(time=lambda: 0.0))
    st = gpu_timed.Stage("backbone", "bb", ["--data", tiny_data, "--width", "8", "--blocks-s4", "1", "--blocks-s8", "1",
                                            "--blocks-dec", "1", "--warmup", "2"], share=1.0, cap=100000)
    plan = gpu_timed.Plan(600, tmp_path)
    ok = gpu_timed.train_stage(st, plan, tmp_path / "runs", ["--device", "cpu", "--threads", "1", "--batch-size", "4"],
                               budget_s, dry=False, probe=4)
    from training.loop import read_state

    return ok, plan.record[-1], read_state(tmp_path / "runs" / "bb", "backbone", need_finished=False).meta


def test_timed_stage_sizes_its_steps_from_the_probe_and_finishes(tiny_data, monkeypatch, tmp_path):
    ok, rec, meta = _timed_stage(tiny_data, 8.0, monkeypatch, tmp_path)
    assert ok and not rec["closed_early"]
    assert 4 < rec["steps"] < 100000  # sized from the measured speed, not the cap
    assert meta["finished"] and meta["step"] == rec["steps"] == rec["reached"]


def test_timed_stage_that_overruns_its_share_is_closed_where_it_is(tiny_data, monkeypatch, tmp_path):
    ok, rec, meta = _timed_stage(tiny_data, 1.0, monkeypatch, tmp_path, fast_probe=True)
    assert ok and rec["closed_early"]
    assert meta["finished"] and 4 < meta["step"] == rec["reached"] < rec["steps"]  # the next stage can use it


def test_a_stage_that_crashes_fails_alone_and_the_lease_goes_on(monkeypatch, capsys):
    """On the first GPU lease an export's RuntimeError ended the whole driver."""
    gpu_timed = _gpu_timed()

    def boom(words):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(gpu_timed, "_cli_main", boom)
    assert gpu_timed.cli(["export", "--out", "x"]) == 1
    assert "same device" in capsys.readouterr().err
    monkeypatch.setattr(gpu_timed, "_cli_main", lambda words: (_ for _ in ()).throw(SystemExit("run vae first")))
    assert gpu_timed.cli(["mdn"]) == 1
