"""`divcolor-train report` (curves to PNG, Pillow only) and TensorBoard logging beside the JSONL."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.report import PANEL_H, PANEL_W, SMOOTH, read_curves, render

from conftest import TINY_VAE


def _write_log(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _fake_run(run):
    vae = [{"step": s, "time": s * 0.1, "loss": 3000 * math.exp(-s / 40) + 5, "kl": 2 + math.sin(s / 5), "lr": 1e-3}
           for s in range(1, 201)]
    vae.insert(0, {"step": 0, "event": "skipped_images", "count": 1, "skipped": ["a.jpg: truncated"]})
    _write_log(run / "vae" / "log.jsonl", vae)
    (run / "vae" / "log.jsonl").open("a").write('{"step": 201, "loss": 1')  # a line cut short by a kill
    _write_log(run / "mdn" / "log.jsonl", [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "nan": float("nan")} for s in range(1, 51)])


def test_curves_are_read_per_stage_loss_first_lr_last(tmp_path):
    _fake_run(tmp_path)
    curves = read_curves(tmp_path)
    assert [(c.stage, c.name) for c in curves] == [("mdn", "loss"), ("mdn", "lr"), ("vae", "loss"), ("vae", "kl"), ("vae", "lr")]
    vae_loss = curves[2]
    assert vae_loss.steps == list(range(1, 201))  # the event line and the cut-short line are skipped
    assert read_curves(tmp_path / "vae")[0].name == "loss"  # a stage directory works too


def test_report_draws_every_curve(tmp_path, capsys):
    _fake_run(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    out = tmp_path / "report.png"
    assert capsys.readouterr().out.strip() == str(out)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (2 * PANEL_H, 3 * PANEL_W, 3)  # rows: mdn, vae; the widest row has three panels
    drawn = np.all(img == SMOOTH, axis=-1)
    for row, n in ((0, 2), (1, 3)):
        for col in range(3):
            panel = drawn[row * PANEL_H : (row + 1) * PANEL_H, col * PANEL_W : (col + 1) * PANEL_W]
            assert panel.sum() > (50 if col < n else -1) and (col < n or panel.sum() == 0), (row, col)


def test_render_keeps_flat_and_single_point_curves(tmp_path):
    _write_log(tmp_path / "s" / "log.jsonl", [{"step": 5, "loss": 2.0}])
    _write_log(tmp_path / "t" / "log.jsonl", [{"step": s, "loss": 1.0} for s in range(1, 30)])
    img = render(read_curves(tmp_path))
    assert img.size == (PANEL_W, 2 * PANEL_H)


def test_report_without_logs_says_what_to_do(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no training logs (log.jsonl) yet; train a stage with --out" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


class _FakeWriter:
    instances: list["_FakeWriter"] = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
        _FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


def test_tensorboard_gets_the_same_scalars_when_installed(tiny_data, tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    _FakeWriter.instances.clear()
    run = tmp_path / "run"
    argv = ["vae", "--data", tiny_data, "--out", str(run), "--steps", "4", *TINY_VAE]
    assert main([*argv, "--stop-after", "2"]) == 0
    assert main(argv) == 0
    first, resumed = _FakeWriter.instances
    assert first.log_dir == str(run / "vae" / "tensorboard") and first.purge_step is None and first.closed
    assert [(t, s) for t, _, s in first.scalars if t == "vae/loss"] == [("vae/loss", 1), ("vae/loss", 2)]
    assert resumed.purge_step == 3  # events of steps redone after the resume are dropped
    assert [s for t, _, s in resumed.scalars if t == "vae/loss"] == [3, 4]
    logged = [json.loads(x) for x in (run / "vae" / "log.jsonl").read_text().splitlines()]
    assert {t for t, _, _ in first.scalars} == {f"vae/{k}" for k in logged[0] if k not in ("step", "time")}


def test_without_tensorboard_training_logs_jsonl_only(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    run = tmp_path / "run"
    assert main(["vae", "--data", tiny_data, "--out", str(run), "--steps", "2", *TINY_VAE]) == 0
    assert (run / "vae" / "log.jsonl").exists() and not (run / "vae" / "tensorboard").exists()


def test_a_diverged_loss_says_how_to_resume(tmp_path):
    """Run the shared loop directly with a loss that turns NaN at step 3: one sentence, and the
    saved state is the last good one."""
    import torch

    from engine.errors import TrainingError
    from training.loop import LoopSpec, run_loop

    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(i):
        loss = net(torch.ones(1, 2)).sum() ** 2
        return (loss * float("nan") if i == 2 else loss), {}

    spec = LoopSpec(tmp_path, "toy", steps=10, log_every=1, checkpoint_minutes=0)
    with pytest.raises(TrainingError, match=r"toy: the loss became nan at step 3 \(training diverged\); rerun with a "
                                            r"lower --lr \(now 0.1\): it resumes from the last saved state, step 2"):
        run_loop(spec, {"net": net}, opt, step, {})
    from engine.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "toy" / "state.safetensors")  # non-finite weights would be refused here
    assert state.meta["step"] == 2
