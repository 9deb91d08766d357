"""The Qt binding itself must not leak: a build that drops a reference to None per call kills
the app after minutes of use.

PySide6-Essentials 6.12.0 does exactly that on Python 3.11: every void Qt method called from
Python (``update()``, ``setText()``, ``processEvents()``...) decrements None's reference count.
The canvas makes about six such calls per mouse move, so painting aborted the process with
"Fatal Python error: none_dealloc" after some 11,000 moves (measured with the shipped app).
``pyproject.toml`` excludes that version; these tests catch the next one that does it.
"""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer
from PySide6.QtWidgets import QLabel

CALLS = 1000


def _lost(call, obj=None) -> int:
    """References to ``obj`` (None by default) lost over CALLS calls of ``call``."""
    before = sys.getrefcount(obj)
    for _ in range(CALLS):
        call()
    return before - sys.getrefcount(obj)


@pytest.mark.parametrize("name", ["update", "setText", "setVisible", "processEvents", "event loop"])
def test_void_calls_keep_none_alive(qapp, name):
    label = QLabel("x")
    loop = QEventLoop()
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)

    def run_loop() -> None:
        timer.start(0)
        loop.exec()

    call = {
        "update": label.update,
        "setText": lambda: label.setText("y"),
        "setVisible": lambda: label.setVisible(False),
        "processEvents": QCoreApplication.processEvents,
        "event loop": run_loop,
    }[name]
    lost = _lost(call)
    # a leaking binding loses exactly one (or two) per call; allow for incidental churn
    assert lost < CALLS // 10, (
        f"{name}: None lost {lost} references over {CALLS} calls: this Qt binding "
        f"(PySide6 {__import__('PySide6').__version__}) would crash the app; see pyproject.toml")


def test_bool_returns_keep_true_and_false_alive(qapp):
    label = QLabel("x")
    for obj in (True, False):
        assert _lost(label.isVisible, obj) < CALLS // 10


def test_the_app_detects_a_leaking_binding_and_refuses_to_start_with_what_to_do(qapp, monkeypatch, shown_dialogs):
    import ctypes

    from divcolor_gui import app as app_module

    assert app_module.binding_problem() is None  # the binding installed here is sound

    none = ctypes.py_object(None)
    leaked = 0

    def leaking_call() -> None:  # what PySide6 6.12.0 does on every void call
        nonlocal leaked
        ctypes.pythonapi.Py_DecRef(none)
        leaked += 1

    try:
        text = app_module.binding_problem(leaking_call)
    finally:
        for _ in range(leaked):
            ctypes.pythonapi.Py_IncRef(none)
    if sys.version_info >= (3, 12):  # None is immortal there: the bug is harmless, nothing to say
        assert text is None
        return
    assert text is not None and "PySide6" in text and "!=6.12.0" in text

    monkeypatch.setattr(app_module, "binding_problem", lambda: text)
    assert app_module.run() == 1  # no window, no engine: a dialog that says what to install
    assert shown_dialogs == [("divcolor cannot start", text)]
