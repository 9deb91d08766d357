"""What the user can command in the main window: its actions, menus, toolbar and status bar.

Every user command is a QAction created here, in :meth:`WindowActions._create_actions` (icon,
shortcut, tooltip that shows the shortcut), so menus, toolbars and panels share one definition;
:meth:`WindowActions._update_enabled` says which of them apply now. The slots the actions call
live where their work is: :mod:`.main_window` (gallery, canvas, strokes, overlays) and
:mod:`.window_files` (open, save, export). A mixin of :class:`~.main_window.MainWindow`, which
holds the widgets and the session these methods read.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QApplication, QDockWidget, QLabel, QMessageBox, QSizePolicy, QToolBar, QWidget

import qtawesome as qta

from . import theme
from .canvas import Tool
from .dialogs import ScrollingTextDialog
from .overlay import AMBIGUITY_NEEDS, AMBIGUITY_TIP
from .samples import sample_photos


class WindowActions:
    """The actions, menus, toolbar and status bar of :class:`~.main_window.MainWindow`."""

    _icons: dict[QAction, str]  # action -> qtawesome name (icons follow the theme)
    _shortcuts_dialog: ScrollingTextDialog | None = None

    def _action(
        self,
        key: str,
        text: str,
        icon: str | None = None,
        slot: Callable[..., Any] | None = None,
        shortcut: str | QKeySequence | list | None = None,
        tip: str | None = None,
        checkable: bool = False,
    ) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            seqs = shortcut if isinstance(shortcut, list) else [shortcut]
            a.setShortcuts([s if isinstance(s, QKeySequence) else QKeySequence(s) for s in seqs])
        a.setCheckable(checkable)
        self._set_tip(a, tip or text.replace("…", "").replace("&", ""))
        if icon:
            self._icons[a] = icon
        if slot is not None:
            (a.toggled if checkable else a.triggered).connect(slot)
        self.addAction(a)  # shortcuts work even when the action is in no visible toolbar
        self.act[key] = a
        return a

    @staticmethod
    def _set_tip(a: QAction, tip: str) -> None:
        keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        a.setToolTip(f"{tip} ({keys})" if keys else tip)
        a.setStatusTip(tip)

    def _create_actions(self) -> None:
        self.act: dict[str, QAction] = {}
        A = self._action
        # file
        A("open", "&Open…", "mdi6.folder-open", self.open_dialog, QKeySequence.StandardKey.Open, "Open a photo or a divcolor project")
        A("save", "&Save Project", "mdi6.content-save", self.save_project, QKeySequence.StandardKey.Save,
          "Save photo, chosen model, gallery, picked sample and strokes as a project")
        A("save_as", "Save Project &As…", "mdi6.content-save-edit", lambda: self.save_project(ask=True), "Ctrl+Shift+S")
        A("export", "&Export Image…", "mdi6.export", self.export_dialog, "Ctrl+E",
          "Export the coloured photo at full size (PNG, JPEG or TIFF)")
        A("batch", "Colori&ze Folder…", "mdi6.folder-multiple-image", self.show_batch,
          "Ctrl+Shift+B", "Colorize every photo of a folder into another folder, as `divcolor colorize` does")
        A("quit", "&Quit", "mdi6.exit-to-app", self.close, QKeySequence.StandardKey.Quit)
        # edit
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for key, a, icon in (("undo", undo, "mdi6.undo"), ("redo", redo, "mdi6.redo")):
            self.act[key] = a
            self._icons[a] = icon
            self.addAction(a)
        self.undo_stack.indexChanged.connect(self._retip_undo)
        self._retip_undo()
        A("clear", "C&lear Strokes", "mdi6.delete-sweep", self.clear_strokes, "Ctrl+Shift+Delete", "Remove every stroke")
        # tools
        tools = QActionGroup(self)
        tools.setExclusive(True)
        for key, text, icon, sc, tip in (
            ("brush", "&Brush", "mdi6.brush", "B", "Brush: paint a colour hint; click for a point hint"),
            ("eraser", "&Eraser", "mdi6.eraser", "E", "Eraser: remove the strokes you drag over"),
            ("eyedropper", "Eye&dropper", "mdi6.eyedropper", "I",
             "Eyedropper: pick the brush colour from the canvas or any gallery sample (Alt+click with the brush)"),
            ("pan", "&Pan", "mdi6.hand-back-right", "H", "Pan: drag to move the view (or hold Space, or drag with the middle button)"),
        ):
            a = A(key, text, icon, None, sc, tip, checkable=True)
            a.setData(Tool(key))
            tools.addAction(a)
        self.act["brush"].setChecked(True)
        tools.triggered.connect(self._tool_triggered)
        A("bigger", "Bigger Brush", "mdi6.plus-circle-outline", lambda: self.brush.set_radius(self.brush.radius * 1.25 + 0.5), "]")
        A("smaller", "Smaller Brush", "mdi6.minus-circle-outline", lambda: self.brush.set_radius(self.brush.radius / 1.25), "[")
        A("color", "Brush &Colour…", "mdi6.palette", lambda: self.brush.choose_color(), "C", "Choose the brush colour")
        # view
        A("zoom_in", "Zoom &In", "mdi6.magnify-plus-outline", lambda: self.canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn)
        A("zoom_out", "Zoom &Out", "mdi6.magnify-minus-outline", lambda: self.canvas.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
        A("fit", "&Fit to Window", "mdi6.fit-to-screen-outline", self.canvas.fit, "Ctrl+0")
        A("zoom_100", "&Actual Pixels (100%)", "mdi6.numeric-1-box-outline", self.canvas.zoom_100, "Ctrl+1")
        A("original", "Show &Original", "mdi6.compare", self.canvas.set_show_original, None,
          "Show the grey original instead of the result (or hold \\)", checkable=True)
        A("strokes", "Show &Strokes", "mdi6.vector-polyline", self.canvas.set_strokes_visible, "S",
          "Show or hide your strokes over the result", checkable=True)
        self.act["strokes"].setChecked(True)
        A("attention", "&Attention Map", "mdi6.blur", self._toggle_attention, "A", checkable=True)
        A("ambiguity", "Am&biguity Map", "mdi6.map-marker-question-outline", self._toggle_ambiguity, "D",
          AMBIGUITY_TIP, checkable=True)
        A("dark", "&Dark Theme", "mdi6.theme-light-dark", lambda on: self.set_theme("dark" if on else "light"), "Ctrl+Shift+T",
          "Switch between the dark and the light theme", checkable=True)
        # colorize
        A("generate", "&Generate Samples", "mdi6.refresh", lambda: self.generate(append=False), "F5",
          "Replace the gallery with a fresh batch of colorizations")
        A("more", "&More Samples", "mdi6.plus-box-multiple", lambda: self.generate(append=True), "Ctrl+M",
          "Add another batch of the seed's set; with strokes, new samples that keep them (lock and resample)")
        A("cancel", "&Cancel", "mdi6.close-circle-outline", self.cancel_jobs, "Esc", "Stop generating samples")
        A("models", "&Models…", "mdi6.cube-outline", self.show_models, "Ctrl+Shift+M", "The models, what they were trained on and how good they are")
        A("load_model", "&Load Model…", "mdi6.file-upload-outline", self.load_model_dialog, "Ctrl+Shift+L",
          "Add your own .safetensors model")
        # help
        A("shortcuts", "&Keyboard Shortcuts", "mdi6.keyboard-outline", self.show_shortcuts, "F1")
        A("about", "&About divcolor", "mdi6.information-outline", self.show_about)
        self._set_tip(self.act["attention"], self.overlay.reason)

    def _retip_undo(self, *_: object) -> None:
        """Undo/redo tooltips name the edit, like their menu text ("Undo Paint stroke (Ctrl+Z)")."""
        for key in ("undo", "redo"):
            a = self.act[key]
            keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            a.setToolTip(f"{a.text().replace('&', '')} ({keys})")

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea, name: str) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{name}")
        d.setWidget(widget)
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                      | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, d)
        return d

    def _create_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        f.addAction(self.act["open"])
        self.sample_menu = f.addMenu(qta.icon("mdi6.image-multiple-outline"), "Open Sa&mple")
        for name, path in sample_photos():
            a = self.sample_menu.addAction(name)
            a.setToolTip(str(path))
            a.setData(str(path))
            a.triggered.connect(lambda _=False, p=path: self.open_path(p))
        if self.sample_menu.isEmpty():
            self.sample_menu.addAction("No sample photos installed").setEnabled(False)
        self.recent_menu = f.addMenu(qta.icon("mdi6.history"), "Open &Recent")
        f.addSeparator()
        for k in ("save", "save_as", "export"):
            f.addAction(self.act[k])
        f.addSeparator()
        f.addAction(self.act["batch"])
        f.addSeparator()
        f.addAction(self.act["quit"])
        e = mb.addMenu("&Edit")
        for k in ("undo", "redo"):
            e.addAction(self.act[k])
        e.addSeparator()
        e.addAction(self.act["clear"])
        t = mb.addMenu("&Tools")
        for k in ("brush", "eraser", "eyedropper", "pan"):
            t.addAction(self.act[k])
        t.addSeparator()
        for k in ("bigger", "smaller", "color"):
            t.addAction(self.act[k])
        v = mb.addMenu("&View")
        for k in ("zoom_in", "zoom_out", "fit", "zoom_100"):
            v.addAction(self.act[k])
        v.addSeparator()
        for k in ("original", "strokes", "attention", "ambiguity"):
            v.addAction(self.act[k])
        v.addSeparator()
        v.addAction(self.act["dark"])
        v.addSeparator()
        v.addAction(self.gallery_dock.toggleViewAction())
        v.addAction(self.brush_dock.toggleViewAction())
        c = mb.addMenu("&Colorize")
        for k in ("generate", "more", "cancel"):
            c.addAction(self.act[k])
        c.addSeparator()
        for k in ("models", "load_model"):
            c.addAction(self.act[k])
        h = mb.addMenu("&Help")
        h.addAction(self.act["shortcuts"])
        h.addAction(self.act["about"])

    def _create_toolbars(self) -> None:
        tb = QToolBar("Main", self)
        tb.setObjectName("toolbar_main")
        tb.setIconSize(QSize(20, 20))
        tb.setMovable(False)
        groups = [
            ("open", "save", "export"),
            ("undo", "redo"),
            ("fit", "zoom_100", "zoom_in", "zoom_out"),
            ("original", "strokes", "attention", "ambiguity"),
            ("generate", "more", "models"),
        ]
        for i, g in enumerate(groups):
            if i:
                tb.addSeparator()
            for k in g:
                tb.addAction(self.act[k])
        for k in ("open", "export", "generate"):  # the few that deserve a word next to the icon
            w = tb.widgetForAction(self.act[k])
            if w is not None:
                w.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        self.toolbar = tb

    def _create_status_bar(self) -> None:
        sb = self.statusBar()
        self.pixel_label = QLabel("")
        self.method_label = QLabel("")
        self.method_label.setToolTip("What your strokes are propagated with, and whether it is ready")
        self.time_label = QLabel("")
        self.time_label.setToolTip("How long you waited: samples from Generate to the last one, strokes from release to result")
        self.device_label = QLabel(self._device_text())
        self.device_label.setToolTip("Where the models run")
        for w in (self.pixel_label, self.method_label, self.time_label, self.device_label):
            # as wide as their text while there is room, but never widening the window
            w.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
            w.setMinimumWidth(1)
            sb.addPermanentWidget(w)

    def _device_text(self) -> str:
        d = self.colorizer.device
        return "Device: CPU" if d.type == "cpu" else f"Device: GPU ({d})"

    def apply_theme(self, name: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply_theme(app, name)
        for a, icon in self._icons.items():
            a.setIcon(qta.icon(icon))
        self.recent_menu.setIcon(qta.icon("mdi6.history"))
        self.sample_menu.setIcon(qta.icon("mdi6.image-multiple-outline"))
        self.gallery.refresh_icons()
        self.brush.set_color(self.brush.color)  # re-render the swatch after a palette change

    def set_theme(self, name: str) -> None:
        self.settings.theme = name
        self.apply_theme(name)

    def _update_enabled(self, *_: object) -> None:
        has_photo = self.doc.photo is not None
        for k in ("save", "save_as", "export", "clear", "fit", "zoom_100", "zoom_in", "zoom_out", "original"):
            self.act[k].setEnabled(has_photo)
        self.act["clear"].setEnabled(bool(self.doc.strokes))
        can_gen = has_photo and bool(self.models)
        self.act["generate"].setEnabled(can_gen)
        self.act["more"].setEnabled(can_gen and bool(self.session.samples))
        amb = len(self.session.all_samples()) >= 2 or self.act["ambiguity"].isChecked()
        self.act["ambiguity"].setEnabled(amb)
        self._set_tip(self.act["ambiguity"], AMBIGUITY_TIP.rstrip(" (D).") if amb else AMBIGUITY_NEEDS)
        self.act["cancel"].setEnabled(self.sampling.busy)
        self.gallery.set_can_generate(can_gen)

    def show_shortcuts(self) -> None:
        rows = []
        for a in self.act.values():
            keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            if keys:
                rows.append(f"<tr><td><b>{keys}</b></td><td>{a.text().replace('&', '')}</td></tr>")
        extra = [
            ("Hold \\", "Show the grey original"), ("Wheel", "Zoom about the cursor"),
            ("Space+drag / middle drag", "Pan"), ("Alt+click", "Pick a colour (canvas or gallery)"),
            ("Click", "Point hint"), ("Right click while painting", "Abandon the stroke"),
        ]
        rows += [f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in extra]
        html = "<table cellpadding=3>" + "".join(rows) + "</table>"
        if self._shortcuts_dialog is None:  # scrolls inside when the screen is short (1280x720 at 150 %)
            self._shortcuts_dialog = ScrollingTextDialog("Keyboard shortcuts", html, self)
        self._shortcuts_dialog.show_fitted()

    def show_about(self) -> None:
        QMessageBox.about(
            self, "About divcolor",
            "<b>divcolor</b> — diverse and controllable colorization of black-and-white photos.<br><br>"
            "Pick one of several plausible colorizations, then steer it with colour strokes.<br>"
            f"Models run on: {self._device_text().split(': ', 1)[1]}",
        )

