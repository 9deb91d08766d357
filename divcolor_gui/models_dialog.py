"""The models dialog: which checkpoints divcolor can use, in words a person reads — name, what
it was trained on, file size, quality figures from its evaluation, date — with the raw metadata
behind "Details"; and "Load model…" for a user's own ``.safetensors`` file.

It reads ``Colorizer.available()`` (metadata only; listing happens on a worker thread in the
window) and asks the window to load new files, so model loading runs off the event loop and its
errors appear the same way as every other error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

import qtawesome as qta

from engine.colorizer import METHOD_LABELS, ModelInfo

# Metadata keys that are large arrays (training-set statistics): summarised, not printed.
_BULKY = {"pca", "pca_mean", "pca_components", "histogram", "ab_hist", "hist", "stats"}


def _summary(value: Any, depth: int = 0) -> Any:
    """Metadata fit for reading: long lists and bulky statistics become a short note."""
    if isinstance(value, dict):
        return {k: (f"<{type(v).__name__}, omitted>" if k in _BULKY else _summary(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list) and len(value) > 12:
        return f"<list of {len(value)} values>"
    return value


def _steps_text(meta: dict[str, Any]) -> str:
    steps = meta.get("steps", "")
    if isinstance(steps, dict):
        return " · ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in steps.items())
    return str(steps)


def _data_text(meta: dict[str, Any]) -> str:
    d = meta.get("data")
    if isinstance(d, dict):
        name = Path(str(d.get("path", "?"))).name
        n = d.get("images")
        return f"{name} ({n:,} images)" if isinstance(n, int) else name
    return str(d or "")


_METRIC_LABELS = (("error_of_best", "eob"), ("variance", "var"), ("pairwise_ssim", "SSIM"), ("bits_per_dim", "bits/dim"))


def _metric_text(meta: dict[str, Any]) -> str:
    """The eval's quality figures (the eval JSON also holds its method, file and data names,
    which the other columns already show), plus G-CRF's PSNR at 10 revealed points."""
    m = meta.get("metrics") or {}
    if not isinstance(m, dict) or not m:
        return ""
    parts = [f"{label} {m[k]:.3g}" for k, label in _METRIC_LABELS if isinstance(m.get(k), (int, float))]
    table3 = m.get("psnr_vs_points")
    if isinstance(table3, dict) and 10 in (table3.get("points") or []):
        k = table3["points"].index(10)
        for key, label in (("gcrf_points_only", "G-CRF"), ("levin", "Levin")):
            curve = table3.get(key)
            if isinstance(curve, list) and len(curve) > k:
                parts.append(f"{label} {curve[k]:.1f} dB @10 pts")
    return ", ".join(parts)


# A source checkout keeps each shipped model's eval here (an installed copy has the metrics that
# the export embedded in the model file, which come first).
RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results"


def _evaluated(m: Any) -> bool:
    return isinstance(m, dict) and any(isinstance(m.get(k), (int, float)) for k in ("error_of_best_l1", "error_l1"))


def model_eval(info: ModelInfo) -> dict[str, Any] | None:
    """The evaluation of exactly this model file: the metrics its export embedded, else its
    ``<stem>_eval.json`` beside it or in the source tree's docs/results — only when that JSON
    names this file and its creation time (a retrained file's old numbers are not shown)."""
    meta = info.meta or {}
    if _evaluated(meta.get("metrics")):
        return meta["metrics"]
    created = meta.get("created")
    for p in (info.path.with_name(f"{info.path.stem}_eval.json"), RESULTS_DIR / f"{info.path.stem}_eval.json"):
        try:
            ev = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if _evaluated(ev) and ev.get("checkpoint") == info.path.name and created and ev.get("checkpoint_created") == created:
            return ev
    return None


def quality_words(ev: dict[str, Any] | None) -> tuple[str, str]:
    """(column text, tooltip): the model's error against a flat tint, in words a person reads.

    The eval compares each test photo's truth with the best of the samples the app would show
    (error of best) and with the photo painted flat in its own true average colour (the tint
    baseline, which already knows the photo's overall colour)."""
    if not ev:
        return "not measured yet", "This model file carries no evaluation (divcolor-train eval, then export)."
    tint = ev.get("baseline_true_tint_l1")
    best, single = ev.get("error_of_best_l1"), ev.get("error_l1")
    err = best if isinstance(best, (int, float)) else single
    if not isinstance(tint, (int, float)) or tint <= 0 or not isinstance(err, (int, float)):
        figures = _metric_text({"metrics": ev})
        return (figures or "not measured yet"), "The evaluation has no flat-tint baseline to compare with."
    n = ev.get("samples")
    who = (f"best of {n}" if isinstance(n, int) else "best sample") if err is best else "its guess"
    r = err / tint - 1
    pct = f"{abs(r) * 100:.0f} %"
    share = ev.get("photos_closer_than_tint")
    if isinstance(share, (int, float)) and err is best:  # per photo: what a user meets, photo after photo
        text = f"closer than a flat tint on {round(share * 10)} of 10 test photos"
    elif abs(r) < 0.005:
        text = f"{who}: as close as a flat tint"
    else:
        text = f"{who}: {pct} {'closer' if r < 0 else 'further'} than a flat tint"
    photos = ev.get("images")
    data = str(ev.get("data") or "held-out test photos")
    tip = (
        f"On {data}: the {'best of the ' + str(n) + ' samples' if err is best and isinstance(n, int) else who} "
        f"{'is' if abs(r) >= 0.005 else 'is as close as'}"
        + (f" on average {pct} {'closer to' if r < 0 else 'further from'} the true colours than" if abs(r) >= 0.005 else "")
        + " each photo painted flat in its own true average colour — a baseline that already knows the photo's overall "
        f"colour. Mean error {err:.4f} against {tint:.4f} for the tint (|ab| / 128, lower is better"
        + (f", {photos} photos" if isinstance(photos, int) else "") + ")."
    )
    figures = _metric_text({"metrics": ev})
    return text, tip + (f"\n{figures}" if figures else "")


_DATA_WORDS = {"natural64": "general photos (Tiny ImageNet, 64 px)", "natural128": "general photos (Imagenette, 128 px)",
               "lfw64": "faces (LFW, 64 px)", "cifar10": "small photos (CIFAR-10)"}


def _trained_on(info: ModelInfo) -> str:
    """The training data in words, e.g. "faces (LFW, 64 px), 6,000 images"."""
    meta = info.meta or {}
    d = meta.get("data")
    path = str(d.get("path", "")) if isinstance(d, dict) else str(d or "")
    name = Path(path).name
    words = next((w for k, w in _DATA_WORDS.items() if name.startswith(k)), name or {"faces": "faces", "general": "general photos"}.get(info.family, "?"))
    n = d.get("images") if isinstance(d, dict) else None
    return f"{words}, {n:,} images" if isinstance(n, int) else words


def _size_text(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "?"
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"


def _display_name(info: ModelInfo) -> str:
    family = {"general": "general photos", "faces": "faces"}.get(info.family)
    label = METHOD_LABELS.get(info.method, info.method)
    return f"{label} for {family}" if family else f"{label}: {info.path.name}"


class ModelsDialog(QDialog):
    """Lists loaded checkpoints with their metadata; the window does the loading."""

    load_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(980, 460)  # every column, the quality in words included (fit_to_screen caps it)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Model", "Trained on", "Size", "Quality", "Date"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.currentItemChanged.connect(self._show_details)
        self.tree.headerItem().setToolTip(3, "From the model's evaluation on held-out photos: how close the best of its "
                                             "samples comes to the true colours, against each photo painted flat in its own "
                                             "true average colour. Point at a row for the figures.")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select a model to see its configuration, data and metrics.")
        self.details.setVisible(False)
        self.details_btn = QPushButton("Details")
        self.details_btn.setCheckable(True)
        self.details_btn.setToolTip("Show the selected model's raw metadata (configuration, training data, steps, metrics)")
        self.details_btn.toggled.connect(self.details.setVisible)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.tree)
        split.addWidget(self.details)
        split.setSizes([240, 200])

        self.empty = QLabel(
            "No models found. Shipped models live in resources/models; your own go in the divcolor "
            "data folder, or load any .safetensors file with “Load model…”."
        )
        self.empty.setWordWrap(True)
        self.empty.setObjectName("banner")

        load = QPushButton(qta.icon("mdi6.file-upload-outline"), "Load model…")
        load.setToolTip("Add a .safetensors model trained with divcolor-train (Ctrl+Shift+L)")
        load.clicked.connect(self.load_requested.emit)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(load)
        buttons.addWidget(self.details_btn)
        buttons.addStretch(1)
        buttons.addWidget(close)

        lay = QVBoxLayout(self)
        lay.addWidget(self.empty)
        lay.addWidget(split, 1)
        lay.addLayout(buttons)
        self.set_models([])

    def set_models(self, infos: list[ModelInfo]) -> None:
        self.tree.clear()
        self.empty.setVisible(not infos)
        for info in infos:
            meta = info.meta or {}
            created = str(meta.get("created", ""))[:19].replace("T", " ")
            steps = _steps_text(meta)
            quality, why = quality_words(model_eval(info))
            item = QTreeWidgetItem([_display_name(info), _trained_on(info), _size_text(info.path), quality, created[:10]])
            item.setToolTip(0, f"{info.path}\n{info.label}" + (f"\ntrained for {steps}" if steps else ""))
            item.setToolTip(3, why)
            item.setData(0, Qt.ItemDataRole.UserRole, info)
            self.tree.addTopLevelItem(item)
        for c in range(self.tree.columnCount()):
            self.tree.resizeColumnToContents(c)
        if infos:
            self.tree.setCurrentItem(self.tree.topLevelItem(0))

    def _show_details(self, item: QTreeWidgetItem | None, _prev: QTreeWidgetItem | None = None) -> None:
        if item is None:
            self.details.clear()
            return
        info: ModelInfo = item.data(0, Qt.ItemDataRole.UserRole)
        text = f"{info.label}\nfile: {info.path}\n\n" + json.dumps(_summary(info.meta or {}), indent=2, default=str)
        self.details.setPlainText(text)
