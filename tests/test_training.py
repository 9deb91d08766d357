import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint
from training.cli import main
from training.data import load_lab, shard_paths

from conftest import TINY_PIC, TINY_VAE, synthetic_images


def _vae(data, run, steps, *extra):
    return main(["vae", "--data", data, "--out", str(run), "--steps", str(steps), *TINY_VAE, *extra])


def _state(run, stage):
    return load_checkpoint(Path(run) / stage / "state.safetensors")


def test_data_reads_shards_and_folders(tiny_data, tmp_path):
    assert [p.name for p in shard_paths(tiny_data, "train")] == ["tiny_train_00.npz"]
    lab = load_lab(tiny_data, "train", 32)
    assert lab.L.shape == (24, 1, 32, 32) and lab.ab.shape == (24, 2, 32, 32)
    assert 0 <= lab.L.min() and lab.L.max() <= 100 and lab.ab.abs().max() <= 1
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "train").mkdir(parents=True)
    for i, img in enumerate(synthetic_images(3, size=80)):
        Image.fromarray(img[:, :70]).save(folder / "train" / f"{i}.png")
    assert load_lab(folder, "train", 64).L.shape == (3, 1, 64, 64)


def test_resume_gives_the_same_state_as_an_uninterrupted_run(tiny_data, tmp_path):
    assert _vae(tiny_data, tmp_path / "a", 4) == 0
    assert _vae(tiny_data, tmp_path / "b", 4, "--stop-after", "2") == 0  # interrupted after two steps ...
    assert not _state(tmp_path / "b", "vae").meta["finished"]
    assert _vae(tiny_data, tmp_path / "b", 4) == 0  # ... and the same command resumes
    a, b = _state(tmp_path / "a", "vae"), _state(tmp_path / "b", "vae")
    assert a.meta["step"] == b.meta["step"] == 4 and b.meta["finished"]
    for k in a.tensors:
        x, y = a.tensors[k].double(), b.tensors[k].double()
        assert (x - y).abs().max() <= 1e-4 * x.abs().max() + 1e-8, k  # float rounding only
    lines = (tmp_path / "b" / "vae" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    assert {"loss", "hist", "mah", "grad", "kl"} <= set(json.loads(lines[-1]))


def test_mdn_resume_and_export_and_eval(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _vae(tiny_data, run, 2) == 0
    mdn = ["mdn", "--data", tiny_data, "--out", str(run), "--batch-size", "8", "--log-every", "1"]
    assert main([*mdn, "--steps", "3"]) == 0
    assert main([*mdn, "--steps", "5"]) == 0
    assert _state(run, "mdn").meta["step"] == 5
    assert main(["export", "--out", str(run)]) == 0
    assert main(["eval", "--data", tiny_data, "--out", str(run), "--limit", "3"]) == 0
    result = json.loads((run / "eval.json").read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    assert result["samples"] == 5 and 0 < result["error_of_best"] < 2 and result["variance"] >= 0
    assert 0 < result["pairwise_ssim"] <= 1
    # re-export picks the eval up as the model's metrics
    assert main(["export", "--out", str(run)]) == 0
    assert load_checkpoint(run / "model.safetensors").meta["metrics"]["error_of_best"] == result["error_of_best"]


def test_mdn_before_vae_says_what_to_run(tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="divcolor-train vae"):
        main(["mdn", "--data", tiny_data, "--out", str(tmp_path / "empty")])


def test_kl_weight_enters_the_loss(tiny_data, tmp_path):
    """The first step's forward is the same for both runs (same seed), so the logged totals
    differ by exactly the KL term's weight change."""
    assert _vae(tiny_data, tmp_path / "a", 1, "--kl-weight", "0") == 0
    assert _vae(tiny_data, tmp_path / "b", 1, "--kl-weight", "10") == 0
    a, b = (json.loads((tmp_path / r / "vae" / "log.jsonl").read_text().splitlines()[0]) for r in "ab")
    assert a["kl"] == pytest.approx(b["kl"]) and b["kl"] > 0
    assert b["loss"] - a["loss"] == pytest.approx(10 * b["kl"], rel=1e-3)
    assert _state(tmp_path / "b", "vae").meta["stage_config"]["kl_weight"] == 10


def test_presets_and_generated_help(capsys):
    with pytest.raises(SystemExit):
        main(["vae", "--help"])
    out = capsys.readouterr().out
    assert "--latent-dim" in out and "--preset" in out and "cpu" in out and "paper" in out


def test_teardown_leaves_the_process_group(tmp_path):
    """A stage must leave its torchrun group before exit, or gloo's threads can abort the rank
    at interpreter shutdown (seen as a flaky torchrun run)."""
    import torch
    import torch.distributed as dist

    from training.loop import teardown_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    dist.all_reduce(torch.ones(3))
    teardown_distributed(finished=True)
    assert not dist.is_initialized()
    teardown_distributed(finished=True)  # outside torchrun: a no-op


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stage, flags", [("vae", TINY_VAE), ("pic", TINY_PIC)])
def test_torchrun_two_processes_on_cpu(tiny_data, tmp_path, stage, flags):
    """DDP through torchrun with the gloo backend: both ranks agree, rank 0 writes the state."""
    run = tmp_path / "ddp"
    port = _free_port()  # a fixed port can still be held by another run on the machine
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "training.cli", stage, "--data", tiny_data, "--out", str(run), "--steps", "2", *flags, "--batch-size", "4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = _state(run, stage)
    assert st.meta["step"] == 2 and st.meta["finished"]


def test_run_killed_mid_epoch_resumes(tiny_data, tmp_path):
    """SIGKILL while training: the last atomic checkpoint survives and the same command finishes."""
    import signal
    import time

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "training.cli", "vae", "--data", tiny_data, "--out", str(run), "--steps", "100000",
           "--checkpoint-minutes", "0", *TINY_VAE, "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "vae" / "state.safetensors"
    deadline = time.monotonic() + 900  # generous: a loaded machine can take long to reach step 1
    while time.monotonic() < deadline and not state.exists() and proc.poll() is None:
        time.sleep(0.2)
    assert state.exists(), "the training run never wrote its first checkpoint"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = _state(run, "vae").meta["step"]
    assert step >= 1
    assert _vae(tiny_data, run, step + 2) == 0
    assert _state(run, "vae").meta["step"] == step + 2
    assert not list((run / "vae").glob("*.tmp"))  # a half-written state from the kill is cleaned up
