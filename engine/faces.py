"""Does a photo show a face? A cheap check, so the app can say when the faces model is the
wrong one for a photo.

The faces models are trained on LFW portraits (a face filling a 64x64 crop). On a street
scene they paint skin tones over walls and sky, and nothing told the user (issue 28). This
module answers "a face big enough for the faces model is in the frame" with OpenCV's frontal
face Haar cascade (``haarcascade_frontalface_alt2``, shipped inside opencv-python-headless):
the photo is scaled so its long side is :data:`SIDE` pixels, histogram-equalised, and
searched for faces of at least 24 px there (a tenth of the long side: the samurai of the
sample photos, a seated full-length portrait, is found; at 128 px he was not). A crowd of
small faces far away counts as no face, which is the answer wanted: the general model fits
it better (none of the 12 street and landscape photos of ``bw_demo`` is said to show one).

Measured on the data sets' test splits (``python -m engine.faces --data ../shared/data``,
each image through :func:`engine.io.photo_from_array` as the app reads it): 99.2 % of the
1,000 lfw64 test faces are found; 89.2 % of the 1,000 natural128 test photos are found
face-free. Most of the rest show people: 46 % of the tench photos (fishermen holding the
fish up to the camera) and 21 % of the French horn photos (players) are said to show a face,
church, garbage truck and parachute photos 0-4 %.

About 30-60 ms a photo on one busy CPU core (L is reduced to 256 px first). If OpenCV cannot
be imported the answer is None (unknown), and callers say nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["SIDE", "face_boxes", "shows_face"]

SIDE = 256
"""Long side, in pixels, the photo is searched at."""
MIN_FACE = 24
"""Smallest face searched for, in pixels at :data:`SIDE` (the cascade's own window)."""
NEIGHBOURS = 3
"""Overlapping detections a face needs (OpenCV's minNeighbors). At SIDE 256: 3 finds 99.4 %
of the LFW test faces and says 'face' for 10.9 % of natural128 test photos (most of them
fishermen and horn players, whose faces are real); 5 finds 98.5 % at 7.7 % but misses the
samurai."""
CASCADE = "haarcascade_frontalface_alt2.xml"

_local = threading.local()  # a classifier per thread: detectMultiScale keeps per-call state


def _classifier() -> Any | None:
    c = getattr(_local, "classifier", None)
    if c is None:
        try:
            import cv2
        except ImportError:
            return None
        c = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if c.empty():
            return None
        _local.classifier = c
    return c


def grey_u8(L: np.ndarray) -> np.ndarray:
    """CIE L* (0-100) as the 8-bit sRGB grey a camera would have stored (what the cascade
    was trained on): L* to relative luminance, then the sRGB transfer curve."""
    L = np.asarray(L, np.float64)
    f = (L + 16.0) / 116.0
    Y = np.where(L > 8.0, f**3, L / 903.3)
    s = np.where(Y <= 0.0031308, 12.92 * Y, 1.055 * np.power(np.maximum(Y, 0.0031308), 1 / 2.4) - 0.055)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


def face_boxes(L: np.ndarray) -> list[tuple[float, float, float, float]] | None:
    """Faces in the image whose lightness is ``L`` (H, W, 0-100), as (x, y, w, h) in L's
    pixels; None when OpenCV is not available."""
    c = _classifier()
    if c is None:
        return None
    import cv2

    h, w = L.shape
    scale = SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(np.asarray(L, np.float32), size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    small = cv2.equalizeHist(grey_u8(small))  # converted after the reduction: a few ms for any size
    found = c.detectMultiScale(small, scaleFactor=1.1, minNeighbors=NEIGHBOURS, minSize=(MIN_FACE, MIN_FACE))
    return [tuple(float(v) / scale for v in box) for box in (found if len(found) else [])]  # type: ignore[misc]


def shows_face(L: np.ndarray) -> bool | None:
    """Whether a face big enough for the faces model is in the photo (see the module's
    docstring); None when it cannot be told."""
    boxes = face_boxes(L)
    return None if boxes is None else bool(boxes)


def _measure() -> None:  # pragma: no cover (a report, run by hand)
    """The two rates of the docstring, on the shared data sets' test splits."""
    import argparse
    import glob
    import io

    from PIL import Image

    from .io import photo_from_array

    ap = argparse.ArgumentParser(description="face check rates on lfw64 and natural128 test photos")
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    for name, want in (("lfw64", True), ("natural128", False)):
        hits = total = 0
        for shard in sorted(glob.glob(f"{args.data}/{name}_test_*.npz")):
            d = np.load(shard)
            jpeg, off = d["jpeg"], d["offsets"]
            for i in range(len(off) - 1):
                rgb = np.asarray(Image.open(io.BytesIO(jpeg[off[i]:off[i + 1]].tobytes())).convert("RGB"), np.float32) / 255
                hits += shows_face(photo_from_array(rgb).L) is want
                total += 1
        print(f"{name}: {hits}/{total} = {hits / max(total, 1):.1%} said {'face' if want else 'no face'}")


if __name__ == "__main__":
    _measure()
