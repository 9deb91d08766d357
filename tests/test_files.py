"""engine.files.atomic_write: the one way divcolor writes files (whole or not at all, no litter)."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import files
from engine.files import TEMP_SUFFIX, atomic_write, stale_temps

ROOT = Path(__file__).resolve().parent.parent

_KILLED_WRITER = r"""
import sys, time
from engine.files import atomic_write

def write(fh):
    fh.write(b"N" * 200_000)
    fh.flush()
    print("half written", flush=True)
    time.sleep(120)  # the test kills us here
    fh.write(b"N" * 200_000)

atomic_write(sys.argv[1], write)
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(TEMP_SUFFIX) or n.endswith(".part") or n.endswith(".tmp"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("existing", [False, True])
def test_writer_killed_mid_file_leaves_old_file_or_nothing(tmp_path: Path, existing: bool) -> None:
    target = tmp_path / "result.png"
    if existing:
        target.write_bytes(b"old complete file")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"half written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if existing:
        assert target.read_bytes() == b"old complete file"
    else:
        assert not target.exists()
    leftovers = stale_temps(target)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".result.png.")  # hidden, recognisable
    atomic_write(target, b"new")  # the next write to the same target sweeps it
    assert target.read_bytes() == b"new"
    assert _temps(tmp_path) == []


def test_live_writers_temporaries_are_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    live = tmp_path / f".out.json.{os.getppid()}.abcd1234{TEMP_SUFFIX}"  # the test runner's parent: alive
    dead = tmp_path / f".out.json.{_dead_pid()}.abcd1234{TEMP_SUFFIX}"
    other = tmp_path / f".other.json.{_dead_pid()}.abcd1234{TEMP_SUFFIX}"  # another target's
    for p in (live, dead, other):
        p.write_bytes(b"partial")
    atomic_write(target, "{}")
    assert live.exists() and other.exists() and not dead.exists()
    old = os.path.getmtime(live) - files.STALE_SECONDS - 10
    os.utime(live, (old, old))  # a day-old temporary: its pid was surely reused
    atomic_write(target, "{}")
    assert not live.exists()


def test_failed_write_keeps_old_file_and_names_the_output(tmp_path: Path) -> None:
    target = tmp_path / "photo_vae-mdn_0.png"
    target.write_bytes(b"before")

    def disk_full(fh) -> None:
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", fh.name)

    with pytest.raises(OSError) as info:
        atomic_write(target, disk_full)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)
    assert "photo_vae-mdn_0.png" in str(info.value) and TEMP_SUFFIX not in str(info.value)
    assert target.read_bytes() == b"before"
    assert os.listdir(tmp_path) == [target.name]

    def broken(fh) -> None:
        raise RuntimeError("encoder bug")

    with pytest.raises(RuntimeError, match="encoder bug"):
        atomic_write(target, broken)
    assert os.listdir(tmp_path) == [target.name]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_modes_new_file_follows_umask_and_replaced_file_keeps_its_own(tmp_path: Path) -> None:
    new = atomic_write(tmp_path / "new.txt", "x")
    assert new.stat().st_mode & 0o777 == 0o666 & ~files.current_umask()
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    atomic_write(kept, "new")
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new"


def test_text_bytes_and_writer_content(tmp_path: Path) -> None:
    assert atomic_write(tmp_path / "a" / "b.txt", "é").read_bytes() == "é".encode()
    assert atomic_write(tmp_path / "c.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "d.bin", lambda fh: fh.write(b"w")).read_bytes() == b"w"


# --- every writer in divcolor goes through it ---------------------------------------------------


def _plant_stale(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    p = target.with_name(f".{target.name}.{_dead_pid()}.0badc0de{TEMP_SUFFIX}")
    p.write_bytes(b"left by a killed writer")
    return p


def test_every_writer_uses_atomic_write(tmp_path: Path, tiny_model) -> None:
    """Each saver sweeps a killed writer's temporary for its target: proof it is atomic_write."""
    from engine.checkpoint import load_checkpoint, save_checkpoint
    from engine.save import save_image
    from engine.strokes import Stroke, load_strokes, save_strokes
    from training.stages.gcrf import _copy_atomic

    stale = _plant_stale(tmp_path / "img.png")
    save_image(tmp_path / "img.png", np.zeros((4, 4, 3)))
    assert not stale.exists()

    stale = _plant_stale(tmp_path / "m.safetensors")
    save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, {"method": "test"})
    assert not stale.exists() and load_checkpoint(tmp_path / "m.safetensors").meta["method"] == "test"

    stale = _plant_stale(tmp_path / "s.json")
    save_strokes(tmp_path / "s.json", [Stroke((255, 0, 0), 3.0, ((1.0, 1.0), (2.0, 2.0)))])
    assert not stale.exists() and len(load_strokes(tmp_path / "s.json")) == 1

    stale = _plant_stale(tmp_path / "copy" / "state.safetensors")
    _copy_atomic(tiny_model, tmp_path / "copy" / "state.safetensors")
    assert not stale.exists()
    assert (tmp_path / "copy" / "state.safetensors").read_bytes() == Path(tiny_model).read_bytes()

    from divcolor_gui.document import write_project

    stale = _plant_stale(tmp_path / "p.divcolor")
    write_project(tmp_path / "p.divcolor", {"a": 1})
    assert not stale.exists() and (tmp_path / "p.divcolor").read_text().strip().startswith("{")
    assert _temps(tmp_path) == [] and _temps(tmp_path / "copy") == []


def test_no_other_module_renames_files_into_place() -> None:
    """One implementation: nothing else in the packages writes a temporary file and renames it
    into place by hand (moving a finished file aside, or a probe file, is not that)."""
    pattern = re.compile(r"os\.(replace|rename)\(\s*\w*tmp\w*\s*,|\.(replace|rename)\(\s*\w*\s*\)|NamedTemporaryFile\(")
    offenders = []
    for pkg in ("engine", "training", "divcolor_gui"):
        for f in (ROOT / pkg).rglob("*.py"):
            if f == ROOT / "engine" / "files.py":
                continue
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []


def test_sweep_unfinished_takes_every_dead_writers_temporary_in_the_folder(tmp_path: Path) -> None:
    """The CLI's and the app's sweep: other targets' part files go too, a live writer's stays."""
    dead = [_plant_stale(tmp_path / "a.png"), _plant_stale(tmp_path / "b.tif")]
    live = tmp_path / f".c.png.{os.getppid()}.abcd1234{TEMP_SUFFIX}"
    live.write_bytes(b"being written")
    (tmp_path / "photo.png").write_bytes(b"a user's file")
    assert files.sweep_unfinished(tmp_path) == 2
    assert not any(p.exists() for p in dead) and live.exists() and (tmp_path / "photo.png").exists()
    assert files.sweep_unfinished(tmp_path / "missing") == 0


def test_an_export_from_the_app_sweeps_what_a_killed_export_left(qtbot, tmp_path: Path, tiny_model) -> None:
    """Issue 28 item 6: the app killed during an export left ``.x.png.<pid>….divcolor-part``; the
    next export into that folder, of any name, removes it (before: only a write to ``x.png`` did)."""
    import shutil

    from engine.colorizer import Colorizer
    from engine.save import save_image
    from divcolor_gui.session import Session

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / "vae_mdn_general.safetensors")
    photo = tmp_path / "street.png"
    save_image(photo, np.tile(np.linspace(0.2, 0.8, 48, dtype=np.float32), (32, 1)))
    out = tmp_path / "exports"
    stale = _plant_stale(out / "earlier_colorized.png")
    s = Session(Colorizer(device="cpu", model_dirs=[models]))
    try:
        s.set_params(seed=0, n=1, temperature=1.0)
        with qtbot.waitSignal(s.models_changed, timeout=600_000):
            s.refresh_models()
        with qtbot.waitSignal(s.ready, timeout=600_000):
            s.open_photo(photo)
        qtbot.waitUntil(lambda: s.is_idle() and s.doc.base is not None, timeout=600_000)
        with qtbot.waitSignal(s.exported, timeout=600_000):
            s.export(out / "street_colorized.png")
    finally:
        s.close()
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["street_colorized.png"]
