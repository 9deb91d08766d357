"""Lock and resample keeps the strokes' colour where the strokes are (issue 28, item 7).

A red stroke on a wall turned 4 of 6 VAE-MDN samples red-brown all over: the strokes were
handed to the model as hints, and its global code was pulled toward them. Now a locked sample
is the unlocked sample of the same (seed, index) with the strokes painted by the stroke field,
the solve that holds unstroked pixels on the sample. The measure: the mean ab change outside
the stroked region, locked against unlocked, computed here from the pixels (Lab by
``skimage.color``, an implementation independent of the engine's).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.color import rgb2lab

from engine.io import photo_from_array
from engine.strokes import Stroke, color_ab_at

STROKE = Stroke((200, 40, 30), 5, ((20.0, 35.0), (50.0, 42.0)))


def wall_photo():
    """A dark textured wall (rows 20-55, columns 10-59) on a bright textured street: the
    stroke lies on the wall, whose edge the propagation must not cross."""
    h, w = 96, 88
    yy, xx = np.mgrid[0:h, 0:w]
    wall = (yy >= 20) & (yy < 56) & (xx >= 10) & (xx < 60)
    grey = np.where(wall, 0.35, 0.75) + 0.04 * np.sin(xx / 2.5) * np.cos(yy / 3.0)
    return photo_from_array(np.repeat(grey[..., None], 3, -1).astype(np.float32)), wall


def ab_of(rgb: np.ndarray) -> np.ndarray:
    return rgb2lab(np.clip(rgb, 0, 1).astype(np.float64))[..., 1:]


def test_locked_samples_keep_their_own_colours_outside_the_stroke(colorizer):
    photo, wall = wall_photo()
    free = colorizer.sample(photo, n=4, seed=11, first=1)
    locked = colorizer.sample(photo, n=4, seed=11, first=1, strokes=[STROKE])
    outside = ~binary_dilation(wall, iterations=3)  # the stroke's region and a margin left out
    field = colorizer.field(photo)
    want = color_ab_at(STROKE.color, float(photo.L[38, 35])) * 128
    for f, k in zip(free, locked):
        assert (k.index, k.seed) == (f.index, f.seed)
        change = np.linalg.norm(ab_of(k.rgb) - ab_of(f.rgb), axis=-1)
        # the measure of the issue: outside the stroked region the sample stays itself
        # (0.04 here; the strokes as hints moved it by 0.12-0.21 even with this tiny model,
        # by 15 on average with the shipped one) ...
        assert change[outside].mean() < 0.1, f"sample {f.index}: mean ab change {change[outside].mean():.2f} outside"
        # ... while the stroke's region takes the stroke's colour
        assert np.linalg.norm(ab_of(k.rgb)[38, 35] - want) < 0.25 * np.linalg.norm(want)
        assert change[wall].mean() > 100 * change[outside].mean()
        # exactly what the canvas shows for that sample with these strokes
        np.testing.assert_allclose(k.rgb, field.propagate([STROKE], f).rgb, atol=1e-5)
    # and the locked samples still differ from one another (resampled) away from the stroke
    far = [ab_of(k.rgb)[outside] for k in locked]
    assert max(np.abs(far[0] - x).mean() for x in far[1:]) > 1e-3
