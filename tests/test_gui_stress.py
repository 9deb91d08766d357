"""The app under stress (issue 15): big photos, closing mid-job, cancel, bad projects, crashes
and running out of memory — driven through the real main window, offscreen, with the tiny
models of conftest and generated photos. Nothing waits on the clock: slow jobs are fakes that
block on events, and the tests wait on signals and on the jobs registry.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.colorizer import Colorizer
from engine.io import load_photo, save_image
from engine.strokes import Stroke

import divcolor_gui.imaging as imaging
from divcolor_gui.autosave import find_recoveries
from divcolor_gui.errors import OUT_OF_MEMORY_TEXT, error_text, is_out_of_memory, user_facing
from divcolor_gui.jobs import running_jobs
from divcolor_gui.main_window import MainWindow
from divcolor_gui.settings import Settings

from conftest import WAIT_MS, WAIT_S, two_region_grey

WAIT = WAIT_MS  # a ceiling for waits on events, never asserted as a duration (conftest)
ROOT = Path(__file__).resolve().parent.parent
BUG_WORDS = ("Something went wrong", "Traceback", "RecursionError", "RuntimeError", "report this")


grey = two_region_grey


@pytest.fixture(autouse=True)
def dialogs(shown_dialogs):
    return shown_dialogs


@pytest.fixture
def settings_path(tmp_path) -> Path:
    return tmp_path / "config" / "settings.ini"


@pytest.fixture
def make_window(qtbot, settings_path, colorizer):
    made: list[MainWindow] = []

    def make(c=None, count: int = 2) -> MainWindow:
        win = MainWindow(colorizer=c if c is not None else colorizer, settings=Settings(settings_path))
        win.gallery.count.setValue(count)
        win.show()
        qtbot.waitExposed(win, timeout=WAIT)
        made.append(win)
        return win

    yield make
    import shiboken6

    for w in made:
        if not shiboken6.isValid(w):
            continue
        if w.isVisible():
            w.force_close = True
            w.close()
        w.deleteLater()


def open_and_wait(qtbot, win: MainWindow, path: Path) -> None:
    with qtbot.waitSignal(win.ready, timeout=WAIT):
        win.open_path(path, confirmed=True)
    qtbot.waitUntil(win.is_idle, timeout=WAIT)


def thumbs(win: MainWindow):
    return [t for g in win.gallery.groups.values() for t in g.thumbs]


def autosaves(settings_path: Path) -> list[Path]:
    return sorted((settings_path.parent / "autosave").glob("autosave-*.divcolor"))


def autosaved(qtbot, win: MainWindow, settings_path: Path) -> dict:
    """Wait for the debounced autosave to be written; its JSON."""
    qtbot.waitUntil(lambda: not win.autosave.pending and bool(autosaves(settings_path)), timeout=WAIT)
    (path,) = autosaves(settings_path)
    return json.loads(path.read_text())


# --- 1. big photos: a preview in the app, full size only at export ----------------------------


def test_big_photo_is_worked_on_as_a_preview_and_exported_at_full_size(qtbot, make_window, colorizer, tmp_path, monkeypatch):
    monkeypatch.setattr(imaging, "PREVIEW_PIXELS", 2400)  # a 240x160 photo counts as "big" here: 60x40
    big = tmp_path / "scan.png"
    save_image(big, grey(240, 160))
    win = make_window()
    open_and_wait(qtbot, win, big)
    photo = win.doc.photo
    assert isinstance(photo, imaging.PreviewPhoto)
    w, h = photo.size
    assert (w, h) == (60, 40) and photo.source.size == (240, 160)
    # nothing the app holds for the gallery or the canvas is at full size
    assert all(t.sample.colorization.rgb.shape[:2] == (h, w) for t in thumbs(win))
    assert win.canvas.current_rgb().shape[:2] == (h, w)
    # the preview's L is the full photo's, area-averaged (4x4 blocks here)
    full = load_photo(big)
    assert np.abs(photo.L - full.L.reshape(40, 4, 60, 4).mean(axis=(1, 3))).max() < 1e-3

    # the picked sample exports at full size: its chroma upsampled onto the original's own L,
    # strip by strip, equal to the engine's whole-image upsampling of the same chroma
    sample = win.doc.base
    out = tmp_path / "out.png"
    with qtbot.waitSignal(win.exported, timeout=WAIT):
        win.export_to(out)
    back = load_photo(out)
    exported = np.asarray(back.rgb)
    assert exported.shape[:2] == (160, 240)
    whole = colorizer.upsample(full, sample.ab_low[None])[0]
    assert np.abs(exported - whole).max() <= 1.5 / 255
    assert np.abs(back.L - full.L).max() < 1.0  # the luminance is the original's, not the preview's
    assert "240 × 160" in win.statusBar().currentMessage()

    # strokes are drawn on the preview, saved in full-resolution coordinates, and exported at full size
    sx, sy = 240 / w, 160 / h
    stroke = Stroke((30, 200, 40), 3.0, ((w * 0.2, h * 0.5), (w * 0.4, h * 0.5)))
    win.add_stroke(stroke)
    qtbot.waitUntil(win.is_idle, timeout=WAIT)
    shown = np.array(win.canvas.current_rgb())
    project = tmp_path / "scan.divcolor"
    assert win.save_project_to(project)
    saved = json.loads(project.read_text())["strokes"]["strokes"][0]
    assert saved["points"][0] == pytest.approx([w * 0.2 * sx, h * 0.5 * sy], abs=1e-3)
    assert saved["radius"] == pytest.approx(3.0 * (sx * sy) ** 0.5, abs=1e-3)
    with qtbot.waitSignal(win.exported, timeout=WAIT):
        win.export_to(out)
    painted = np.asarray(load_photo(out).rgb)
    assert painted.shape[:2] == (160, 240)
    small = np.asarray(imaging.thumbnail(painted, max(w, h)), np.float32) / 255
    assert np.abs(small - shown).mean() < 0.03  # the export is what the canvas showed, at full size
    assert painted[80, 60, 1] > painted[80, 60, 0]  # green where painted

    # reopening the project puts the strokes back on the preview where they were drawn
    other = make_window()
    with qtbot.waitSignal(other.ready, timeout=WAIT):
        other.open_path(project, confirmed=True)
    qtbot.waitUntil(other.is_idle, timeout=WAIT)
    back = other.doc.strokes[0]
    assert np.allclose(back.points, stroke.points, atol=1e-3) and back.radius == pytest.approx(3.0, abs=1e-3)


def test_small_photos_are_not_previewed(tmp_path):
    p = tmp_path / "small.png"
    save_image(p, grey(64, 48))
    photo = imaging.load_app_photo(p)
    assert not isinstance(photo, imaging.PreviewPhoto) and imaging.full_size(photo) == (64, 48)
    assert imaging.preview_size((8000, 6000)) == (1632, 1224)
    assert imaging.preview_size((8000, 6000))[0] * imaging.preview_size((8000, 6000))[1] <= imaging.PREVIEW_PIXELS


# --- 2. closing while jobs run ------------------------------------------------------------------


class _Field:
    """A stroke field whose solve is slow but honours cancel, like the engine's."""

    method = "levin"

    def __init__(self, started: threading.Event, tokens: list) -> None:
        self.started, self.tokens = started, tokens

    def propagate(self, strokes, base=None, cancel=None, progress=None):
        if not strokes:
            return None
        self.tokens.append(cancel)
        self.started.set()
        while not cancel.cancelled:
            threading.Event().wait(0.005)
        cancel.check()

    def attention(self, x, y):
        return None


def test_closing_during_generation_export_and_stroke_solve_cancels_them_without_a_trace(
    qtbot, make_window, photo_path, monkeypatch, dialogs, caplog, capfd
):
    import shiboken6

    import divcolor_gui.jobs as jobs_mod
    import divcolor_gui.session_export as session_mod

    win = make_window()
    open_and_wait(qtbot, win, photo_path)
    sampling, solving, exporting, release = (threading.Event() for _ in range(4))
    tokens: list = []

    def slow_sample(photo, method, n, seed, temperature, family="general", checkpoint=None, progress=None, cancel=None, **kw):
        tokens.append(cancel)
        sampling.set()
        while not cancel.cancelled:
            threading.Event().wait(0.005)
        cancel.check()

    def stuck_save(path, rgb, *a, **k):  # one long call that never looks at cancel
        exporting.set()
        release.wait(WAIT_S)
        return Path(path)

    monkeypatch.setattr(win.colorizer, "sample", slow_sample)
    monkeypatch.setattr(session_mod, "save_image", stuck_save)
    win.session.field = _Field(solving, tokens)
    win.session.field_state.state = "ready"
    caplog.set_level(logging.WARNING)
    exported: list[str] = []
    win.exported.connect(exported.append)

    win.export_to(photo_path.with_name("out.png"))  # (the result is current: straight to writing)
    win.add_stroke(Stroke((200, 40, 40), 3.0, ((10, 10), (30, 12))))
    win.act["generate"].trigger()
    for e in (sampling, solving, exporting):
        qtbot.waitUntil(e.is_set, timeout=WAIT)
    stuck = [j for j in list(jobs_mod._running) if j.name.startswith("Exporting")]
    win.force_close = True
    win.close()  # returns although the export is stuck: nothing waits for it
    assert exporting.is_set() and not release.is_set()
    assert len(tokens) == 2 and all(t.cancelled for t in tokens)
    assert "Exporting out.png" in running_jobs()
    # the window goes, and with it (as at interpreter exit) the stuck job's signal object
    win.deleteLater()
    qtbot.wait(10)
    for job in stuck:
        shiboken6.delete(job.signals)
    release.set()
    qtbot.waitUntil(lambda: not running_jobs(), timeout=WAIT)
    qtbot.wait(50)  # let any queued signal arrive
    gc.collect()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Signal source has been deleted" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not dialogs and not exported


def test_the_app_process_exits_although_a_job_ignores_cancel(tmp_path):
    """A stroke field stuck in one long call when the user quits: `divcolor` still exits at
    once (rc 0), says what it cancelled, prints no traceback and leaves no autosave behind."""
    photo = tmp_path / "p.png"
    save_image(photo, grey(64, 48))
    script = textwrap.dedent(f"""
        import sys, threading
        from pathlib import Path
        import engine.propagate as P
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
        from engine.colorizer import Colorizer
        from divcolor_gui import app
        from divcolor_gui.jobs import running_jobs
        from divcolor_gui.settings import Settings

        def stuck(self, *a, **k):
            print("solve started", flush=True)
            threading.Event().wait()  # never returns, never checks cancel
        P.LevinField.propagate = stuck

        def poll():
            wins = [w for w in QApplication.topLevelWidgets() if w.objectName() == "" and hasattr(w, "session")]
            if wins and any(n.startswith("field") for n in running_jobs()):
                wins[0].force_close = True
                wins[0].close()
            else:
                QTimer.singleShot(20, poll)
        app._application()  # timers need the QApplication that run() uses
        QTimer.singleShot(20, poll)
        code = app.run({str(photo)!r}, colorizer=Colorizer(device="cpu", model_dirs=[]),
                       settings=Settings(Path({str(tmp_path)!r}) / "s.ini"))
        print("not reached: the stuck job keeps the interpreter", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT_S, cwd=ROOT,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "solve started" in done.stdout and "not reached" not in done.stdout
    assert "Traceback" not in done.stderr and "field" in done.stderr
    assert not list((tmp_path / "autosave").glob("*.divcolor"))


# --- 3. cancel frees the UI; Generate then makes only what is missing -------------------------


def test_cancel_frees_the_ui_at_once_and_generate_makes_only_the_missing_samples(qtbot, make_window, photo_path, monkeypatch):
    win = make_window(count=4)
    open_and_wait(qtbot, win, photo_path)
    real = win.colorizer.sample
    calls: list[int] = []
    block, blocked = threading.Event(), threading.Event()
    block.set()

    def sample(photo, method, n, seed, temperature, family="general", checkpoint=None, progress=None, cancel=None, first=0, **kw):
        calls.append(first)
        if first >= 2 and block.is_set():
            blocked.set()
            while not cancel.cancelled:
                threading.Event().wait(0.005)
            cancel.check()
        return real(photo, method, n, seed, temperature, family, checkpoint, progress=progress, cancel=cancel, first=first, **kw)

    monkeypatch.setattr(win.colorizer, "sample", sample)
    win.gallery.seed.setValue(3)
    win.act["generate"].trigger()
    qtbot.waitUntil(lambda: blocked.is_set() and len(thumbs(win)) == 2, timeout=WAIT)
    kept = [t.sample.colorization for t in thumbs(win)]
    win.act["cancel"].trigger()
    # no waiting: the UI is free the moment Cancel returns
    assert not win.sampling.busy and win.act["generate"].isEnabled() and not win.act["cancel"].isEnabled()
    assert "cancelled" in win.gallery.banner.text().lower()
    qtbot.waitUntil(lambda: not running_jobs(), timeout=WAIT)

    block.clear()
    calls.clear()
    with qtbot.waitSignal(win.gallery_finished, timeout=WAIT):
        win.act["generate"].trigger()
    assert calls == [2, 3]  # samples 0 and 1 were finished before the cancel: reused, not redone
    assert [t.sample.ref.index for t in thumbs(win)] == [0, 1, 2, 3]
    assert all(t.sample.colorization is c for t, c in zip(thumbs(win), kept))
    # and they are the samples a fresh run makes (same seed, same set)
    again = real(win.doc.photo, "vae-mdn", 2, 3, 1.0, first=0)
    assert all(np.array_equal(a.rgb, c.rgb) for a, c in zip(again, kept))
    # a completed batch is not "reused" by a plain Generate: the next one runs afresh
    calls.clear()
    with qtbot.waitSignal(win.gallery_finished, timeout=WAIT):
        win.act["generate"].trigger()
    assert calls == [0, 1, 2, 3]


# --- 4. nested and malformed projects -------------------------------------------------------


def _variants(photo: Path) -> dict[str, str]:
    good = {"format": "divcolor-project", "version": 1, "photo": str(photo), "photo_relative": None, "sample": None,
            "gallery": {"seed": 0, "temperature": 1.0, "samples": 2, "family": "general", "checkpoint": None},
            "strokes": {"version": 1, "strokes": []}}

    def with_(path: tuple, value) -> str:
        d = json.loads(json.dumps(good))
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return json.dumps(d)

    deep = '{"format": "divcolor-project", "version": 1, "photo": "x", "strokes": ' + "[" * 100_000 + "]" * 100_000 + "}"
    return {
        "deeply nested": deep,
        "empty": "",
        "not JSON": "{'format': divcolor",
        "a list": "[1, 2, 3]",
        "another format": json.dumps({"format": "something-else"}),
        "newer version": with_(("version",), 99),
        "photo missing": with_(("photo",), str(photo.with_name("gone.png"))),
        "huge seed": with_(("gallery", "seed"), 10**30),
        "2000 samples": with_(("gallery", "samples"), 2000),
        "NaN temperature": with_(("gallery", "temperature"), float("nan")),
        "400-digit number": with_(("gallery", "seed"), 0).replace('"seed": 0', '"seed": ' + "9" * 400),
        "bad strokes": with_(("strokes",), {"version": 1, "strokes": [{"color": "reddish", "radius": -1, "points": [[1, 2]]}]}),
        "sample of the wrong type": with_(("sample",), "the third one"),
    }


def test_nested_and_malformed_projects_get_a_sentence_and_keep_the_document(qtbot, make_window, photo_path, tmp_path, dialogs):
    win = make_window()
    open_and_wait(qtbot, win, photo_path)
    win.add_stroke(Stroke((200, 40, 40), 3.0, ((10, 10), (30, 12))))
    qtbot.waitUntil(win.is_idle, timeout=WAIT)
    photo, strokes, base = win.doc.photo, list(win.doc.strokes), win.doc.base
    variants = _variants(photo_path)
    assert len(variants) >= 10
    for k, (what, text) in enumerate(variants.items()):
        p = tmp_path / f"bad{k}.divcolor"
        p.write_text(text)
        before = len(dialogs)
        win.open_path(p, confirmed=True)
        qtbot.waitUntil(lambda: len(dialogs) > before, timeout=WAIT)
        qtbot.waitUntil(lambda: not win.io.busy, timeout=WAIT)
        title, message = dialogs[-1]
        assert title == "Cannot open project", what
        assert not any(w in message for w in BUG_WORDS), (what, message)
        assert p.name in message, (what, message)
        assert win.doc.photo is photo and win.doc.strokes == strokes and win.doc.base is base, what
        if what == "deeply nested":
            assert "nested" in message and "deep" in message, message


# --- 5. autosave and recovery --------------------------------------------------------------------


def test_autosave_is_restored_after_a_crash_and_removed_by_a_clean_exit(qtbot, make_window, photo_path, settings_path, monkeypatch):
    win = make_window()
    open_and_wait(qtbot, win, photo_path)
    second = thumbs(win)[1].sample
    win.pick_sample(second)
    strokes = [Stroke((200, 40, 40), 3.0, ((10, 10), (30, 12))), Stroke((40, 40, 200), 2.0, ((90, 60),))]
    writes: list[str] = []
    win.autosave.saved.connect(writes.append)
    for s in strokes:
        win.add_stroke(s)
    assert win.autosave.pending and not writes  # debounced: written a moment after the last change
    qtbot.waitUntil(win.is_idle, timeout=WAIT)
    data = autosaved(qtbot, win, settings_path)
    assert len(writes) == 1 and data["autosave"]["project"] is None and len(data["strokes"]["strokes"]) == 2
    (path,) = autosaves(settings_path)
    assert not find_recoveries(path.parent), "a running window's autosave is not offered to others"

    # the process "crashes": its lock goes with it, the autosave stays
    win.autosave._lock.unlock()
    win.autosave._closed = True

    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a, **k: (asked.append(text), QMessageBox.StandardButton.Yes)[1])
    fresh = make_window()
    with qtbot.waitSignal(fresh.ready, timeout=WAIT):
        assert fresh.autosave.offer_restore(fresh)
    qtbot.waitUntil(fresh.is_idle, timeout=WAIT)
    assert "Restore unsaved work from" in asked[0] and "street.png" in asked[0] and "2 strokes" in asked[0]
    assert Path(fresh.doc.photo.path).resolve() == photo_path.resolve()
    assert fresh.doc.strokes == strokes
    assert fresh.doc.base_ref == second.ref
    assert fresh.doc.project_path is None and fresh.isWindowModified() and not fresh.undo_stack.isClean()
    assert str(path.resolve()) not in fresh.settings.recent_files
    assert autosaves(settings_path) == [fresh.autosave.path]  # adopted: never offered twice

    fresh.force_close = True
    fresh.close()  # a clean exit
    assert not autosaves(settings_path)
    assert not find_recoveries(settings_path.parent / "autosave")


def test_a_declined_recovery_is_deleted_and_a_saved_project_needs_no_autosave(qtbot, make_window, photo_path, settings_path, tmp_path, monkeypatch):
    win = make_window()
    open_and_wait(qtbot, win, photo_path)
    win.add_stroke(Stroke((200, 40, 40), 3.0, ((10, 10), (30, 12))))
    qtbot.waitUntil(win.is_idle, timeout=WAIT)
    assert win.autosave.flush() is not None and autosaves(settings_path)
    assert win.save_project_to(tmp_path / "mine.divcolor")
    win.autosave.flush()
    assert not autosaves(settings_path), "everything is in the saved project"
    win.add_stroke(Stroke((40, 200, 40), 3.0, ((50, 50), (60, 52))))
    qtbot.waitUntil(win.is_idle, timeout=WAIT)
    (path,) = [win.autosave.flush()]
    assert json.loads(path.read_text())["autosave"]["project"] == str(tmp_path / "mine.divcolor")
    win.autosave._lock.unlock()  # crash
    win.autosave._closed = True
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    other = make_window()
    assert not other.autosave.offer_restore(other)
    assert not autosaves(settings_path)


def test_switching_photo_during_a_stroke_solve_loses_no_strokes(qtbot, make_window, photo_path, tmp_path, monkeypatch, settings_path):
    win = make_window()
    open_and_wait(qtbot, win, photo_path)
    started, release = threading.Event(), threading.Event()
    real = win.session.field

    class Slow:
        method = real.method

        def propagate(self, strokes, base=None, cancel=None, progress=None):
            if strokes:
                started.set()
                release.wait(WAIT_S)  # a solve that ignores cancel until it finishes
            return real.propagate(strokes, base, cancel=None, progress=progress)

        def attention(self, x, y):
            return real.attention(x, y)

    win.session.field = Slow()
    a = Stroke((200, 40, 40), 3.0, ((10, 10), (30, 12)))
    win.add_stroke(a)
    qtbot.waitUntil(started.is_set, timeout=WAIT)
    assert win.autosave.flush() is not None  # (debounced normally; here: now)
    assert json.loads(autosaves(settings_path)[0].read_text())["strokes"]["strokes"][0]["color"] == "#C82828"

    saved = tmp_path / "first.divcolor"
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Save)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(saved), ""))
    other = tmp_path / "portrait.png"
    save_image(other, grey(100, 70)[::-1])
    win.open_path(other)  # asks, saves the strokes, then opens the other photo while the solve still runs
    qtbot.waitUntil(lambda: win.doc.photo is not None and win.doc.photo.path.name == "portrait.png", timeout=WAIT)
    b = Stroke((40, 200, 40), 2.0, ((50, 30), (60, 40)))
    win.add_stroke(b)
    release.set()
    qtbot.waitUntil(win.is_idle, timeout=WAIT)
    assert win.doc.strokes == [b]  # the late result of the first photo did not land here
    assert win.doc.result.shape[:2] == (70, 100)
    qtbot.waitUntil(lambda: "portrait" in autosaved(qtbot, win, settings_path)["photo"], timeout=WAIT)
    data = autosaved(qtbot, win, settings_path)
    assert data["photo"].endswith("portrait.png") and len(data["strokes"]["strokes"]) == 1
    first = json.loads(saved.read_text())
    assert first["photo"].endswith("street.png") and len(first["strokes"]["strokes"]) == 1


# --- 6. out of memory ------------------------------------------------------------------------


def test_out_of_memory_is_one_dialog_saying_what_to_do_and_the_app_keeps_working(qtbot, make_window, tiny_model, tiny_pic, photo_path, tmp_path, monkeypatch, dialogs):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / "vae_mdn_general.safetensors")
    shutil.copy(tiny_pic / "model.safetensors", models / "pic_general.safetensors")
    win = make_window(Colorizer(device="cpu", model_dirs=[models]))
    open_and_wait(qtbot, win, photo_path)
    real = win.colorizer.sample

    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 18253611008 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(win.colorizer, "sample", oom)
    before = len(dialogs)
    with qtbot.waitSignal(win.gallery_finished, timeout=WAIT):
        win.act["generate"].trigger()
    qtbot.wait(50)
    new = dialogs[before:]
    assert len(new) == 1, new  # one dialog, not one per method or per sample
    title, text = new[0]
    assert "fewer samples" in text and "smaller" in text and not any(w in text for w in BUG_WORDS)
    assert "fewer samples" in win.gallery.banner.text()
    # the app keeps working
    monkeypatch.setattr(win.colorizer, "sample", real)
    with qtbot.waitSignal(win.gallery_finished, timeout=WAIT):
        win.act["generate"].trigger()
    assert len(thumbs(win)) == 4 and len(dialogs) == before + 1


def test_every_kind_of_out_of_memory_is_recognised():
    import torch

    kinds = [
        MemoryError(),
        type("_ArrayMemoryError", (MemoryError,), {})("Unable to allocate 7.28 TiB for an array"),  # numpy's kind
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 9 GB"),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ]
    for exc in kinds:
        assert is_out_of_memory(exc)
        assert error_text(user_facing(exc)) == OUT_OF_MEMORY_TEXT
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert user_facing(RuntimeError("shape mismatch")).args == ("shape mismatch",)
