"""The encoder-map cache: keyed by what was encoded (encoder, size, mirror, the images' content),
so nothing stale is ever served; resumed where an interrupted encoding stopped; and the maps it
serves are the encoder's own."""

from __future__ import annotations

import json

import pytest
import torch

from engine.models import encoder as E
from engine.models.backbone import encoder_input
from training import taps_cache as TC
from training.data import LabSet


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVCOLOR_CACHE", str(tmp_path / "shards"))
    return tmp_path / "taps"


def _L(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 64, 64, generator=torch.Generator().manual_seed(seed)) * 100


def test_maps_are_the_encoders_and_a_second_call_reads_them(cache, monkeypatch):
    L = _L()
    store = TC.encoded(L, "lite0", 64, chunk=2)
    live = E.load_shared("lite0").features(encoder_input(L, 64))
    for cached, ref in zip(store.rows(range(len(L))), live):
        torch.testing.assert_close(cached, ref, atol=5e-3, rtol=1e-2)  # fp16 storage
    monkeypatch.setattr(TC.E, "load_shared", lambda *a, **k: pytest.fail("encoded again"))
    again = TC.encoded(L, "lite0", 64)
    assert again.folder == store.folder


def test_the_key_follows_content_size_and_mirror(cache):
    L = _L()
    folders = {TC.encoded(x, "lite0", s, f).folder for x, s, f in
               [(L, 64, False), (L, 96, False), (L, 64, True), (_L(seed=1), 64, False), (L[:4], 64, False)]}
    assert len(folders) == 5  # another size, mirror, photo or subset never shares a cache


def test_an_interrupted_encoding_resumes_where_it_stopped(cache, monkeypatch):
    L = _L(6)
    real = E.EfficientNetLite.features
    calls = {"n": 0}

    def dies_on_second_chunk(self, x):
        calls["n"] += 1
        if calls["n"] == 3:  # the probe, chunk 1, then the session ends
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(E.EfficientNetLite, "features", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        TC.encoded(L, "lite0", 64, chunk=2)
    folder = next(cache.iterdir())
    assert json.loads((folder / "done.json").read_text())["rows"] == 2
    monkeypatch.setattr(E.EfficientNetLite, "features", real)
    resumed = TC.encoded(L, "lite0", 64, chunk=2)
    fresh = E.load_shared("lite0").features(encoder_input(L, 64))
    torch.testing.assert_close(resumed.rows(range(6)).s8, fresh.s8, atol=5e-3, rtol=1e-2)


def test_a_set_serves_mirrored_maps_for_mirrored_images(cache):
    L = _L(4)
    lab = LabSet(L, torch.zeros(4, 2, 64, 64))
    enc = TC.EncodedSet([lab], "lite0", 64, flips=True)
    Lb, _, taps = enc.batch(torch.tensor([3, 1]), torch.tensor([True, False]))
    torch.testing.assert_close(Lb[0], L[3].flip(-1))
    ref = E.load_shared("lite0").features(encoder_input(L[[3]].flip(-1), 64))
    torch.testing.assert_close(taps.pooled[:1], ref.pooled, atol=5e-3, rtol=1e-2)
    plain = TC.EncodedSet([lab], "lite0", 64, flips=False)
    with pytest.raises(ValueError, match="without its mirrors"):
        plain.batch(torch.tensor([0]), torch.tensor([True]))
