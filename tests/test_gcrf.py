"""G-CRF: the solvers against numpy, the stroke field on hand-built embeddings, gradients
against finite differences, and the training stages end to end on tiny data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.checkpoint import load_checkpoint
from engine.errors import CheckpointError
from engine.gcrf_solver import GCRFSolver, attention_row, gcrf_solve, similarity, solve_cg, system_matrix
from engine.models.gcrf import GCRF, GCRFConfig, GCRFField, position_features, soft_cap_norm
from engine.propagate import GCRFStrokeField
from training.cli import main
from training.stages.gcrf_eval import POINTS_ONLY_WEIGHT, evaluate_gcrf
from training.stages.gcrf_export import HINT_UNARY_CANDIDATES
from training.stages.gcrf_hoc import gcrf_train_solution, reveal_fraction

from conftest import TINY_VAE, synthetic_images, write_shard
from test_backbone import tiny_backbone  # noqa: F401  (a fixture)

D64 = torch.float64


def _random_system(p: int, seed: int, zero_some: bool = True):
    g = torch.Generator().manual_seed(seed)
    S = similarity(torch.randn(4, p, generator=g, dtype=D64))
    w = torch.rand(p, generator=g, dtype=D64) * 2
    if zero_some:
        w[torch.rand(p, generator=g) < 0.7] = 0.0  # most pixels unrevealed, as in training
        w[0] = 1.0
    rhs = torch.randn(p, 2, generator=g, dtype=D64)
    return S, w, rhs


@pytest.mark.parametrize("p", [16, 49, 256])  # 256: the factorised matrix is padded (see _pad_amount)
def test_direct_and_cg_solves_match_numpy(p):
    S, w, rhs = _random_system(p, seed=p)
    ref = np.linalg.solve(system_matrix(S, w).numpy(), rhs.numpy())
    assert np.allclose(gcrf_solve(S, w, rhs).numpy(), ref, atol=1e-9)
    S2, w2, rhs2 = _random_system(p, seed=p + 1)
    batched = gcrf_solve(torch.stack([S, S2]), torch.stack([w, w2]), torch.stack([rhs, rhs2]))
    assert np.allclose(batched[0].numpy(), ref, atol=1e-9)
    assert np.allclose(solve_cg(S, w, rhs, tol=1e-12, max_iter=5000).numpy(), ref, atol=1e-7)
    # rows of Ŝ are distributions without self-attention
    assert torch.allclose(S.sum(1), torch.ones(p, dtype=D64)) and float(S.diagonal().abs().max()) == 0.0


def test_incremental_woodbury_equals_from_scratch_after_strokes():
    p, w0 = 64, 0.3
    S, _, _ = _random_system(p, seed=3)
    solver = GCRFSolver(S, w0, max_rank=12, refactor_every=2)  # small rank: rebases and a refactor happen
    g = torch.Generator().manual_seed(4)
    weights = torch.full((p,), w0, dtype=D64)
    rhs = torch.zeros(p, 2, dtype=D64)
    for k in range(10):  # a drag: each update strokes a few more pixels
        idx = torch.randint(0, p, (3,), generator=g)
        weights[idx] = w0 + 5 * torch.rand(3, generator=g, dtype=D64)
        rhs[idx] = torch.randn(3, 2, generator=g, dtype=D64)
        if k == 6:
            weights[idx[0]] = 0.05  # weight below the base (d < 0): the non-SPD capacitance path
        x = solver.solve(weights, rhs)
        ref = np.linalg.solve(system_matrix(S, weights).numpy(), rhs.numpy())
        assert np.allclose(x.numpy(), ref, atol=1e-9), k
    assert solver.rebases >= 2


def _two_regions(size: int = 16, region_gain: float = 3.0, pos_gain: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-built embeddings: left/right halves one-hot (strong), plus position features."""
    left = torch.zeros(size, size, dtype=D64)
    left[:, : size // 2] = 1
    region = torch.stack([left, 1 - left]) * region_gain
    pos = position_features(size, dtype=D64) * pos_gain / math.sqrt(8)
    return torch.cat([region, pos]), left


def test_attention_sums_to_one_and_peaks_near_the_query():
    A, left = _two_regions()
    field = GCRFField.from_embeddings(A, base_weight=0.5, stroke_weight=5.0)
    for x, y in [(3, 8), (12, 4), (0, 0)]:
        att = field.attention(x, y)
        assert att.shape == (16, 16) and abs(float(att.sum()) - 1) < 1e-9
        yy, xx = divmod(int(att.argmax()), 16)
        assert max(abs(xx - x), abs(yy - y)) <= 2
        own = left if x < 8 else 1 - left
        assert float((att * own).sum()) > 0.9  # the mass stays in the query's region
    # the O(PD) row equals the matrix row
    assert torch.allclose(attention_row(A.flatten(1), 37), similarity(A.flatten(1))[37])


def test_stroke_recolours_its_region_not_the_other_one():
    A, left = _two_regions()
    field = GCRFField.from_embeddings(A, base_weight=0.5, stroke_weight=5.0)
    base = torch.zeros(2, 16, 16, dtype=D64)
    cov = torch.zeros(16, 16, dtype=D64)
    cov[7:9, 2:4] = 1.0
    cov[9, 2] = 0.5  # a partly covered cell
    target = torch.zeros(2, 16, 16, dtype=D64)
    target[0], target[1] = 0.5, -0.3
    assert torch.equal(field.propagate(torch.zeros(16, 16), target, base), base)  # no stroke: unchanged
    out = field.propagate(cov, target, base)
    change = (out - base).norm(dim=0)
    assert float(change[7:9, 2:4].mean()) > 0.3  # under the stroke: close to its colour
    near = float(change[4:12, 0:6].mean())
    far = float(change[:, 10:].mean())
    assert near > 10 * far
    # same result through the Woodbury solver as from a dense solve of the δ system
    c = cov.flatten()
    w = 0.5 + 5 * c
    rhs = (5 * c)[:, None] * (target.reshape(2, -1).T - base.reshape(2, -1).T)
    ref = np.linalg.solve(system_matrix(similarity(A.flatten(1)), w).numpy(), rhs.numpy())
    assert np.allclose((out - base).reshape(2, -1).T.numpy(), ref, atol=1e-9)


def test_training_solution_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    for grid in (4, 8):  # pooled (coarse training grid) and at the working size
        unary = (0.5 * torch.randn(1, 2, 8, 8, generator=g, dtype=D64)).requires_grad_()
        A = torch.randn(1, 3, 8, 8, generator=g, dtype=D64).requires_grad_()
        h = (torch.rand(1, grid * grid, generator=g) < 0.4).to(D64)
        h[0, 0] = 1
        target = torch.randn(1, 2, 8, 8, generator=g, dtype=D64)

        def loss(u, a):
            x = gcrf_train_solution(u, a, h, beta=1.0, grid=grid)
            return ((x - target) ** 2).sum()

        assert torch.autograd.gradcheck(loss, (unary, A), eps=1e-6, atol=1e-6)


def test_padded_factorisation_gradient_matches_a_directional_difference():
    """At P = 256 the factor is padded; check the analytic backward along random directions."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(1, 3, 16, 16, generator=g, dtype=D64)
    unary = torch.randn(1, 2, 16, 16, generator=g, dtype=D64)
    h = (torch.rand(1, 256, generator=g) < 0.2).to(D64)
    target = torch.randn(1, 2, 16, 16, generator=g, dtype=D64)
    f = lambda u, a: ((gcrf_train_solution(u, a, h, beta=1.0, grid=16) - target) ** 2).sum()
    u_, a_ = unary.clone().requires_grad_(), A.clone().requires_grad_()
    gu, ga = torch.autograd.grad(f(u_, a_), (u_, a_))
    for _ in range(2):
        du, da = torch.randn(unary.shape, generator=g, dtype=D64), torch.randn(A.shape, generator=g, dtype=D64)
        eps = 1e-6
        num = (f(unary + eps * du, A + eps * da) - f(unary - eps * du, A - eps * da)) / (2 * eps)
        ana = (gu * du).sum() + (ga * da).sum()
        assert abs(float(num - ana)) <= 1e-6 * max(1.0, abs(float(ana)))


def test_reveal_schedule_follows_the_paper():
    levels = [1.0, 0.75, 0.5, 0.25, 0.1]
    fr = [reveal_fraction(s, 1500, levels) for s in (0, 199, 201, 401, 601, 801, 1499)]
    assert fr == [1.0, 1.0, 0.75, 0.5, 0.25, 0.1, 0.1]


def test_embedding_cap_bounds_the_logits_of_s_and_leaves_small_embeddings_alone():
    torch.manual_seed(0)
    a = torch.randn(2, 8, 5, 5)
    small, big = soft_cap_norm(a * 0.05, 100.0), soft_cap_norm(a * 1e4, 100.0)
    assert torch.allclose(small, a * 0.05, rtol=1e-3, atol=1e-6)  # |a|² ≈ 0.02: untouched
    assert float((big**2).sum(1).max()) <= 100.0 + 1e-3  # |a|² ≈ 8e8: bounded
    assert torch.allclose(F.normalize(big, dim=1), F.normalize(a, dim=1), atol=1e-5)  # directions kept
    # through the model: a runaway embedding net gives bounded Ŝ logits only with the cap
    cfg = dict(size=16, width=4, latent_dim=4, mdn_hidden=8, embed_dim=4, embed_width=4)
    L = torch.rand(1, 1, 16, 16) * 100
    norms = []
    for cap in (0.0, 100.0):
        torch.manual_seed(0)
        model = GCRF(GCRFConfig(**cfg, embed_cap=cap), with_color_encoder=False).eval()
        with torch.no_grad():
            model.embed.out.weight.mul_(1e3)
            norms.append(float((model.embeddings(L) ** 2).sum(1).max()))
    assert norms[0] > 1e4 and norms[1] <= 100.0 + 1e-3


def _tiny_gcrf(size: int = 16) -> GCRF:
    torch.manual_seed(0)
    cfg = GCRFConfig(size=size, width=4, latent_dim=4, mdn_hidden=8, embed_dim=4, embed_width=4)
    return GCRF(cfg, with_color_encoder=False).eval()


def test_automatic_colorization_is_the_gcrf_mean_of_the_decoded_unary():
    model = _tiny_gcrf()
    L = torch.rand(1, 1, 16, 16) * 100
    x, unary = model.colorize(L, 3, generator=torch.Generator().manual_seed(1), mode="samples", return_unary=True)
    S = model.similarity(L)[0].double()
    beta = model.cfg.beta_test
    rhs = beta * unary.double().reshape(6, -1).T
    ref = gcrf_solve(S, torch.full((256,), beta, dtype=D64), rhs).T.reshape(3, 2, 16, 16)
    assert torch.allclose(x.double(), ref.clamp(-1, 1), atol=1e-4)
    att = model.attention(L, 5, 9)
    assert att.shape == (16, 16) and abs(float(att.sum()) - 1) < 1e-5


@torch.no_grad()
def test_beta_of_the_automatic_solve_is_tuned_on_train_against_a_dense_solve(tmp_path, tiny_data):
    """Export's β tuning scores each candidate by the best-of-n L1 of the G-CRF mean, which a
    dense solve reproduces; the file then carries β and automatic colorization solves with it."""
    from engine.colorizer import load_model
    from training import data as D
    from training.stages.gcrf_export import tune_beta_auto, tune_beta_file

    path = tmp_path / "m.safetensors"
    model = _tiny_model_file(path, size=16)
    lab = D.load_lab(tiny_data, "train", 16, 3)
    tune = tune_beta_auto(model, lab, candidates=(0.5, 5.0), n_samples=2)
    for beta in (0.5, 5.0):
        eob = []
        for i in range(3):
            _, unary = model.colorize(lab.L[i : i + 1], 2, mode="means", return_unary=True)
            rhs = beta * unary.double().reshape(4, -1).T
            S = model.similarity(lab.L[i : i + 1])[0].double()
            x = gcrf_solve(S, torch.full((256,), beta, dtype=D64), rhs).T.reshape(2, 2, 16, 16).clamp(-1, 1)
            eob.append(float((x - lab.ab[i][None].double()).abs().mean(dim=(1, 2, 3)).min()))
        assert abs(tune["by_beta"][str(beta)]["error_of_best_l1"] - np.mean(eob)) < 1e-4
    table = {float(k): v for k, v in tune["by_beta"].items()}
    vivid = [b for b, v in table.items() if v["colourfulness"] >= 0.85 * tune["colourfulness_truth"]]
    pick = min(vivid, key=lambda b: table[b]["error_of_best_l1"]) if vivid else max(table, key=lambda b: table[b]["colourfulness"])
    assert tune["best"] == pick and model.cfg.beta_auto == 0.0  # the model is left as it was
    free = tune_beta_auto(model, lab, candidates=(0.5, 5.0), n_samples=2, colour_tolerance=1.0)  # no colour bound
    assert free["best"] == min(table, key=lambda b: table[b]["error_of_best_l1"])
    strict = tune_beta_auto(model, lab, candidates=(0.5, 5.0), n_samples=2, colour_tolerance=-10.0)  # unreachable
    assert strict["best"] == max(table, key=lambda b: table[b]["colourfulness"])  # then the most colourful

    stored = tune_beta_file(path, tiny_data, 3)
    loaded = load_model(path)
    assert loaded.cfg.beta_auto == stored["best"] and loaded.meta["beta_tuning"]["images"] == 3
    L = lab.L[:1]
    x, unary = loaded.colorize(L, 2, mode="means", return_unary=True)
    b = loaded.cfg.beta_auto
    ref = gcrf_solve(loaded.similarity(L)[0].double(), torch.full((256,), b, dtype=D64), b * unary.double().reshape(4, -1).T)
    assert torch.allclose(x.double(), ref.T.reshape(2, 2, 16, 16).clamp(-1, 1), atol=1e-4)


def test_stroke_field_on_a_full_resolution_photo():
    from engine.colorizer import Colorization
    from engine.io import photo_from_array
    from engine.strokes import Stroke
    from conftest import synthetic_images

    model = _tiny_gcrf()
    photo = photo_from_array(synthetic_images(1, size=40)[0][:30])  # 40x30, not the model's 16x16
    field = GCRFStrokeField(model, photo)
    stroke = Stroke((200, 30, 30), 3, ((5.0, 5.0), (12.0, 8.0)))
    grey = field.propagate([stroke])
    assert grey.rgb.shape == (30, 40, 3) and grey.ab_low.shape == (2, 16, 16) and grey.method == "gcrf"
    red = grey.rgb[6, 8]
    assert red[0] > red[1] + 0.1 and red[0] > red[2] + 0.1  # under the stroke: reddish
    base = Colorization(photo.rgb, torch.zeros(2, 16, 16), "vae-mdn", "x", 0, 0)
    assert np.allclose(field.propagate([], base).rgb, photo.rgb, atol=2e-3)  # no stroke: the base as is
    att = field.attention(20.0, 15.0)
    assert att.shape == (30, 40) and att.min() >= 0 and abs(att.max() - 1) < 1e-6


def test_stages_resume_export_load_and_eval(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--data", tiny_data, "--out", str(run)]
    assert main(["gcrf-unary", *common, "--steps", "2", "--size", "32", *TINY_VAE]) == 0
    assert main(["gcrf-mdn", *common, "--steps", "2", "--batch-size", "8", "--log-every", "1"]) == 0
    hoc = ["gcrf-hoc", *common, "--batch-size", "4", "--embed-width", "4", "--embed-dim", "4", "--hoc-train-size", "16", "--log-every", "1"]
    assert main([*hoc, "--steps", "3", "--stop-after", "2"]) == 0  # interrupted ...
    st = load_checkpoint(run / "gcrf-hoc" / "state.safetensors")
    assert st.meta["step"] == 2 and not st.meta["finished"]
    assert main([*hoc, "--steps", "3"]) == 0  # ... and resumed by the same command
    st = load_checkpoint(run / "gcrf-hoc" / "state.safetensors")
    assert st.meta["step"] == 3 and st.meta["finished"]
    logs = [json.loads(x) for x in (run / "gcrf-hoc" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3] and {"hist", "mah", "reveal", "unary_hist"} <= set(logs[-1])
    vae = load_checkpoint(run / "vae" / "state.safetensors")
    frozen = [k for k in vae.tensors if k.startswith(("decoder.blocks.0.", "decoder.blocks.1.", "decoder.blocks.2."))]
    assert frozen and all(torch.equal(st.tensors[k], vae.tensors[k]) for k in frozen)  # incl. BatchNorm statistics
    assert not torch.equal(st.tensors["decoder.out.weight"], vae.tensors["decoder.out.weight"])  # top layer trained

    assert main(["export", "--out", str(run)]) == 0
    model = GCRF.from_checkpoint(run / "model.safetensors")
    meta = load_checkpoint(run / "model.safetensors").meta
    assert meta["method"] == "gcrf" and meta["stroke_tuning"]["best"] == model.cfg.stroke_base
    assert model.cfg.size == 32 and model.cfg.embed_dim == 4 and model.color_encoder is None
    assert torch.equal(model.embed.out.weight, st.tensors["embed.out.weight"])
    L = torch.rand(1, 1, 32, 32) * 100
    a = model.colorize(L, 3, generator=torch.Generator().manual_seed(7))
    b = model.colorize(L, 3, generator=torch.Generator().manual_seed(7))
    assert a.shape == (3, 2, 32, 32) and torch.equal(a, b) and float(a.abs().max()) <= 1
    field = model.field(L)
    cov = np.zeros((32, 32), np.float32)
    cov[10:13, 10:13] = 1
    out = field.propagate(cov, np.full((2, 32, 32), 0.4, np.float32), a[0])
    before, after = (a[0] - 0.4).abs()[:, 10:13, 10:13], (out - 0.4).abs()[:, 10:13, 10:13]
    assert out.shape == (2, 32, 32) and bool((after < before).all())  # the stroke pulls its pixels to its colour

    assert main(["export", "--out", str(run), "--method", "vae-mdn", "--dest", str(tmp_path / "v.safetensors")]) == 0
    with pytest.raises(CheckpointError, match="gcrf"):  # a VAE-MDN file is not a G-CRF
        GCRF.from_checkpoint(tmp_path / "v.safetensors")

    capsys.readouterr()
    sheet = tmp_path / "sheet.png"
    assert main(["eval", "--data", tiny_data, "--out", str(run), "--limit", "2", "--samples", "3", "--reveal-data", tiny_data,
                 "--sheet", str(sheet), "--points", "0,1,5,10,50,100"]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((run / "eval.json").read_text())
    assert printed == result and result["method"] == "gcrf" and 0 < result["pairwise_ssim"] <= 1
    table3 = result["psnr_vs_points"]
    assert table3["points"] == [0, 1, 5, 10, 50, 100] and len(table3["gcrf"]) == 6
    assert table3["gcrf"][-1] > table3["gcrf"][0]  # 100 true hints beat none
    assert len(table3["levin"]) == 6 and table3["levin"][-1] > table3["levin"][1]
    assert set(table3["curves"]) == {"gcrf", "gcrf_points_only", "sample", "levin", "grey"}  # all on the same points
    assert all(len(table3[k]) == 6 for k in table3["curves"])
    assert len(set(table3["grey"])) == 1 and len(set(table3["sample"])) == 1 and table3["sample"][0] == table3["gcrf"][0]
    assert table3["grey"][0] == table3["levin"][0] == table3["gcrf_points_only"][0]  # no hint: grey
    tuned = table3["points_only_tuning"]  # hints-only weights picked on the *train* split ...
    assert "train" in tuned["data"] and "test" in table3["protocol"]
    means = {k: np.mean(v) for k, v in tuned["psnr"].items()}
    assert means[f"base {tuned['base_weight']} hint {tuned['hint_weight']}"] == max(means.values())
    assert table3["points_only_weights"] == {"base": tuned["base_weight"], "hint": tuned["hint_weight"], "unit": "x beta_test"}
    from PIL import Image

    from training.sheets import SHEET_WIDTH

    with Image.open(table3["contact_sheet"]) as im:  # 2 images x (hints | Levin | 2 G-CRF | truth) at 128 px, x2,
        assert im.size == (SHEET_WIDTH, round(2 * 128 * 2 * SHEET_WIDTH / (5 * 128 * 2)))  # at a reader's width
    # reveal data without a train split: the weights are not tuned on test, the defaults are used
    write_shard(tmp_path / "only_test_00.npz", synthetic_images(1, seed=3))
    capsys.readouterr()
    table3 = evaluate_gcrf(run / "model.safetensors", tiny_data, limit=1, n_samples=2, reveal_data=str(tmp_path / "only"),
                           reveal_limit=1)["psnr_vs_points"]
    assert "train" in table3["points_only_tuning"]["skipped"] and table3["points"] == [1, 2, 5, 10, 20, 50, 100]
    assert all(len(table3[k]) == 7 for k in table3["curves"])
    assert table3["points_only_weights"]["base"] == POINTS_ONLY_WEIGHT

    # a second run reuses the first one's phase-1 and MDN states instead of training them again
    run2 = tmp_path / "run2"
    assert main(["gcrf-unary", "--data", tiny_data, "--out", str(run2), "--init-from", str(run)]) == 0
    for stage in ("vae", "mdn"):
        a_, b_ = load_checkpoint(run / stage / "state.safetensors"), load_checkpoint(run2 / stage / "state.safetensors")
        assert b_.meta["finished"] and all(torch.equal(a_.tensors[k], b_.tensors[k]) for k in a_.tensors)


def test_hoc_before_unary_says_what_to_run(tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="gcrf-unary"):
        main(["gcrf-hoc", "--data", tiny_data, "--out", str(tmp_path / "empty")])


def test_gcrf_samples_the_mixture_and_honours_hints():
    from engine.sampling import sample_generators
    from engine.types import Hints

    model = _tiny_gcrf()
    L = torch.rand(1, 1, 16, 16) * 100
    draw = lambda seed, t, **kw: model.sample(L, 4, generator=sample_generators(seed, 0, 4), temperature=t, **kw)
    a, b = draw(1, 1.0), draw(2, 1.0)
    assert torch.equal(a[0], b[0])  # the top mixture mean first
    assert all(not torch.equal(a[k], b[k]) for k in range(1, 4))  # (an untrained decoder barely uses z)
    cold, hot = draw(1, 0.5), draw(1, 1.5)
    assert all(not torch.equal(cold[k], hot[k]) for k in range(1, 4))
    codes = lambda t: model.sample_codes(L, 4, sample_generators(1, 0, 4), t)
    c_cold, c_hot = codes(0.5), codes(1.5)
    assert torch.equal(c_cold[0], c_hot[0]) and bool(((c_cold[1:] - c_hot[1:]).norm(dim=1) > 1e-3).all())
    cov = torch.zeros(16, 16)
    cov[4:8, 4:8] = 1.0
    target = torch.zeros(2, 16, 16)
    target[0], target[1] = 0.5, 0.3
    locked = draw(1, 1.0, hints=Hints(cov, target))
    err = lambda x: float((x[:, :, 4:8, 4:8] - target[None, :, 4:8, 4:8]).abs().mean())
    assert err(locked) < 0.1 < err(a)  # every sample agrees with the hints there
    assert not torch.equal(locked[1], locked[2])  # and still differs elsewhere


def test_a_batch_of_gcrf_samples_is_the_samples_drawn_one_by_one():
    """The app asks G-CRF for a whole batch in one call (BATCH_AT_ONCE: one Ŝ, one solve for
    all); that must give the set a call per sample gives, sample j of seed s whatever the batching."""
    from engine.sampling import sample_generators

    model = _tiny_gcrf()
    assert type(model).BATCH_AT_ONCE
    L = torch.rand(1, 1, 16, 16) * 100
    batch = model.sample(L, 4, generator=sample_generators(7, 0, 4))
    one_by_one = torch.cat([model.sample(L, 1, generator=sample_generators(7, j, 1), include_mode=j == 0)
                            for j in range(4)])
    torch.testing.assert_close(batch, one_by_one, atol=2e-4, rtol=0)  # the CG stops at 1e-5 per column


def test_vae_mdn_codes_are_chosen_to_agree_with_hints():
    from engine.models.vae_mdn import _hint_error
    from engine.sampling import sample_generators
    from engine.types import Hints

    model = _tiny_gcrf()  # a VAE-MDN underneath: its codes and decoder
    L = torch.rand(1, 1, 16, 16) * 100
    cov = torch.zeros(16, 16)
    cov[2:6, 8:14] = 1.0
    target = torch.zeros(2, 16, 16)
    target[0], target[1] = -0.2, 0.4
    gens = lambda: sample_generators(3, 0, 6)
    with torch.no_grad():  # inference, as the app calls it
        feats, grey = model.grey_features(L)
        free = model.decoder(model.codes(L, 6, gens(), 1.0, True, None, feats, grey), feats, grey)
        hinted = model.decoder(model.codes(L, 6, gens(), 1.0, True, Hints(cov, target), feats, grey), feats, grey)
    assert float(_hint_error(hinted, cov, target).mean()) < float(_hint_error(free, cov, target).mean())


def test_attention_of_a_real_tiny_gcrf_stroke_field_peaks_at_the_query():
    """The app's attention overlay: a real (untrained, tiny) G-CRF's field on a photo."""
    from engine.io import photo_from_array

    model = _tiny_gcrf()
    photo = photo_from_array(synthetic_images(1, size=48)[0])
    field = GCRFStrokeField(model, photo)
    att = field.attention(10.0, 30.0)
    assert att.shape == (48, 48) and att.min() >= 0 and abs(att.max() - 1) < 1e-6
    ref = attention_row(field.embeddings(), (30 * 16 // 48) * 16 + 10 * 16 // 48, True).view(16, 16)
    assert abs(float(ref.sum()) - 1) < 1e-5


# --- learned propagation of hints (the hint branch) ------------------------------------------


def _tiny_model_file(path, size: int = 32, **cfg_fields):
    from engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = GCRFConfig(size=size, width=4, latent_dim=4, mdn_hidden=8, embed_dim=4, embed_width=4, **cfg_fields)
    model = GCRF(cfg, with_color_encoder=False).eval()
    config = cfg.to_dict()
    if not cfg.hint_branch:  # a file from before the hint branch: none of its fields
        for k in ("hint_branch", "hint_width", "hint_unary"):
            config.pop(k)
    save_checkpoint(path, model.inference_tensors(), {"method": "gcrf", "config": config})
    return model


def test_models_without_a_hint_branch_load_and_work(tmp_path):
    from engine.colorizer import load_model
    from engine.types import Hints

    model = _tiny_model_file(tmp_path / "old.safetensors")
    assert not any(k.startswith("hint_net.") for k in model.inference_tensors())
    old = load_model(tmp_path / "old.safetensors")
    assert not old.has_hint_branch and old.cfg.hint_branch is False
    L = torch.rand(1, 1, 32, 32) * 100
    cov = torch.zeros(32, 32)
    cov[4:8, 4:8] = 1.0
    x = old.sample(L, 2, generator=torch.Generator().manual_seed(0), hints=Hints(cov, torch.full((2, 32, 32), 0.3)))
    assert x.shape == (2, 2, 32, 32) and bool(torch.isfinite(x).all())
    shipped = Path(__file__).resolve().parent.parent / "resources" / "models" / "gcrf_general.safetensors"
    if shipped.exists():  # the shipped default carries a trained branch, its pull tuned on train at export
        general = load_model(shipped)
        assert general.has_hint_branch and general.cfg.hint_unary == general.meta["hint_tuning"]["hint_unary"]


def test_hint_branch_trains_exports_and_a_hint_stays_local(tmp_path, tiny_data):
    """gcrf-hints fine-tunes a branch on a finished model (--init), export adds it to the file,
    and the app's field with it recolours the hinted region more than the far side."""
    from engine.colorizer import Colorization, load_model
    from engine.io import photo_from_array
    from engine.strokes import Stroke

    init = tmp_path / "init.safetensors"
    base_model = _tiny_model_file(init)
    run = tmp_path / "hints"
    args = ["gcrf-hints", "--data", tiny_data, "--out", str(run), "--init", str(init), "--batch-size", "4",
            "--hint-width", "4", "--log-every", "1", "--steps", "3"]
    assert main(args) == 0
    logs = [json.loads(x) for x in (run / "gcrf-hints" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in logs)
    st = load_checkpoint(run / "gcrf-hints" / "state.safetensors")
    assert st.meta["finished"] and float(st.tensors["hint_net.out.weight"].abs().sum()) > 0  # trained from zero
    assert main(["export", "--out", str(run), "--hint-tune-images", "3"]) == 0
    model = load_model(run / "model.safetensors")
    assert model.has_hint_branch and model.cfg.hint_width == 4
    tuning = model.meta["hint_tuning"]  # the pull toward the branch, tuned on train and stored: what the app uses
    assert "train (3 images)" in tuning["data"] and set(tuning["psnr"]) == {str(c) for c in HINT_UNARY_CANDIDATES}
    assert model.cfg.hint_unary == tuning["hint_unary"] == float(max(tuning["psnr"], key=tuning["psnr"].get))
    cache = run / "gcrf-hints" / "tune.json"
    stored = json.loads(cache.read_text())
    stored["result"]["hint_unary"] = 0.003
    cache.write_text(json.dumps(stored))
    again = ["export", "--out", str(run), "--dest", str(tmp_path / "again.safetensors")]
    assert main([*again, "--hint-tune-images", "3"]) == 0
    assert load_model(tmp_path / "again.safetensors").cfg.hint_unary == 0.003  # a rerun reads the cached tuning
    assert main([*again, "--hint-tune-images", "2"]) == 0  # other images: tuned again
    assert "train (2 images)" in load_model(tmp_path / "again.safetensors").meta["hint_tuning"]["data"]
    assert not (run / "gcrf-hints" / "untuned.safetensors").exists()
    assert torch.equal(model.decoder.out.weight, base_model.decoder.out.weight)  # only the branch was trained
    assert torch.equal(model.hint_net.out.weight, st.tensors["hint_net.out.weight"])
    more = tmp_path / "more"  # --init a file that has a branch: training goes on from it (lr ~0: nothing moves)
    assert main(["gcrf-hints", "--data", tiny_data, "--out", str(more), "--init", str(run / "model.safetensors"),
                 "--batch-size", "4", "--hint-width", "4", "--steps", "1", "--lr", "1e-12"]) == 0
    cont = load_checkpoint(more / "gcrf-hints" / "state.safetensors")
    assert torch.allclose(cont.tensors["hint_net.out.weight"], st.tensors["hint_net.out.weight"], rtol=0, atol=1e-9)

    photo = photo_from_array(synthetic_images(1, size=48)[0])
    field = GCRFStrokeField(model, photo)
    assert field.learned
    base = Colorization(photo.rgb, torch.zeros(2, 32, 32), "vae-mdn", "x", 0, 0)
    out = field.propagate([Stroke((30, 60, 220), 3, ((6.0, 6.0), (10.0, 8.0)))], base)
    d = np.abs(out.rgb - photo.rgb).sum(-1)
    assert d[:14, :14].mean() > 3 * d[30:, 30:].mean() and d[4:10, 4:10].mean() > 0.1  # local, and coloured there
    assert np.allclose(field.propagate([], base).rgb, photo.rgb, atol=2e-3)  # no stroke: the base as is
    alone = field.propagate([Stroke((30, 60, 220), 3, ((6.0, 6.0), (10.0, 8.0)))])  # hints alone (--base grey)
    assert alone.rgb.shape == photo.rgb.shape and alone.rgb[7, 8, 2] > alone.rgb[7, 8, 0]


def test_simulated_hints_reveal_the_truth():
    from training.stages.gcrf_hints import keep_target, simulate_hints

    g = torch.Generator().manual_seed(0)
    ab = torch.zeros(6, 2, 32, 32)
    ab[:, 0, :, :16], ab[:, 1, :, 16:] = 0.4, -0.3
    cov, hint_ab, colours, valid = simulate_hints(ab, max_points=20, stroke_prob=0.5, generator=g)
    assert cov.shape == (6, 1, 32, 32) and float(cov.min()) >= 0 and float(cov.max()) <= 1
    on = cov[:, 0] > 0.999  # fully covered pixels inside one half carry that half's colour
    inner = on & (torch.arange(32)[None, None] < 12)  # squares are at most 4 px wide: all left
    assert bool(inner.any()) and torch.allclose(hint_ab[:, 0][inner], torch.tensor(0.4), atol=1e-5)
    assert bool(((hint_ab.abs().sum(1) > 0) <= (cov[:, 0] > 0)).all())  # colour only where covered
    kept = keep_target(ab, torch.zeros_like(ab), colours[:, :0], valid[:, :0], 0.1)
    assert torch.equal(kept, torch.zeros_like(ab))  # no hint: keep the sample
    one = keep_target(ab, torch.zeros_like(ab), torch.tensor([[[0.4, 0.0]]]).expand(6, 1, 2), torch.ones(6, 1, dtype=torch.bool), 0.1)
    assert torch.allclose(one[..., :16], ab[..., :16], atol=1e-5)  # the hinted colour's half is taught ...
    assert float(one[..., 16:].abs().max()) < 1e-3  # ... the other half keeps the sample


def test_hint_branch_on_a_model_that_looks_through_a_backbone(tiny_data, tiny_backbone, tmp_path):
    """gcrf-hints on a run's own finished stages (no --init) when the G-CRF looks through the
    shared backbone: the branch takes the adapter's features; the exported file loads with it."""
    from engine.colorizer import Colorizer
    from engine.io import photo_from_array
    from engine.strokes import Stroke

    from conftest import TINY_VAE

    models = tiny_backbone.parent
    run = tmp_path / "g"
    common = ["--data", tiny_data, "--out", str(run)]
    assert main(["gcrf-unary", *common, "--steps", "2", *TINY_VAE, "--backbone-file", str(tiny_backbone)]) == 0
    assert main(["gcrf-mdn", *common, "--steps", "2", "--batch-size", "8", "--log-every", "1"]) == 0
    assert main(["gcrf-hoc", *common, "--steps", "2", "--batch-size", "4", "--embed-width", "4", "--embed-dim", "4",
                 "--hoc-train-size", "16", "--log-every", "1"]) == 0
    assert main(["gcrf-hints", *common, "--steps", "2", "--batch-size", "4", "--hint-width", "4", "--log-every", "1"]) == 0
    assert main(["export", "--out", str(run), "--dest", str(models / "gcrf_general.safetensors"),  # stroke weight: not tuned here
                 "--hint-tune-images", "2", "--beta-tune-images", "2", "--tune-images", "0"]) == 0
    c = Colorizer(device="cpu", model_dirs=[models])
    model = c.model(c.resolve("gcrf", "general"))
    assert model.has_hint_branch and model.backbone is not None and model.cfg.backbone
    photo = photo_from_array(synthetic_images(1, size=40)[0])
    out = c.field(photo, "gcrf").propagate([Stroke((30, 200, 40), 3, ((8.0, 8.0), (14.0, 10.0)))])
    assert out.rgb.shape == (40, 40, 3) and out.rgb[9, 10, 1] > out.rgb[9, 10, 0]

    # A G-CRF file of the user's own (not a shipped default) paints the strokes of its samples.
    mine = tmp_path / "mine.safetensors"
    shutil.copy(models / "gcrf_general.safetensors", mine)
    used: list = []
    real_field = c.field
    c.field = lambda photo, method="auto", family=None, checkpoint=None: used.append(checkpoint) or real_field(
        photo, method, family, checkpoint)
    c.sample(photo, "gcrf", n=1, checkpoint=str(mine), strokes=[Stroke((30, 200, 40), 3, ((8.0, 8.0),))])
    assert used and Path(used[-1]) == mine


def test_a_cached_tuning_is_reused_only_for_the_same_weights_and_data(tmp_path):
    """export caches its tunings; a stage trained further (other weights) must tune again."""
    from engine.models.backbone import weights_digest
    from training.stages.gcrf_export import _cached_tuning

    calls: list[int] = []
    compute = lambda: calls.append(1) or {"best": len(calls)}
    w = {"a": torch.ones(3), "b": torch.zeros(2, dtype=torch.float16)}
    key = lambda t: {"model": weights_digest(t), "data": "d", "images": 4}
    cache = tmp_path / "tune.json"
    assert _cached_tuning(cache, key(w), compute, "x") == {"best": 1}
    assert _cached_tuning(cache, key({k: v.clone() for k, v in w.items()}), compute, "x") == {"best": 1}  # same weights
    trained = {**w, "a": torch.tensor([1.0, 1.0, 1.0 + 1e-6])}
    assert _cached_tuning(cache, key(trained), compute, "x") == {"best": 2} and len(calls) == 2
    assert weights_digest(w) != weights_digest({**w, "b": w["b"].float()})  # dtype counts

    def missing():
        raise FileNotFoundError("no train split")

    assert _cached_tuning(tmp_path / "other.json", key(w), missing, "x") is None  # warned, the model keeps its value
    assert not (tmp_path / "other.json").exists()


def test_batched_stroke_solve_is_the_fields_solve_and_a_dense_solve(tmp_path):
    """Training's solve in the loop (solve_strokes_batch) must be the energy the app's field
    solves: same answer as GCRFStrokeField.solve_hints (hints alone and over a base), and its
    gradient in the prior that of a dense float64 solve built from Ŝ by hand."""
    from engine.io import photo_from_array
    from engine.propagate import (STROKE_LAPLACIAN, STROKE_WEIGHT_GAIN, solve_strokes_batch, stroke_embeddings,
                                  stroke_smoothness, to_solve_grid)
    from engine.types import Hints

    model = _tiny_model_file(tmp_path / "m.safetensors", hint_branch=True, hint_width=4)
    with torch.no_grad():  # a branch that does something (a fresh one returns the base)
        model.hint_net.out.weight.normal_(0, 0.05)
    photo = photo_from_array(synthetic_images(1, size=32)[0])
    field = GCRFStrokeField(model, photo)
    cov = torch.zeros(32, 32)
    cov[3:6, 4:7], cov[20:22, 25:28] = 1.0, 0.5
    ab = torch.zeros(2, 32, 32)
    ab[0, :, :16], ab[1, :, 16:] = 0.4, -0.3
    base = torch.full((2, 32, 32), 0.05)
    L = field.L_small()
    feats, grey = model.grey_features(L)
    A = to_solve_grid(stroke_embeddings(model, L, feats, grey), field.grid).flatten(2)
    S = similarity(A, model.cfg.exclude_self)
    beta, h = model.cfg.beta_test, Hints(cov, ab)
    w0, ws = beta * model.cfg.hint_unary, beta * STROKE_WEIGHT_GAIN
    with torch.no_grad():
        alone = model.hint_unary(feats, grey, None, h).float()
        over = model.hint_unary(feats, grey, base[None], h).float()
    for b, prior, local in ((torch.zeros(1, 2, 32, 32), alone, None), (base[None], over - base[None], False)):
        got = solve_strokes_batch(stroke_smoothness(S), cov[None], ab[None], b, prior, w0, ws)[0]
        want, _ = field.solve_hints(cov, ab, None if local is None else base, local=bool(local))
        assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())

    # gradient in the prior vs a dense float64 solve with M written out from Ŝ
    S64 = S[0].double()
    K = torch.eye(S64.shape[0], dtype=D64) - S64
    W = 0.5 * (S64 + S64.T)
    M = K.T @ K + STROKE_LAPLACIAN * (torch.diag(W.sum(1)) - W) + torch.diag(w0 + ws * cov.flatten().double())
    g = torch.Generator().manual_seed(1)
    prior = (torch.randn(1, 2, 32, 32, generator=g) * 0.1).requires_grad_(True)
    weight = torch.randn(1, 2, 32, 32, generator=g)
    (solve_strokes_batch(stroke_smoothness(S64[None]), cov[None], ab[None], torch.zeros(1, 2, 32, 32), prior, w0, ws)
     * weight).sum().backward()
    ref = w0 * torch.linalg.solve(M, weight[0].reshape(2, -1).T.double())  # M symmetric: dL/dprior = w0 M⁻¹ g
    assert torch.allclose(prior.grad[0].reshape(2, -1).T.double(), ref, atol=1e-6)


def test_hint_branch_trains_through_the_stroke_solve(tmp_path, tiny_data):
    """--solve-weight adds the loss on the field's solve: it is logged, and it changes what the
    branch learns (same seed, other weights than the branch's own loss alone)."""
    init = tmp_path / "init.safetensors"
    _tiny_model_file(init)
    common = ["--data", tiny_data, "--init", str(init), "--batch-size", "4", "--hint-width", "4", "--log-every", "1",
              "--steps", "3"]
    assert main(["gcrf-hints", *common, "--out", str(tmp_path / "plain")]) == 0
    assert main(["gcrf-hints", *common, "--out", str(tmp_path / "solve"), "--solve-weight", "4", "--solve-images", "2"]) == 0
    logs = [json.loads(x) for x in (tmp_path / "solve" / "gcrf-hints" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["mse_solved"]) and r["loss"] > r["mse_solved"] for r in logs)
    plain = load_checkpoint(tmp_path / "plain" / "gcrf-hints" / "state.safetensors").tensors
    solve = load_checkpoint(tmp_path / "solve" / "gcrf-hints" / "state.safetensors").tensors
    assert not torch.allclose(plain["hint_net.out.weight"], solve["hint_net.out.weight"])


def test_batched_hints_resize_like_each_image_alone():
    """Training puts a batch of simulated hints on the solve grid with Hints.resized, the field
    one image's strokes: both must give the same grid."""
    from engine.types import Hints

    g = torch.Generator().manual_seed(2)
    cov = (torch.rand(3, 16, 16, generator=g) < 0.1).float() * torch.rand(3, 16, 16, generator=g)
    ab = torch.rand(3, 2, 16, 16, generator=g) - 0.5
    batch = Hints(cov, ab).resized((8, 8))
    assert batch.coverage.shape == (3, 8, 8) and batch.ab.shape == (3, 2, 8, 8)
    for i in range(3):
        one = Hints(cov[i], ab[i]).resized((8, 8))
        assert torch.allclose(batch.coverage[i], one.coverage) and torch.allclose(batch.ab[i], one.ab)
        hand = F.avg_pool2d((ab[i] * cov[i])[None], 2)[0] / F.avg_pool2d(cov[i][None, None], 2)[0].clamp(min=1e-8)
        assert torch.allclose(one.ab, hand, atol=1e-6)  # the coverage-weighted mean, by hand
