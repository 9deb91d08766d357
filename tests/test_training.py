import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.errors import DataError
from training.cli import main
from training.data import load_lab, shard_paths

from conftest import TINY_PIC, TINY_VAE, synthetic_images, write_shard


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


def test_a_data_mix_weights_its_sets_and_a_head_trains_on_it(tiny_data, tmp_path):
    """``--data a,b*3``: b drawn three times as often (the same images, held once), the run
    records the mix, and a bad weight is one sentence before any work."""
    from training.data import describe, load_parts, mix

    write_shard(tmp_path / "small_train_00.npz", synthetic_images(5, seed=7))
    other = str(tmp_path / "small")
    assert mix(f"{tiny_data}, {other}*3") == [(tiny_data, 1), (other, 3)]
    parts = load_parts(f"{tiny_data},{other}*3", "train", 32)
    assert [len(p) for p in parts] == [24, 5, 5, 5] and parts[1] is parts[2] is parts[3]
    both = load_lab(f"{tiny_data},{other}*3", "train", 32)  # an export's tuning images: each set once
    assert len(both) == 29 and torch.equal(both.L[24:], parts[1].L)
    d = describe(f"{tiny_data},{other}*3", "train", 39)
    assert d["path"] == "tiny,small*3" and d["images"] == 39 and [s["weight"] for s in d["sets"]] == [1, 3]

    run = tmp_path / "run"
    assert _vae(f"{tiny_data},{other}*3", run, 2) == 0
    meta = _state(run, "vae").meta
    assert meta["data"]["path"] == "tiny,small*3" and meta["data"]["images"] == 39
    assert main(["mdn", "--data", f"{tiny_data},{other}*3", "--out", str(run), "--steps", "2", "--batch-size", "8"]) == 0
    assert main(["vae", "--data", f"{tiny_data},{other}*x", "--out", str(tmp_path / "bad"), "--steps", "2", *TINY_VAE]) == 2
    assert not (tmp_path / "bad" / "vae").exists()


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


def test_training_time_and_machine_add_up_over_resumes_and_reach_the_export(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert _vae(tiny_data, run, 4, "--stop-after", "2") == 0
    first = _state(run, "vae").meta["time"]
    assert first["train_seconds"] > 0 and first["threads"] >= 1 and "cores" in first["machine"]
    assert _vae(tiny_data, run, 4) == 0
    total = _state(run, "vae").meta["time"]["train_seconds"]
    assert total > first["train_seconds"]  # the second run adds its own time to the first's
    assert main(["mdn", "--data", tiny_data, "--out", str(run), "--batch-size", "8", "--steps", "2"]) == 0
    assert main(["export", "--out", str(run)]) == 0
    took = load_checkpoint(run / "model.safetensors").meta["time"]
    assert took["vae"]["train_seconds"] == total and took["mdn"]["train_seconds"] >= 0  # (2 tiny steps: ~ms)

    from training.results import _time_info

    assert any(x.startswith("time.vae.train_seconds") for x in _time_info({"time": took}))


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
    assert main(["export", "--out", str(run), "--half", "--dest", str(tmp_path / "half.safetensors")]) == 0
    half = load_checkpoint(tmp_path / "half.safetensors").tensors
    assert {v.dtype for v in half.values() if v.is_floating_point()} == {torch.float16}  # the statistics too
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


# A child process that runs `divcolor-train` and SIGKILLs itself at an exact point: after logging
# step K (mid-epoch: the work since the last save is lost) or halfway through writing the K-th
# state file (the temporary is left half-written). Deterministic, unlike a kill from outside.
_KILLED_CHILD = r"""
import os, signal, sys
import engine.checkpoint as C
import training.loop as L
mode, k = sys.argv[1], int(sys.argv[2])
if mode == "after-log":
    log = L.Logger.log
    def killing_log(self, step, record):
        log(self, step, record)
        if step == k:
            os.kill(os.getpid(), signal.SIGKILL)
    L.Logger.log = killing_log
else:
    save_file, calls = C.save_file, []
    def killing_save_file(tensors, path, metadata=None):
        calls.append(path)
        save_file(tensors, path, metadata=metadata)
        if len(calls) == k:
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    C.save_file = killing_save_file
from training.cli import main
sys.exit(main(sys.argv[3:]))
"""

KILL_STEPS = 8  # 24 images in batches of 8: three steps per epoch, so step 5 is mid-epoch


def _vae_argv(data, run, steps):
    return ["vae", "--data", data, "--out", str(run), "--steps", str(steps), "--checkpoint-minutes", "0",
            *TINY_VAE, "--threads", "1"]


def _run_killed(data, run, mode, k, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, mode, str(k), *_vae_argv(data, run, KILL_STEPS)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]  # it really died by SIGKILL, not by finishing


def _assert_bit_exact(a, b):
    assert a.meta["step"] == b.meta["step"] and a.meta["finished"] and b.meta["finished"]
    assert set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted")
    assert main(_vae_argv(tiny_data, run, KILL_STEPS)) == 0
    return _state(run, "vae")


@pytest.mark.parametrize("mode", ["after-log", "mid-write"])
def test_run_killed_resumes_to_the_same_parameters(tiny_data, tmp_path, capsys, uninterrupted, mode):
    """SIGKILL mid-epoch (after step 5's log line, before its save) or halfway through writing
    the 5th state file: the same command resumes, and the result equals an uninterrupted run
    bit for bit (CPU, same seed)."""
    run = tmp_path / "killed"
    _run_killed(tiny_data, run, mode, 5, tmp_path)
    stage = run / "vae"
    if mode == "mid-write":
        assert not (stage / "state.safetensors").exists()  # moved aside as the fallback, new one cut short
        assert load_checkpoint(stage / "state.prev.safetensors").meta["step"] == 4
    else:
        assert _state(run, "vae").meta["step"] == 4
    assert main(_vae_argv(tiny_data, run, KILL_STEPS)) == 0
    err = capsys.readouterr().err
    assert "resuming vae from step 4" in err
    if mode == "mid-write":
        assert "state.safetensors is missing (the run was stopped while saving); resuming from the previous state" in err
    _assert_bit_exact(_state(run, "vae"), uninterrupted)
    steps = [json.loads(x)["step"] for x in (stage / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, KILL_STEPS + 1))  # step 5's line from before the kill is not doubled
    assert sorted(p.name for p in stage.iterdir()) == ["log.jsonl", "state.prev.safetensors", "state.safetensors"]


def test_damaged_last_state_falls_back_to_the_previous_one(tiny_data, tmp_path, capsys, uninterrupted):
    run = tmp_path / "r"
    assert main([*_vae_argv(tiny_data, run, KILL_STEPS), "--stop-after", "5"]) == 0
    state = run / "vae" / "state.safetensors"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) - 100])  # a disk that lost the file's end
    capsys.readouterr()
    assert main(_vae_argv(tiny_data, run, KILL_STEPS)) == 0
    err = capsys.readouterr().err
    assert "vae: state.safetensors is damaged (" in err and "resuming from the previous state (state.prev.safetensors, step 4)" in err
    _assert_bit_exact(_state(run, "vae"), uninterrupted)
    assert (run / "vae" / "state.damaged.safetensors").exists()  # kept for a post-mortem


def test_both_states_damaged_says_how_to_start_over(tiny_data, tmp_path, capsys):
    run = tmp_path / "r"
    assert main([*_vae_argv(tiny_data, run, 4), "--stop-after", "2"]) == 0
    for name in ("state.safetensors", "state.prev.safetensors"):
        (run / "vae" / name).write_bytes(b"\0" * 100)
    capsys.readouterr()
    assert main(_vae_argv(tiny_data, run, 4)) == 2
    err = capsys.readouterr().err
    assert f"Cannot resume {run / 'vae'}" in err and f"delete {run / 'vae'} to start this stage over" in err


def test_resuming_with_other_model_settings_says_so(tiny_data, tmp_path, capsys):
    run = tmp_path / "r"
    assert _vae(tiny_data, run, 4, "--stop-after", "2") == 0
    capsys.readouterr()
    assert _vae(tiny_data, run, 4, "--width", "8") == 2
    assert "was started with other settings: --width 4 (now 8)" in capsys.readouterr().err


def test_run_killed_from_outside_resumes(tiny_data, tmp_path):
    """SIGKILL from outside at whatever point the run has reached: the same command finishes."""
    import signal
    import time

    from training.loop import recover_state

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
    step = recover_state(run / "vae", repair=False).meta["step"]  # the last state, or the one before if cut short
    assert step >= 1
    assert _vae(tiny_data, run, step + 2) == 0
    assert _state(run, "vae").meta["step"] == step + 2
    assert not [p for p in (run / "vae").iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_polite_kill_saves_the_step_reached_and_rerunning_resumes(tiny_data, tmp_path, sig):
    """SIGTERM (the end of a session, a scheduler) or Ctrl+C mid-run: the step is finished and
    saved, not lost back to the last periodic save (here there is none: an hour apart)."""
    import json
    import signal
    import time

    from training.loop import recover_state

    run = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "training.cli", "vae", "--data", tiny_data, "--out", str(run), "--steps", "100000",
           "--checkpoint-minutes", "60", *TINY_VAE, "--threads", "1"]
    # A suite started in the background by a shell without job control inherits SIGINT ignored,
    # and an ignored signal stays ignored (the stop request respects that, as nohup needs): give
    # the run the default a terminal would, so the test does not hang there.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = run / "vae" / "log.jsonl"
    deadline = time.monotonic() + 900

    def logged_steps() -> int:
        try:
            return len([line for line in log.read_text().splitlines() if '"loss"' in line])
        except FileNotFoundError:
            return 0

    while time.monotonic() < deadline and logged_steps() < 3 and proc.poll() is None:
        time.sleep(0.1)
    assert logged_steps() >= 3, "the run never got going"
    assert not (run / "vae" / "state.safetensors").exists()  # nothing saved yet
    proc.send_signal(getattr(signal, sig))
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 128 + getattr(signal, sig), err
    state = recover_state(run / "vae", repair=False)
    last_logged = max(json.loads(line)["step"] for line in log.read_text().splitlines() if '"loss"' in line)
    assert state.meta["step"] >= last_logged >= 3 and not state.meta["finished"]
    assert f"stopped by {sig} at step {state.meta['step']}" in err and "rerun the same command" in err
    assert _vae(tiny_data, run, state.meta["step"] + 2) == 0  # and it goes on from there
    assert _state(run, "vae").meta["step"] == state.meta["step"] + 2


def test_the_stop_request_leaves_ignored_signals_ignored_and_restores_handlers():
    """Under nohup SIGHUP is ignored and must stay so (a closed terminal is not a request to stop)."""
    import signal

    from training.loop import StopRequest

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == stop._note
            signal.raise_signal(signal.SIGTERM)
            assert stop.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    finally:
        signal.signal(signal.SIGHUP, before[signal.SIGHUP])


# --- bad settings: one sentence naming the value and the fix, exit code 2, no traceback -------

def _bad_inputs(tmp_path, tiny_data):
    fake = tmp_path / "fake.npz"
    fake.write_text("this is not a zip file\n")
    real = Path(tiny_data + "_train_00.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    import numpy as np

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, pixels=np.zeros(3))
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"fake": str(fake), "cut": str(cut), "foreign": str(foreign), "empty": str(empty), "file": str(a_file)}


BAD_SETTINGS = [
    # (flags replacing the defaults, text the one-line message must contain)
    (["--data", "/nonexistent/photos"], "--data /nonexistent/photos"),
    (["--data", "{tmp}/nope"], "no shards named nope_<split>_*.npz"),
    (["--data", "{empty}"], "no images found"),
    (["--data", "{fake}"], "fake.npz is not an image shard: it is a text file, while a shard (.npz) is a zip archive"),
    (["--data", "{cut}"], "cut.npz is not a readable image shard"),
    (["--data", "{foreign}"], "not a divcolor shard"),
    (["--data", "{file}"], "is a file, not a folder of images"),
    (["--batch-size", "0"], "--batch-size 0 is out of range: it must be between 1 and"),
    (["--batch-size", "500"], "--batch-size 500 needs at least 500 training images, but the data has 24; lower --batch-size"),
    (["--steps", "-5"], "--steps -5 is out of range"),
    (["--steps", "0"], "--steps 0 is out of range"),
    (["--lr", "-0.001"], "--lr -0.001 is out of range: it must be greater than 0"),
    (["--lr", "nan"], "--lr nan is out of range"),
    (["--kl-weight", "inf"], "--kl-weight inf is out of range"),
    (["--device", "tpu"], "--device 'tpu' is not a device"),
    (["--out", "{file}"], "is a file; give a directory"),
    (["--seed", str(2**70)], f"--seed {2**70} is out of range"),
    (["--log-every", "0"], "--log-every 0 is out of range"),
    (["--width", "0"], "--width 0 is out of range"),
    (["--width", str(10**6)], "--width 1000000 is out of range"),
    (["--dropout", "1.5"], "--dropout 1.5 is out of range"),
    (["--threads", "-1"], "--threads -1 is out of range"),
    (["--checkpoint-minutes", "-1"], "--checkpoint-minutes -1 is out of range"),
    (["--limit", "-3"], "--limit -3 is out of range"),
]


@pytest.mark.parametrize("flags, message", BAD_SETTINGS)
def test_bad_settings_get_one_sentence_and_exit_code_2(tiny_data, tmp_path, capsys, flags, message):
    paths = {**_bad_inputs(tmp_path, tiny_data), "tmp": str(tmp_path)}
    flags = [f.format(**paths) for f in flags]
    message = message.format(**paths)
    base = {"--data": tiny_data, "--out": str(tmp_path / "run"), "--steps": "2", **dict(zip(TINY_VAE[::2], TINY_VAE[1::2]))}
    base.update(zip(flags[::2], flags[1::2]))
    argv = ["vae", *[x for kv in base.items() for x in kv]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "vae" / "state.safetensors").exists()


def test_pic_settings_that_describe_no_network(tiny_data, tmp_path, capsys):
    assert main(["pic", "--data", tiny_data, "--out", str(tmp_path), *TINY_PIC, "--subsample", "3"]) == 2
    assert "subsample 3 must be 1, 2, 4 or 8" in capsys.readouterr().err


def test_cuda_without_cuda_and_read_only_out(tiny_data, tmp_path, capsys, monkeypatch):
    import tempfile

    import torch

    if not torch.cuda.is_available():
        assert _vae(tiny_data, tmp_path / "r", 2, "--device", "cuda") == 2
        assert "--device cuda: no CUDA GPU is available here; use --device cpu" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root writes anywhere: make the write itself fail as it would for a user
        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        assert _vae(tiny_data, ro, 2) == 2
        assert f"--out {ro} cannot be written (Permission denied); choose a directory" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_eval_and_export_answer_bad_arguments(tiny_data, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "missing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert main(["eval", "--data", tiny_data, "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", "--data", tiny_data, "--out", str(tmp_path), "--samples", "0"])
    assert e.value.code == 2 and "argument --samples: 0 must be between 1 and 1000000000" in capsys.readouterr().err


def test_a_bad_setting_prints_no_traceback_from_the_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "training.cli", "vae", "--data", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "run"), "--batch-size", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("divcolor-train vae: --batch-size 0 is out of range: it must be between 1 and 65536 "
                                   "(the default is 64).")


# --- bad images: skipped, counted and named; too many stop the run ------------------------------

def _photo_folder(root, n_good, bad):
    from PIL import Image

    root.mkdir(parents=True)
    for i, img in enumerate(synthetic_images(n_good, size=16, seed=3)):
        Image.fromarray(img).save(root / f"good_{i:03d}.png")
    png = (root / "good_000.png").read_bytes()
    kinds = {"truncated": png[: len(png) // 2], "text": b"not an image at all\n", "empty": b""}
    for name, kind in bad:
        (root / name).write_bytes(kinds[kind])
    return root


def test_a_bad_image_in_a_folder_is_skipped_and_named(tmp_path, capsys):
    from training.data import describe, load_rgb

    folder = _photo_folder(tmp_path / "photos" / "train", 119, [("scan_042.jpg", "truncated")])
    rgb = load_rgb(tmp_path / "photos", "train", 16)
    assert rgb.shape == (119, 16, 16, 3)
    err = capsys.readouterr().err
    assert "skipping 1 of 120 images" in err and f"{folder / 'scan_042.jpg'}: " in err and "truncated" in err
    d = describe(tmp_path / "photos", "train", len(rgb))
    assert d["skipped_images"] == 1 and "scan_042.jpg" in d["skipped"][0]


def test_too_many_bad_images_stop_with_their_names(tmp_path):
    from training.data import load_rgb

    _photo_folder(tmp_path / "photos" / "train", 40, [("a.jpg", "truncated"), ("b.png", "text"), ("c.png", "empty")])
    with pytest.raises(DataError, match=r"3 of 43 images in .*photos could not be read \(7.0 %, more than the 1 % "
                                        r"divcolor skips\): .*a.jpg: .*b.png: .*c.png: .*Fix or remove them"):
        load_rgb(tmp_path / "photos", "train", 16)


def _shard_with_bad_image(path, n, bad_index):
    import io as _io

    import numpy as np
    from PIL import Image

    blobs = []
    for img in synthetic_images(n, size=16, seed=4):
        b = _io.BytesIO()
        Image.fromarray(img).save(b, "JPEG", quality=90)
        blobs.append(np.frombuffer(b.getvalue(), np.uint8))
    blobs[bad_index] = blobs[bad_index][: len(blobs[bad_index]) // 3]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    ids = np.array([f"img{i}".encode() for i in range(n)])
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, ids=ids)


def test_a_bad_image_in_a_shard_is_skipped_and_too_many_stop(tmp_path, capsys):
    from training.data import _decode_shard, load_rgb

    _shard_with_bad_image(tmp_path / "big_train_00.npz", 150, 17)
    assert load_rgb(tmp_path / "big", "train", 16).shape == (149, 16, 16, 3)
    assert "skipping 1 of 150 images" in capsys.readouterr().err
    assert len(_decode_shard(tmp_path / "big_train_00.npz")) == 149  # as the decode cache calls it
    _shard_with_bad_image(tmp_path / "small_train_00.npz", 24, 3)
    with pytest.raises(DataError, match=r"1 of 24 images .*small_train_00.npz\[3\] \(img3\): "):
        load_rgb(tmp_path / "small", "train", 16)


def test_training_on_a_folder_with_a_bad_image_logs_it(tmp_path, capsys):
    _photo_folder(tmp_path / "photos" / "train", 119, [("broken.jpg", "truncated")])
    run = tmp_path / "run"
    assert main(["vae", "--data", str(tmp_path / "photos"), "--out", str(run), "--steps", "1", "--size", "16", *TINY_VAE]) == 0
    assert "broken.jpg" in capsys.readouterr().err
    data = _state(run, "vae").meta["data"]
    assert data["skipped_images"] == 1 and "broken.jpg" in data["skipped"][0]
    first = json.loads((run / "vae" / "log.jsonl").read_text().splitlines()[0])
    assert first["event"] == "skipped_images" and "broken.jpg" in first["skipped"][0]


def test_too_many_bad_images_stop_the_cli_with_one_sentence(tmp_path, capsys):
    _photo_folder(tmp_path / "photos" / "train", 20, [("broken.jpg", "truncated")])
    assert main(["vae", "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--size", "16", *TINY_VAE]) == 2
    err = capsys.readouterr().err
    assert "1 of 21 images" in err and "broken.jpg" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("images, message", [
    (["a.png"], "divcolor-train vae: 1 training image (a folder without train/ and test/ keeps about 1 image in 10 for "
                "testing) is too few for the vae stage's colour statistics (a PCA over the training set, which needs at "
                "least 2 images that differ in colour), so the loss would be NaN or absurd at any --lr; add images to "
                "--data and rerun."),
    (["a.png", "b.png", "c.png"], "divcolor-train vae: 3 training images do not differ in colour, too little for the vae "
                                  "stage's colour"),
])
def test_too_few_images_for_the_statistics_say_so_not_lower_lr(tmp_path, capsys, images, message):
    """Issue 28 item 11: ``vae --data one_image_folder --batch-size 1`` said the loss became nan
    and to rerun with a lower --lr, which helps at no lr. (Identical images gave a loss of 1e25.)"""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:32, 0:32]
    photo = np.dstack([xx * 8 % 256, yy * 8 % 256, (xx + yy) * 4 % 256]).astype(np.uint8)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in images:  # these names all fall in the training part of the folder's fixed split
        Image.fromarray(photo).save(folder / name)
    run = tmp_path / "run"
    assert main(["vae", "--data", str(folder), "--out", str(run), "--steps", "3", *TINY_VAE, "--batch-size", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and "--lr (now" not in err and len(err.strip().splitlines()) == 1, err
    assert not (run / "vae" / "state.safetensors").exists()


def test_mdn_tune_objective_is_the_closest_decoded_mean_against_a_brute_force_sum(tiny_data, tmp_path):
    from training.losses import vae_loss
    from training.stages.vae_mdn import TuneStageConfig, load_vae, tune_losses

    run = tmp_path / "run"
    assert _vae(tiny_data, run, 2) == 0
    model, stats, _ = load_vae(run, torch.device("cpu"))
    model.eval()
    lab = load_lab(tiny_data, "train", model.cfg.size, 3)
    cfg = TuneStageConfig(out=str(run), data=tiny_data, every_weight=0.5, pi_weight=0.25, recon_weight=2.0)
    torch.manual_seed(0)
    loss, logged = tune_losses(model, lab.L, lab.ab, stats, cfg)
    # the same number, one image and one component at a time
    with torch.no_grad():
        feats, grey = model.grey_features(lab.L)
        log_pi, mu = model.mdn(feats)
        z, logvar = model.color_encoder(lab.ab)
        recon = float(vae_loss(model.decoder(z, feats, grey), lab.ab, z, logvar, stats, w_kl=0.0)[0])  # a batch mean
        total = 2.0 * recon * len(lab.L)
        for i in range(len(lab.L)):
            fi = [f[i:i + 1] for f in feats]
            errs = [float((model.decoder(mu[i, k:k + 1], fi, grey[i:i + 1]) - lab.ab[i:i + 1]).abs().mean())
                    for k in range(model.cfg.n_components)]
            best = min(errs)
            total += best + 0.5 * sum(errs) / len(errs) - 0.25 * float(log_pi[i, errs.index(best)])
    assert loss.item() == pytest.approx(total / len(lab.L), rel=1e-4)
    assert logged["best"] <= logged["top"]


def test_mdn_tune_trains_the_exported_parts_and_the_file_says_so(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert _vae(tiny_data, run, 2) == 0
    assert main(["mdn", "--data", tiny_data, "--out", str(run), "--batch-size", "8", "--steps", "2"]) == 0
    assert main(["export", "--out", str(run), "--dest", str(tmp_path / "before.safetensors")]) == 0
    tune = ["mdn-tune", "--data", tiny_data, "--out", str(run), "--batch-size", "4", "--lr", "1e-2"]
    assert main([*tune, "--steps", "1"]) == 0
    assert main([*tune, "--steps", "3"]) == 0  # resumes
    assert _state(run, "mdn-tune").meta["step"] == 3
    assert main(["export", "--out", str(run), "--dest", str(tmp_path / "after.safetensors")]) == 0
    before, after = load_checkpoint(tmp_path / "before.safetensors"), load_checkpoint(tmp_path / "after.safetensors")
    tuned = _state(run, "mdn-tune").tensors
    for part in ("grey_encoder", "decoder", "mdn"):
        keys = [k for k in after.tensors if k.startswith(part + ".") and after.tensors[k].is_floating_point()]
        assert keys and all(torch.equal(after.tensors[k], tuned[k]) for k in keys)
        assert any(not torch.equal(after.tensors[k], before.tensors[k]) for k in keys)
    assert after.meta["steps"]["mdn-tune"] == 3 and "mdn-tune" in after.meta["training"]
