"""PIC: the likelihood against a brute-force sum, causality, cached = naive sampling, training."""

import json
import math

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.colorizer import CancelToken, Colorizer
from engine.errors import Cancelled
from engine.io import photo_from_array
from engine.models.pic import LEVELS, PIC, Noise, PICConfig, mixture_log_prob, quantize
from training.cli import main

from conftest import TINY_PIC, synthetic_images

TINY = PICConfig(size=16, subsample=2, embed_width=4, embed_blocks=1, embed_dim=8, width=8, n_blocks=2, n_mix=3)


def _random_model(cfg: PICConfig = TINY, seed: int = 0) -> PIC:
    torch.manual_seed(seed)
    model = PIC(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # move off the near-symmetric init so every path matters
            p.add_(0.2 * torch.randn_like(p))
    return model


def _logistic_cdf(x):
    return 1 / (1 + np.exp(-x))


def test_mixture_log_prob_equals_a_brute_force_sum_over_the_bins():
    rng = np.random.default_rng(0)
    M = 3
    logit, ma, mb = rng.normal(size=M), rng.uniform(-0.8, 0.8, M), rng.uniform(-0.8, 0.8, M)
    lsa, lsb, co = rng.uniform(-3.5, -1.5, M), rng.uniform(-3.5, -1.5, M), rng.uniform(-0.9, 0.9, M)
    params = torch.tensor(np.concatenate([logit, ma, mb, lsa, lsb, np.arctanh(co)]))[None, :, None, None]
    centres = np.arange(LEVELS) * 2 / (LEVELS - 1) - 1
    half = 1 / (LEVELS - 1)

    def bin_probs(mean, log_s):  # P(bin) for every bin, the end bins taking the tails
        hi = np.where(centres > 0.999, 1.0, _logistic_cdf((centres + half - mean) / np.exp(log_s)))
        lo = np.where(centres < -0.999, 0.0, _logistic_cdf((centres - half - mean) / np.exp(log_s)))
        return hi - lo

    pi = np.exp(logit) / np.exp(logit).sum()
    brute = np.zeros((LEVELS, LEVELS))  # [a bin, b bin]
    for k in range(M):
        pa = bin_probs(ma[k], lsa[k])
        for ia, a in enumerate(centres):
            brute[ia] += pi[k] * pa[ia] * bin_probs(mb[k] + co[k] * a, lsb[k])
    assert brute.sum() == pytest.approx(1.0, abs=1e-9)
    # The model's log-likelihood of every (a, b) pair, evaluated as a 256 x 256 "image".
    A, B = np.meshgrid(centres, centres, indexing="ij")
    ab = torch.tensor(np.stack([A, B]))[None]
    lp = mixture_log_prob(ab, params.expand(1, -1, LEVELS, LEVELS), M)[0].numpy()
    mask = brute > 1e-4  # where the bin probability is large enough to be computed exactly
    np.testing.assert_allclose(lp[mask], np.log(brute[mask]), rtol=0, atol=1e-6)


def test_decoder_is_causal_in_raster_order():
    """The distribution of pixel (i, j) never depends on (i, j) itself or any later pixel."""
    model = _random_model()
    s = TINY.chroma_size
    with torch.no_grad():
        cond = model.embedding(torch.rand(1, 1, TINY.size, TINY.size, dtype=torch.float64) * 100)
    for i, j in [(0, 0), (0, 5), (3, 0), (4, 4), (s - 1, s - 1)]:
        ab = torch.rand(1, 2, s, s, dtype=torch.float64, requires_grad=True)
        model.decoder(ab, cond)[:, :, i, j].sum().backward()
        seen = ab.grad.abs().sum(1)[0] > 0
        order = torch.arange(s * s).view(s, s)
        assert not seen[order >= i * s + j].any(), f"pixel {(i, j)} sees itself or a later pixel"
        if (i, j) != (0, 0):
            left_or_up = (i, j - 1) if j > 0 else (i - 1, j)
            assert seen[left_or_up], f"pixel {(i, j)} does not see its neighbour {left_or_up}"


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_cached_sampling_is_identical_to_the_naive_sampler(temperature):
    model = _random_model()
    s = TINY.chroma_size
    with torch.no_grad():
        cond = model.embedding(torch.rand(1, 1, TINY.size, TINY.size, dtype=torch.float64) * 100).expand(3, -1, -1, -1)
    noise = Noise.draw(3, s, s, TINY.n_mix, torch.Generator().manual_seed(5), "cpu", torch.float64)
    naive = model.sample_naive(cond, noise, temperature)
    cached = model.sample_cached(cond, noise, temperature)
    assert torch.equal(naive, cached)
    assert torch.equal(cached, quantize(cached))  # samples are bin centres
    assert naive.std() > 0.05 and not torch.equal(cached[0], cached[1])  # and not trivially constant


def test_same_seed_same_samples_and_progress_per_row():
    model = _random_model().float()
    L = torch.rand(1, 1, TINY.size, TINY.size) * 100
    rows = []
    a = model.colorize(L, 4, torch.Generator().manual_seed(1), progress=lambda f, m: rows.append(f))
    b = model.colorize(L, 4, torch.Generator().manual_seed(1))
    c = model.colorize(L, 4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 2, TINY.chroma_size, TINY.chroma_size)
    assert len(rows) == TINY.chroma_size and rows[-1] == 1.0
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        model.colorize(L, 2, cancel=tok)


def _pic(data, run, steps, *extra):
    return main(["pic", "--data", data, "--out", str(run), "--steps", str(steps), *TINY_PIC, *extra])


def test_training_resumes_to_the_same_state(tiny_data, tmp_path):
    assert _pic(tiny_data, tmp_path / "a", 4) == 0
    assert _pic(tiny_data, tmp_path / "b", 4, "--stop-after", "2") == 0
    assert _pic(tiny_data, tmp_path / "b", 4) == 0
    a = load_checkpoint(tmp_path / "a" / "pic" / "state.safetensors")
    b = load_checkpoint(tmp_path / "b" / "pic" / "state.safetensors")
    assert a.meta["step"] == b.meta["step"] == 4 and b.meta["finished"]
    assert any(k.startswith("ema.") for k in a.tensors)  # the Polyak average is part of the state
    for k in a.tensors:
        x, y = a.tensors[k].double(), b.tensors[k].double()
        assert (x - y).abs().max() <= 1e-4 * x.abs().max() + 1e-8, k
    log = [json.loads(x) for x in (tmp_path / "b" / "pic" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["bpd"] > 0 for r in log)


def test_training_lowers_the_loss(tiny_data, tmp_path):
    assert _pic(tiny_data, tmp_path, 30, "--lr", "3e-3") == 0
    log = [json.loads(x)["bpd"] for x in (tmp_path / "pic" / "log.jsonl").read_text().splitlines()]
    assert np.mean(log[-5:]) < np.mean(log[:5]) - 0.5


def test_export_eval_and_bits_per_dim(tiny_pic, tiny_data, capsys):
    ck = load_checkpoint(tiny_pic / "model.safetensors")
    assert ck.method == "pic" and not any(k.startswith("ema.") for k in ck.tensors)
    assert main(["eval", "--data", tiny_data, "--out", str(tiny_pic), "--sample-limit", "2"]) == 0
    result = json.loads((tiny_pic / "eval.json").read_text())
    # bpd recomputed independently from the model's per-image log-likelihood
    from training.data import load_lab

    model = PIC.from_checkpoint(tiny_pic / "model.safetensors")
    lab = load_lab(tiny_data, "test", model.cfg.size)
    with torch.no_grad():
        lp = model.log_prob(lab.L, model.chroma_target(lab.ab))
    dims = 2 * model.cfg.chroma_size**2
    assert result["bits_per_dim"] == pytest.approx(float(-lp.mean() / dims / math.log(2)), abs=1e-3)
    assert result["bits_per_dim_images"] == len(lab)
    assert 0 < result["error_of_best"] < 2 and result["variance"] > 0 and 0 < result["pairwise_ssim"] <= 1


def test_facade_and_cli_make_full_size_samples(tiny_pic, tmp_path):
    c = Colorizer(device="cpu", model_dirs=[])
    c.add_model(tiny_pic / "model.safetensors")
    img = np.asarray(synthetic_images(1, size=70)[0], np.float32) / 255
    photo = photo_from_array(img[:, :50])
    seen = []
    out = c.sample(photo, "pic", n=3, seed=4, progress=lambda f, m: seen.append(f))
    assert [o.rgb.shape for o in out] == [(70, 50, 3)] * 3 and out[0].method == "pic"
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 16  # per-row progress
    again = c.sample(photo, "pic", n=3, seed=4)
    np.testing.assert_array_equal(out[2].rgb, again[2].rgb)
    from engine.cli import main as cli

    Image = pytest.importorskip("PIL.Image")
    Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / "p.png")
    rc = cli(["colorize", str(tmp_path / "p.png"), "-o", str(tmp_path / "o"), "--method", "pic", "-n", "2",
              "--checkpoint", str(tiny_pic / "model.safetensors"), "--device", "cpu", "-q"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["p_pic_0.png", "p_pic_1.png"]
    assert Image.open(tmp_path / "o" / "p_pic_0.png").size == (70, 70)


def test_a_pic_file_with_a_broken_config_is_refused(tiny_pic, tmp_path):
    from engine.checkpoint import save_checkpoint
    from engine.errors import CheckpointError

    ck = load_checkpoint(tiny_pic / "model.safetensors")
    bad = dict(ck.meta, config={**ck.config, "width": 12})
    save_checkpoint(tmp_path / "bad.safetensors", ck.tensors, bad)
    with pytest.raises(CheckpointError, match="do not match its config"):
        PIC.from_checkpoint(tmp_path / "bad.safetensors")
    save_checkpoint(tmp_path / "bad2.safetensors", ck.tensors, dict(ck.meta, config={**ck.config, "subsample": 3}))
    with pytest.raises(CheckpointError, match="invalid PIC config"):
        PIC.from_checkpoint(tmp_path / "bad2.safetensors")


def test_the_calibrated_temperature_scales_the_users(tiny_pic):
    model = PIC.from_checkpoint(tiny_pic / "model.safetensors")
    sampling = model.meta["sampling"]
    table = {float(t): c for t, c in sampling["sample_chroma"].items()}
    # the calibration picked, among temperatures whose samples are not neon, the one whose samples
    # differ from one another as much as from the photo
    from training.stages.pic import CHROMA_CAP

    between = {float(t): v for t, v in sampling["between_samples"].items()}
    to_photo = {float(t): v for t, v in sampling["sample_to_photo"].items()}
    allowed = [t for t in table if table[t] <= CHROMA_CAP * sampling["photo_chroma"]] or [min(table)]
    assert sampling["temperature"] == min(allowed, key=lambda t: abs(between[t] - to_photo[t]))
    model.meta = {**model.meta, "sampling": {"temperature": 0.5}}
    L = torch.rand(1, 1, model.cfg.size, model.cfg.size) * 100
    s = model.cfg.chroma_size
    got = model.colorize(L, 2, torch.Generator().manual_seed(3), temperature=0.8)
    cond = model.embedding(L).expand(2, -1, -1, -1)
    noise = Noise.draw(2, s, s, model.cfg.n_mix, torch.Generator().manual_seed(3), "cpu", cond.dtype)
    assert torch.equal(got, model.sample_cached(cond, noise, 0.4))


def test_seed_and_temperature_change_every_sample():
    from engine.sampling import sample_generators

    model = _random_model().float()
    L = torch.rand(1, 1, TINY.size, TINY.size) * 100
    draw = lambda seed, t, first=0, n=4: model.sample(L, n, generator=sample_generators(seed, first, n), temperature=t)
    a, b = draw(1, 1.0), draw(2, 1.0)
    assert all(not torch.equal(a[k], b[k]) for k in range(4))
    cold, hot = draw(1, 0.5), draw(1, 1.5)
    assert all(not torch.equal(cold[k], hot[k]) for k in range(4))
    assert torch.equal(draw(1, 1.0), a)  # same seed, same set
    more = draw(1, 1.0, first=4)  # "more samples": none repeats the first four
    assert all(not torch.equal(more[i], a[k]) for i in range(4) for k in range(4))
    # per-sample generators: asking for 2 gives the first 2 of 4 (batched or not)
    torch.testing.assert_close(draw(1, 1.0, n=2), a[:2])


def test_hints_are_clamped_while_sampling_and_the_rest_is_conditioned_on_them():
    from engine.models.pic import Clamp
    from engine.types import Hints

    model = _random_model()
    s = TINY.chroma_size
    L = torch.rand(1, 1, TINY.size, TINY.size, dtype=torch.float64) * 100
    cov = torch.zeros(TINY.size, TINY.size, dtype=torch.float64)
    cov[2:8, 4:12] = 1.0  # hints on L's grid; the chroma grid is half the size
    ab = torch.zeros(2, TINY.size, TINY.size, dtype=torch.float64)
    ab[0], ab[1] = 0.41, -0.3
    hints = Hints(cov, ab)
    out = model.sample(L, 3, generator=torch.Generator().manual_seed(0), hints=hints)
    mask = hints.resized((s, s)).coverage >= 0.5
    assert mask.sum() > 0
    target = quantize(torch.tensor([0.41, -0.3], dtype=torch.float64))
    assert torch.equal(out[:, :, mask], target[None, :, None].expand(3, 2, int(mask.sum())))
    free = model.sample(L, 3, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out[:, :, ~mask], free[:, :, ~mask])  # later pixels saw the clamped ones
    # the cached sampler clamps exactly as the naive reference
    with torch.no_grad():
        cond = model.embedding(L).expand(2, -1, -1, -1)
    noise = Noise.draw(2, s, s, TINY.n_mix, torch.Generator().manual_seed(5), "cpu", torch.float64)
    clamp = Clamp.from_hints(hints, s, "cpu", torch.float64)
    assert torch.equal(model.sample_naive(cond, noise, 1.0, clamp=clamp), model.sample_cached(cond, noise, 1.0, clamp=clamp))


def test_the_spread_curve_reads_the_temperature_that_spreads_t_times_as_far():
    from training.stages.pic import USER_TEMPERATURES, spread_curve

    # spread doubles every 0.5 of temperature; 1.0 spreads 2; a noisy point folds back at 1.25
    measured = {0.5: 1.0, 1.0: 2.0, 1.25: 1.9, 1.5: 4.0, 2.0: 8.0}
    curve = dict(spread_curve(measured, 2.0))
    assert set(curve) == set(USER_TEMPERATURES)
    assert curve[0.5] == pytest.approx(0.5) and curve[1.0] == pytest.approx(1.0)
    assert curve[1.5] == pytest.approx(1.25 + 0.25 * (3 - 2) / (4 - 2))  # the fold is flattened to 2.0 at 1.25
    assert curve[2.0] == pytest.approx(1.5) and curve[3.0] == pytest.approx(1.75)
    assert dict(spread_curve({1.0: 2.0, 1.5: 3.0}, 2.0))[3.0] == 1.5  # beyond the measured: held at the last


def test_the_users_temperature_follows_the_files_spread_curve():
    model = _random_model().float()
    model.meta = {"sampling": {"temperature": 0.6}}
    assert model.internal_temperature(2.0) == pytest.approx(1.2)  # no curve: multiplied, as files before it
    model.meta = {"sampling": {"temperature": 0.6, "spread_curve": [[0.5, 0.5], [1.0, 0.6], [2.5, 0.8], [3.0, 0.9]]}}
    assert model.internal_temperature(1.0) == pytest.approx(0.6)
    assert model.internal_temperature(1.75) == pytest.approx(0.7)
    assert model.internal_temperature(10.0) == pytest.approx(0.9)  # held at the end: never noise
    assert model.internal_temperature(0.25) == pytest.approx(0.25)  # toward the modes in proportion
    L = torch.rand(1, 1, TINY.size, TINY.size) * 100
    s = model.cfg.chroma_size
    got = model.sample(L, 2, generator=torch.Generator().manual_seed(3), temperature=1.75)
    cond = model.condition(L).expand(2, -1, -1, -1)
    noise = Noise.draw(2, s, s, model.cfg.n_mix, torch.Generator().manual_seed(3), "cpu", cond.dtype)
    assert torch.equal(got, model.sample_cached(cond, noise, 0.7))


def test_export_and_calibrate_write_a_spread_curve_that_grows(tiny_pic, tiny_data, tmp_path):
    from engine.models.backbone import weights_digest
    from training.cli import main

    sampling = PIC.from_checkpoint(tiny_pic / "model.safetensors").meta["sampling"]
    temps = [t for _, t in sampling["spread_curve"]]
    assert temps == sorted(temps) and len(sampling["spread"]) >= 5
    copy = tmp_path / "pic.safetensors"
    ck = load_checkpoint(tiny_pic / "model.safetensors")
    from engine.checkpoint import save_checkpoint

    save_checkpoint(copy, ck.tensors, {**ck.meta, "sampling": {"temperature": 1.0}})  # as a file from before the curve
    assert main(["calibrate", "--checkpoint", str(copy), "--data", tiny_data, "--images", "4"]) == 0
    again = load_checkpoint(copy)
    assert again.meta["sampling"]["spread_curve"] and weights_digest(again.tensors) == weights_digest(ck.tensors)
