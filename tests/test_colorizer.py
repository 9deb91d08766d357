import numpy as np
import pytest
import torch

from engine.colorizer import CancelToken, Colorizer
from engine.color import rgb_to_lab
from engine.errors import Cancelled, CheckpointError
from engine.io import photo_from_array

from conftest import synthetic_images


@pytest.fixture
def photo():
    img = np.asarray(synthetic_images(1, size=96)[0], np.float32) / 255
    return photo_from_array(img[:, :80])  # not square: the model's square must map back


def test_same_seed_same_result_and_full_size(colorizer, photo):
    a = colorizer.sample(photo, n=4, seed=3)
    b = colorizer.sample(photo, n=4, seed=3)
    assert len(a) == 4 and a[0].rgb.shape == (96, 80, 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.rgb, y.rgb)
    assert [c.index for c in a] == [0, 1, 2, 3] and a[0].method == "vae-mdn"


def test_samples_beyond_the_mixture_are_random_but_seeded(colorizer, photo):
    a = colorizer.sample(photo, n=10, seed=1)
    b = colorizer.sample(photo, n=10, seed=2)
    np.testing.assert_array_equal(a[0].rgb, b[0].rgb)  # the means come first, seed-independent
    assert not np.array_equal(a[9].ab_low.numpy(), b[9].ab_low.numpy())


def test_output_luminance_is_the_input_luminance(colorizer, photo):
    out = colorizer.sample(photo, n=2)[1].rgb
    L = rgb_to_lab(torch.from_numpy(out).permute(2, 0, 1))[0].numpy()
    assert np.abs(L - photo.L).mean() < 1.0


def test_progress_is_monotonic_and_ends_at_one(colorizer, photo):
    seen = []
    colorizer.sample(photo, n=3, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_cancel_stops_the_job(colorizer, photo):
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        colorizer.sample(photo, n=2, cancel=tok)


def test_missing_model_is_a_clear_error(photo, tmp_path):
    c = Colorizer(device="cpu", model_dirs=[tmp_path])
    with pytest.raises(CheckpointError, match="No 'vae-mdn' model found"):
        c.sample(photo)


def test_shipped_defaults_load():
    """Every file in resources/models is a valid model the facade can list and run."""
    from engine.colorizer import default_model_dir

    c = Colorizer(device="cpu")
    shipped = sorted(default_model_dir().glob("*.safetensors"))
    names = {m.name for m in c.available()}
    for f in shipped:
        assert f.stem in names
        assert f.stat().st_size <= 16 * 2**20
        c.model(next(m for m in c.available() if m.name == f.stem))  # loads with this code's configs
