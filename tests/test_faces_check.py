"""The faces model on a photo without a face says so (issue 28, item 13).

The engine's check (:mod:`engine.faces`) on the shipped sample photos, and on LFW test faces
when the shared data sets are there; the window's note beside the gallery, shown for the
faces model on a street photo, not on a portrait and not for the general model.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.faces import shows_face
from engine.io import load_photo, photo_from_array

from conftest import WAIT_MS

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples"
STREET, PORTRAIT = SAMPLES / "london_street_1900.jpg", SAMPLES / "samurai_1860s.jpg"
LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw64_test_00.npz"


def test_the_check_finds_the_portraits_face_and_none_in_the_street_photos():
    assert shows_face(load_photo(PORTRAIT).L) is True  # a seated full-length portrait
    for name in ("london_street_1900.jpg", "london_market_1890s.jpg", "killarney_1910.jpg"):
        assert shows_face(load_photo(SAMPLES / name).L) is False, name  # people, but no face to speak of


def test_a_flat_or_tiny_photo_has_no_face():
    assert shows_face(np.full((40, 30), 50.0, np.float32)) is False
    assert shows_face(np.full((1, 1), 50.0, np.float32)) is False


@pytest.mark.skipif(not LFW.exists(), reason="the shared data sets are not here")
def test_lfw_test_faces_are_found():
    d = np.load(LFW)
    jpeg, off = d["jpeg"], d["offsets"]
    found = 0
    for i in range(60):
        rgb = np.asarray(Image.open(io.BytesIO(jpeg[off[i]:off[i + 1]].tobytes())).convert("RGB"), np.float32) / 255
        found += bool(shows_face(photo_from_array(rgb).L))
    assert found >= 57  # 99.4 % of all 1,000 (python -m engine.faces)


@pytest.fixture
def window(qtbot, tmp_path, tiny_model):
    from engine.colorizer import Colorizer

    from divcolor_gui.main_window import MainWindow
    from divcolor_gui.settings import Settings

    models = tmp_path / "models"
    models.mkdir()
    for name in ("vae_mdn_general.safetensors", "vae_mdn_faces.safetensors"):
        shutil.copy(tiny_model, models / name)
    win = MainWindow(colorizer=Colorizer(device="cpu", model_dirs=[models]), settings=Settings(tmp_path / "s.ini"))
    win.gallery.count.setValue(2)
    win.show()
    qtbot.waitExposed(win, timeout=WAIT_MS)
    yield win
    win.force_close = True
    win.close()
    win.deleteLater()


def open_and_wait(qtbot, win, path: Path) -> None:
    with qtbot.waitSignal(win.ready, timeout=WAIT_MS):
        win.open_path(path)
    qtbot.waitUntil(win.is_idle, timeout=WAIT_MS)


def choose(qtbot, win, family: str) -> None:
    win.gallery.choose_family(family)
    qtbot.waitUntil(lambda: win.session.choice[0] == family, timeout=WAIT_MS)
    qtbot.waitUntil(win.is_idle, timeout=WAIT_MS)


def test_the_faces_model_on_a_street_photo_says_so_and_not_on_a_portrait(qtbot, window, shown_dialogs):
    from divcolor_gui.faces_note import NO_FACE

    note = window.gallery.faces_note
    open_and_wait(qtbot, window, STREET)
    assert note.isHidden(), "the general model needs no note"
    choose(qtbot, window, "faces")
    qtbot.waitUntil(lambda: not note.isHidden(), timeout=WAIT_MS)
    assert NO_FACE in note.text() and "general" in note.text()
    # its link takes the general model, and the note goes
    note.linkActivated.emit("general")
    qtbot.waitUntil(lambda: window.session.choice[0] == "general" and note.isHidden(), timeout=WAIT_MS)
    qtbot.waitUntil(window.is_idle, timeout=WAIT_MS)
    # a portrait with the faces model: no note, once its check has answered
    open_and_wait(qtbot, window, PORTRAIT)
    checked = []
    window.faces_check.changed.connect(checked.append)
    choose(qtbot, window, "faces")
    qtbot.waitUntil(lambda: not window.faces_check.lane.busy and bool(checked), timeout=WAIT_MS)
    assert note.isHidden() and window.faces_check.text == ""
    assert not shown_dialogs
