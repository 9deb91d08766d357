"""The app's state, driven without any widget: :class:`divcolor_gui.session.Session`.

Each test builds a Session around tiny real models (copied into a models folder under the
shipped names, so families and methods are as in the app) and waits on its signals.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import DivcolorError
from engine.io import save_image
from engine.strokes import Stroke

from divcolor_gui.document import project_dict, read_project, write_project
from divcolor_gui.session import GENERAL, Session

from conftest import WAIT_MS, WAIT_S

WAIT = WAIT_MS  # a ceiling for waits on events, never asserted as a duration (conftest)
W, H = 96, 64


def grey(seed: int = 0, w: int = W, h: int = H) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.where(xx < w // 2, 0.3, 0.75) + 0.05 * np.sin((xx + seed) / 3.0) * np.cos(yy / 5.0)
    return np.clip(g, 0, 1).astype(np.float32)


@pytest.fixture
def photos(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "street.png", tmp_path / "portrait.png"
    save_image(a, grey(0))
    save_image(b, grey(5))
    return a, b


@pytest.fixture
def models_dir(tmp_path, tiny_model, tiny_pic) -> Path:
    """General: VAE-MDN and PIC; faces: VAE-MDN only (like the shipped set, PIC has no faces model)."""
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(tiny_model, d / "vae_mdn_general.safetensors")
    shutil.copy(tiny_model, d / "vae_mdn_faces.safetensors")
    shutil.copy(tiny_pic / "model.safetensors", d / "pic_general.safetensors")
    return d


@pytest.fixture
def session(qtbot, models_dir):
    from engine.colorizer import Colorizer

    s = Session(Colorizer(device="cpu", model_dirs=[models_dir]))
    s.set_params(seed=0, n=2, temperature=1.0)
    with qtbot.waitSignal(s.models_changed, timeout=WAIT):
        s.refresh_models()
    yield s
    s.close()


def open_and_wait(qtbot, s: Session, path: Path) -> None:
    with qtbot.waitSignal(s.ready, timeout=WAIT):
        s.open_photo(path)
    qtbot.waitUntil(s.is_idle, timeout=WAIT)


def test_model_choice_belongs_to_the_photo_and_unavailable_methods_say_why(qtbot, session, photos):
    a, b = photos
    open_and_wait(qtbot, session, a)
    assert session.choice == GENERAL
    assert set(session.samples) == {"vae-mdn", "pic"}
    session.set_choice(("faces", None))
    qtbot.waitUntil(session.is_idle, timeout=WAIT)
    plans = {p.method: p for p in session.plan()}
    assert plans["vae-mdn"].available
    assert not plans["pic"].available and "faces" in plans["pic"].reason and "general photos" in plans["pic"].reason
    assert set(session.samples) == {"vae-mdn"}  # PIC is not silently swapped for its general model
    assert all(s.colorization.model == "vae_mdn_faces" for s in session.all_samples())
    open_and_wait(qtbot, session, b)
    assert session.choice == GENERAL, "a face model chosen for one photo does not carry over to the next"
    open_and_wait(qtbot, session, a)
    assert session.choice == ("faces", None), "each photo keeps its own choice"


def test_strokes_follow_the_chosen_model(qtbot, session, photos, monkeypatch):
    """The stroke field is asked for the photo's model, not a fixed family; cached per photo and model."""
    real = session.colorizer.field
    asked: list[tuple[str, str | None, str | None]] = []

    def field(photo, method="auto", family=None, checkpoint=None):
        asked.append((method, family, checkpoint))
        return real(photo, method, family=family, checkpoint=checkpoint)

    monkeypatch.setattr(session.colorizer, "field", field)
    open_and_wait(qtbot, session, photos[0])
    assert asked and asked[-1][1] == "general"
    session.set_choice(("faces", None))
    qtbot.waitUntil(lambda: session.is_idle() and session.field_state.state == "ready", timeout=WAIT)
    assert asked[-1][1] == "faces"
    assert session.field_choice() == ("levin", "faces", None)  # no G-CRF in this folder: classical, and it says so
    assert session.field_state.name == "Levin propagation"


def test_fresh_batch_keeps_the_canvas_on_the_current_run(qtbot, session, photos):
    open_and_wait(qtbot, session, photos[0])
    second = session.samples["vae-mdn"][1]
    session.pick(second)
    assert session.doc.base is second.colorization
    session.set_params(seed=5)
    with qtbot.waitSignal(session.generation_finished, timeout=WAIT):
        session.generate(append=False)
    qtbot.waitUntil(session.is_idle, timeout=WAIT)
    now = session.samples["vae-mdn"][1]
    assert now.ref.seed == 5
    assert session.doc.base is now.colorization, "the canvas shows the same place in the new run, not the old sample"
    np.testing.assert_array_equal(session.doc.result, now.colorization.rgb)


def test_gallery_fills_sample_by_sample_and_a_failure_stays_in_its_method(qtbot, session, photos, monkeypatch):
    open_and_wait(qtbot, session, photos[0])
    arrivals: list[tuple[str, int]] = []
    failures: list[tuple[str, str]] = []
    session.samples_added.connect(lambda m, ss: arrivals.append((m, len(ss))))
    session.method_failed.connect(lambda m, text: failures.append((m, text)))
    real = session.colorizer.sample

    def sample(photo, method, *a, **k):
        if method == "pic":
            raise DivcolorError("PIC ran out of memory on this photo.")
        return real(photo, method, *a, **k)

    monkeypatch.setattr(session.colorizer, "sample", sample)
    session.set_params(n=3)
    with qtbot.waitSignal(session.generation_finished, timeout=WAIT):
        session.generate(append=False)
    assert arrivals == [("vae-mdn", 1)] * 3  # one-pass decoder: each sample as soon as it is ready
    assert failures and failures[0][0] == "pic" and "memory" in failures[0][1]
    assert len(session.samples["vae-mdn"]) == 3


def test_methods_whose_batch_costs_one_sample_are_asked_once_per_batch(qtbot, session, photos, monkeypatch):
    """PIC (and G-CRF) make n samples in about the time of one: one call for the batch; VAE-MDN
    one call per sample, each shown as soon as it is ready."""
    from engine.models import model_class

    open_and_wait(qtbot, session, photos[0])
    calls: list[tuple[str, int, int]] = []
    real = session.colorizer.sample

    def sample(photo, method, n, *a, first=0, **k):
        calls.append((method, first, n))
        return real(photo, method, n, *a, first=first, **k)

    monkeypatch.setattr(session.colorizer, "sample", sample)
    session.set_params(n=3)
    with qtbot.waitSignal(session.generation_finished, timeout=WAIT):
        session.generate(append=False)
    assert model_class("pic").BATCH_AT_ONCE and model_class("gcrf").BATCH_AT_ONCE
    assert not model_class("vae-mdn").BATCH_AT_ONCE
    assert calls == [("vae-mdn", 0, 1), ("vae-mdn", 1, 1), ("vae-mdn", 2, 1), ("pic", 0, 3)]
    assert [s.ref.index for s in session.samples["pic"]] == [0, 1, 2]


def test_more_samples_continue_the_set_and_projects_keep_every_batch(qtbot, session, photos, tmp_path):
    open_and_wait(qtbot, session, photos[0])
    with qtbot.waitSignal(session.generation_finished, timeout=WAIT):
        session.generate(append=True)
    vae = session.samples["vae-mdn"]
    assert [s.ref.index for s in vae] == [0, 1, 2, 3]
    assert len({s.colorization.rgb.tobytes() for s in vae}) == 4, "every sample is a new colorization"
    session.pick(vae[3])
    session.add_stroke(Stroke((200, 40, 40), 4.0, ((10, 10), (30, 12))))
    qtbot.waitUntil(session.is_idle, timeout=WAIT)
    proj = tmp_path / "p.divcolor"
    data = project_dict(session.doc, proj, 0, 1.0, 2, *session.choice)
    data["gallery"]["batches"] = [{"seed": b.seed, "n": b.n, "temperature": b.temperature, "first": b.first} for b in session.batches]
    write_project(proj, data)
    assert read_project(proj).batches == [(0, 2, 1.0, 0), (0, 2, 1.0, 2)]

    from engine.colorizer import Colorizer

    other = Session(Colorizer(device="cpu", model_dirs=session.colorizer.model_dirs))
    other.set_params(n=2)
    other.refresh_models()
    try:
        other.open_project(proj)
        qtbot.waitUntil(lambda: len(other.samples.get("vae-mdn", [])) == 4 and other.is_idle(), timeout=WAIT)
        assert [s.ref.index for s in other.samples["vae-mdn"]] == [0, 1, 2, 3]
        assert other.doc.base_ref == vae[3].ref and other.doc.strokes == session.doc.strokes
        np.testing.assert_allclose(other.samples["vae-mdn"][3].colorization.rgb, vae[3].colorization.rgb, atol=1e-5)
    finally:
        other.close()


def test_stroke_field_is_ready_before_the_first_stroke_and_times_are_true(qtbot, session, photos, monkeypatch):
    """The field is prepared when the photo opens (busy state meanwhile); the time reported for a
    stroke runs from the edit to its result, including any wait for the field."""
    states: list[str] = []
    session.field_changed.connect(lambda st: states.append(st.state))
    gate = threading.Event()
    real = session.colorizer.field

    built: list[float] = []

    def slow_field(photo, method="auto", **kw):
        gate.wait(WAIT_S)  # a field that takes as long as we say
        f = real(photo, method, **kw)
        built.append(time.perf_counter())
        return f

    monkeypatch.setattr(session.colorizer, "field", slow_field)
    with qtbot.waitSignal(session.ready, timeout=WAIT):
        session.open_photo(photos[0])
    assert session.field_state.state == "preparing" and states[-1] == "preparing"
    times: list[tuple[str, float]] = []
    session.timing.connect(lambda what, t: times.append((what, t)))
    t0 = time.perf_counter()
    session.add_stroke(Stroke((40, 200, 40), 4.0, ((10, 30), (40, 30))))
    gate.set()
    qtbot.waitUntil(lambda: session.is_idle() and session.doc.result_is_current and bool(session.doc.strokes), timeout=WAIT)
    t1 = time.perf_counter()
    assert states[-1] == "ready"
    stroke_times = [t for what, t in times if what == "stroke"]
    assert stroke_times, "the stroke's time is reported"
    assert built and built[0] - t0 <= stroke_times[-1] <= t1 - t0, "the wait for the field is in the stroke's time"


def test_colour_suggestions_are_the_samples_colours_at_the_spot(qtbot, session, photos):
    open_and_wait(qtbot, session, photos[0])
    x, y = 70, 20
    got = session.suggestions(x, y)
    expected = {tuple(int(v) for v in np.clip(np.rint(s.colorization.rgb[y, x] * 255), 0, 255)) for s in session.all_samples()}
    assert got and set(got) <= expected
    assert len(got) <= len(expected)


def test_no_wait_in_the_tests_depends_on_the_machine_speed():
    """Issue 28 item 20: a 60 s ceiling failed on a busy machine for a wait that takes 9 s alone.
    Every ceiling in tests/ (qtbot and subprocess timeouts, a worker's gate, a WAIT constant) is
    at least 300 s; what a test waits for is an event, so a fast machine never waits that long."""
    import re

    too_short = []
    ceiling = re.compile(r"(?:timeout\s*[=:]\s*(?:int\s*=\s*)?|WAIT\w*\s*=\s*|\b(?:gate|release|started|done|event)\.wait\()"
                         r"(\d[\d_]*(?:\.\d+)?)")
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            for m in ceiling.finditer(line):
                value = float(m.group(1).replace("_", ""))
                seconds = value / 1000 if value >= 1000 and "_" in m.group(1) else value
                if value >= 1 and seconds < 300:
                    too_short.append(f"{path.name}:{no}: {line.strip()}")
    assert not too_short, "ceilings a busy machine can reach:\n" + "\n".join(too_short)
