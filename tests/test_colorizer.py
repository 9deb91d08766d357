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


def _differ(x, y) -> bool:
    return float((x.ab_low - y.ab_low).abs().max()) > 1e-4


def test_first_sample_is_the_mode_and_every_other_depends_on_seed_and_temperature(colorizer, photo):
    a = colorizer.sample(photo, n=5, seed=1)
    b = colorizer.sample(photo, n=5, seed=2)
    np.testing.assert_array_equal(a[0].rgb, b[0].rgb)  # the most likely one, seed-independent
    assert all(_differ(x, y) for x, y in zip(a[1:], b[1:]))
    cold = colorizer.sample(photo, n=5, seed=1, temperature=0.5)
    hot = colorizer.sample(photo, n=5, seed=1, temperature=1.5)
    assert all(_differ(x, y) for x, y in zip(cold[1:], hot[1:]))
    # a wider temperature spreads the draws further from the mode
    spread = lambda s: float(torch.stack([c.ab_low - s[0].ab_low for c in s[1:]]).abs().mean())
    assert spread(hot) > spread(cold)


def test_more_samples_continue_the_set_without_repeats(colorizer, photo):
    whole = colorizer.sample(photo, n=6, seed=4)
    head = colorizer.sample(photo, n=3, seed=4)
    more = colorizer.sample(photo, n=3, seed=4, first=3)
    assert [c.index for c in more] == [3, 4, 5]
    for x, y in zip(whole, head + more):  # asking for more = asking for all at once
        torch.testing.assert_close(x.ab_low, y.ab_low, atol=1e-5, rtol=0)
    again = colorizer.sample(photo, n=4, seed=4, first=6)
    got = whole + again
    assert all(_differ(x, y) for i, x in enumerate(got) for y in got[i + 1 :])  # never a duplicate
    alone = colorizer.sample(photo, n=1, seed=4, first=4)[0]  # one gallery entry recreated alone
    torch.testing.assert_close(alone.ab_low, whole[4].ab_low, atol=1e-5, rtol=0)


def test_sample_seeds_are_unrelated_for_neighbours():
    from engine.sampling import sample_seed

    seeds = {sample_seed(s, k) for s in range(20) for k in range(20)}
    assert len(seeds) == 400 and all(0 <= v < 2**63 for v in seeds)


def test_ambiguity_map_is_high_where_samples_disagree():
    from engine.colorizer import ambiguity_map
    from engine.types import Colorization

    rng = np.random.default_rng(0)
    grey = np.full((20, 30, 3), 0.5, np.float32)
    samples = []
    for k in range(4):
        rgb = grey.copy()
        rgb[:, 15:] = rng.uniform(0.2, 0.8, 3)  # the right half changes colour from sample to sample
        samples.append(Colorization(rgb, torch.zeros(2, 4, 4), "x", "x", k, 0))
    amb = ambiguity_map(samples)
    assert amb.shape == (20, 30) and amb.dtype == np.float32
    assert abs(amb.max() - 1) < 1e-6 and amb.min() >= 0
    assert amb[:, 20:].mean() > 0.5 and amb[:, :10].max() < 0.05
    assert ambiguity_map(samples[:1]).max() == 0 and ambiguity_map(samples, size=(15, 10)).shape == (10, 15)


def test_lock_and_resample_samples_agree_with_the_strokes(colorizer, photo):
    from engine.strokes import Stroke, color_ab_at

    stroke = Stroke((30, 60, 220), 8, ((20.0, 30.0), (50.0, 60.0)))
    got = colorizer.sample(photo, n=3, seed=5, strokes=[stroke])
    free = colorizer.sample(photo, n=3, seed=5)
    lab = lambda c: rgb_to_lab(torch.from_numpy(c.rgb).permute(2, 0, 1).double()).numpy()
    for g, f in zip(got, free):
        at = lab(g)[:, 40, 35]  # under the stroke: the stroke's colour at that pixel's lightness
        want = color_ab_at(stroke.color, photo.L[40, 35]) * 128
        assert np.linalg.norm(at[1:] - want) < 0.25 * np.linalg.norm(want)
        assert g.index == f.index and g.seed == 5
    assert _differ(got[1], got[2])  # the rest is still resampled


def test_engine_has_no_import_cycle():
    """Every import between engine modules (at module level or inside functions) as a graph:
    it must be acyclic, and engine.types must import nothing of the engine but errors."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "engine"
    mods = {".".join(("engine", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([base] if base else [])])
                cands = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in cands if c in mods and c != name}
        graph[name] = deps
    assert graph["engine.types"] <= {"engine.errors"}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d):], d]) if d in path else d)
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_models_implement_the_one_interface():
    from engine.models import registry
    from engine.types import SamplingModel

    reg = registry()
    assert {"vae-mdn", "pic", "gcrf"} <= set(reg)
    for method, cls in reg.items():
        assert cls.METHOD == method and isinstance(cls.LABEL, str)
        assert callable(cls.sample) and isinstance(cls.input_size, property)
    from engine.colorizer import Colorizer

    c = Colorizer(device="cpu")
    for info in c.available():
        assert isinstance(c.model(info), SamplingModel)


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
        if f.stem.startswith("backbone_"):  # shared by a family's methods, not listed as a method
            assert f.stem not in names and f.stat().st_size <= 25 * 2**20
            continue
        assert f.stem in names
        assert f.stat().st_size <= 10 * 2**20, f"{f.name}: issue 12 allows 10 MiB per method file"
        c.model(next(m for m in c.available() if m.name == f.stem))  # loads with this code's configs


# --- running out of memory ----------------------------------------------------------------------


def _oom_when(monkeypatch, colorizer, fails):
    """Make the loaded VAE-MDN's sample raise torch's out-of-memory error whenever
    ``fails(model, L, n)`` says so, recording the batch sizes asked for."""
    model = colorizer.model(colorizer.resolve("vae-mdn"))
    cls, real, calls = type(model), type(model).sample, []

    def sample(self, L, n, **kw):
        calls.append((self is model, n))
        if fails(self is model, L, n):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, L, n, **kw)

    monkeypatch.setattr(cls, "sample", sample)
    return calls


def test_out_of_memory_retries_in_smaller_batches_with_the_same_results(colorizer, photo, monkeypatch, caplog):
    expected = colorizer.sample(photo, n=8, seed=5)
    calls = _oom_when(monkeypatch, colorizer, lambda original, L, n: n > 2)
    steps = []
    with caplog.at_level("WARNING", logger="engine"):
        got = colorizer.sample(photo, n=8, seed=5, progress=lambda f, m: steps.append((f, m)))
    assert [n for _, n in calls] == [8, 4, 2, 2, 2, 2]
    for a, b in zip(expected, got):  # each sample's randomness is its own: same set, any batching
        torch.testing.assert_close(a.ab_low, b.ab_low)
    assert [c.index for c in got] == list(range(8))
    assert "trying 4 at a time" in caplog.text and "trying 2 at a time" in caplog.text
    assert any("2 at a time" in m for _, m in steps)
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_gpu_out_of_memory_falls_back_to_the_cpu_and_says_so(colorizer, photo, monkeypatch, caplog):
    """No GPU here: the colorizer is told its device is "cpu:0" (a device that is not the CPU
    fallback, yet works), and the model fails there for any batch, as a full GPU would."""
    expected = colorizer.sample(photo, n=3, seed=2)
    colorizer.device = torch.device("cpu", 0)
    calls = _oom_when(monkeypatch, colorizer, lambda original, L, n: original)
    with caplog.at_level("WARNING", logger="engine"):
        got = colorizer.sample(photo, n=3, seed=2)
    assert calls == [(True, 3), (True, 1), (False, 3)]  # 3, then 1 at a time, then all on a CPU copy
    assert "colorizing on the CPU instead" in caplog.text
    for a, b in zip(expected, got):
        torch.testing.assert_close(a.ab_low, b.ab_low)
    colorizer.sample(photo, n=1, seed=2)  # the next photo tries the GPU first again
    assert calls[3:] == [(True, 1), (False, 1)]


def test_gpu_out_of_memory_while_upsampling_finishes_on_the_cpu(colorizer, photo, monkeypatch, caplog):
    from engine.colorizer import Colorizer

    expected = colorizer.sample(photo, n=2, seed=1)
    colorizer.device = torch.device("cpu", 0)
    real = Colorizer.upsample

    def upsample(self, photo, ab_low, report=None, cancel=None, device=None):
        if device is None:
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real(self, photo, ab_low, report, cancel, device)

    monkeypatch.setattr(Colorizer, "upsample", upsample)
    with caplog.at_level("WARNING", logger="engine"):
        got = colorizer.sample(photo, n=2, seed=1)
    assert "finishing on the CPU" in caplog.text
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a.rgb, b.rgb)


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 8000000000000 bytes."),
    torch.OutOfMemoryError("out of memory"),
])
def test_out_of_memory_on_the_cpu_even_for_one_sample_is_one_clear_error(colorizer, photo, monkeypatch, error):
    from engine.errors import OutOfMemory

    model = colorizer.model(colorizer.resolve("vae-mdn"))

    def sample(self, L, n, **kw):
        raise error

    monkeypatch.setattr(type(model), "sample", sample)
    with pytest.raises(OutOfMemory) as info:
        colorizer.sample(photo, n=4)
    text = str(info.value)
    assert "Not enough memory" in text and "fewer" in text and "alloc_cpu" not in text


def test_other_errors_are_not_taken_for_out_of_memory(colorizer, photo, monkeypatch):
    model = colorizer.model(colorizer.resolve("vae-mdn"))
    calls = []

    def sample(self, L, n, **kw):
        calls.append(n)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(type(model), "sample", sample)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        colorizer.sample(photo, n=4)
    assert calls == [4]  # no retry


@pytest.mark.parametrize("depth", [8, 16])
def test_cpu_upsampling_is_the_torch_conversion_at_the_photos_depth(colorizer, depth, monkeypatch):
    """The CPU path (the export kernel, a thread per sample) gives the torch path's colours to
    within half a level of the photo's bit depth, the same on one thread as on several, and
    stops between strips when cancelled."""
    import engine.colorizer as C
    from engine.color import AB_SCALE, guided_upsample_ab, recombine

    g = torch.Generator().manual_seed(3)
    grey = synthetic_images(1, size=48, seed=4)[0]
    photo = photo_from_array(grey.astype(np.uint16) * 257 if depth == 16 else grey, bit_depth=depth)
    ab = (torch.rand(3, 2, 16, 16, generator=g) - 0.5) * 0.8  # saturated: the gamut mapping works too
    L = torch.from_numpy(photo.L)
    want = recombine(L, guided_upsample_ab(ab * AB_SCALE, L)).permute(0, 2, 3, 1).numpy()
    monkeypatch.setattr(C, "CPU_STRIP_PIXELS", 48 * 5)  # strips of 5 rows
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        several = colorizer.upsample(photo, ab, device=torch.device("cpu"))
        torch.set_num_threads(1)
        one = colorizer.upsample(photo, ab, device=torch.device("cpu"))
    finally:
        torch.set_num_threads(torch_threads)
    level = 1 / (65535 if depth == 16 else 255)
    for k in range(3):
        assert several[k].dtype == np.float32 and several[k].shape == (48, 48, 3)
        assert np.array_equal(several[k], one[k])
        assert np.abs(several[k] - want[k]).max() <= 0.5 * level + 2e-4  # rounding + float32 vs the torch order
    token = CancelToken()
    seen: list[float] = []
    def report(f, m):
        seen.append(f)
        token.cancel()  # cancel once the first sample is done: the rest stop at their next strip
    with pytest.raises(Cancelled):
        torch.set_num_threads(1)
        try:
            colorizer.upsample(photo, ab, report, token, device=torch.device("cpu"))
        finally:
            torch.set_num_threads(torch_threads)
    assert seen == [pytest.approx(1 / 3)]
