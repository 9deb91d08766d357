"""engine.cli and the divcolor command: batches, names, arguments, manners, large scans."""

import argparse
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.batch import output_paths
from engine.cli import build_parser, main
from engine.io import load_photo

ROOT = Path(__file__).resolve().parent.parent


def _photos(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:90]
    grey = (xx * 2 + yy).astype(np.uint8)
    files = {}
    Image.fromarray(grey).save(tmp_path / "grey.png"); files["grey.png"] = (90, 60)
    rgb = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg"); files["rgb.jpg"] = (70, 50)
    rgba = np.dstack([rgb, np.full((50, 70), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png"); files["rgba.png"] = (70, 50)
    g16 = (xx * 700 + yy * 10).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "grey16.png"); files["grey16.png"] = (90, 60)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° on display: stored 70x50 shows as 50x70
    img.save(tmp_path / "rotated.jpg", exif=exif); files["rotated.jpg"] = (50, 70)
    return files


def test_colorize_many_kinds_of_photo(tiny_model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    files = _photos(src)
    out = tmp_path / "out"
    rc = main(["colorize", str(src), "-o", str(out), "-n", "2", "--checkpoint", str(tiny_model), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    for name, size in files.items():
        stem = name.rsplit(".", 1)[0]
        for k in range(2):
            res = out / f"{stem}_vae-mdn_{k}.png"
            assert res.exists(), res
            with Image.open(res) as im:
                assert im.size == size
                if stem == "rgba":
                    assert im.mode in ("RGBA",) and np.asarray(im)[..., 3].max() == 128
        photo, result = load_photo(src / name), load_photo(out / f"{stem}_vae-mdn_0.png")
        assert np.abs(result.L - photo.L).mean() < 1.5, name  # luminance preserved
    assert load_photo(out / "grey16_vae-mdn_0.png").bit_depth == 16


def test_bad_file_is_reported_and_others_still_written(tiny_model, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 30), 90, np.uint8)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = tmp_path / "out"
    rc = main(["colorize", str(bad), str(good), "-o", str(out), "-n", "1", "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken.jpg" in err and "1 of 2 photos failed" in err
    assert (out / "good_vae-mdn_0.png").exists()


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    ck = tmp_path / "model.safetensors"
    ck.write_bytes(b"nonsense")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    assert main(["colorize", str(img), "-o", str(tmp_path / "o"), "--checkpoint", str(ck)]) == 2
    assert "model.safetensors" in capsys.readouterr().err


# --- batch naming and inputs --------------------------------------------------------------------


def _grey(path, size=(30, 20), value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    Image.fromarray(((xx * 5 + yy * 3 + value) % 256).astype(np.uint8)).save(path)
    return path


def test_photos_sharing_a_name_never_share_a_result(tiny_model, tmp_path, capsys):
    """photo.jpg and photo.png in one folder both wrote photo_vae-mdn_0.png (the audit: 88
    results reported, 72 files written)."""
    src = tmp_path / "in"
    _grey(src / "photo.png", (30, 20))
    _grey(src / "photo.jpg", (24, 18), value=10)
    _grey(tmp_path / "other" / "photo.png", (16, 12))
    out = tmp_path / "out"
    rc = main(["colorize", str(src), str(tmp_path / "other" / "photo.png"), "-o", str(out), "-n", "2",
               "--checkpoint", str(tiny_model), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 6  # 3 photos x 2 colorizations, every one written
    sizes = {}
    for n in names:
        with Image.open(out / n) as im:
            sizes.setdefault(im.size, []).append(n)
    assert sorted(len(v) for v in sizes.values()) == [2, 2, 2]  # each photo's own two results
    assert "shares its name" in captured.err
    assert any(n.startswith("photo_jpg_vae-mdn_") for n in names) and any(n.startswith("photo_png_vae-mdn_") for n in names)


def test_output_paths_are_unique_without_case_and_across_folders(tmp_path):
    files = [Path("a/Photo.PNG"), Path("a/photo.jpg"), Path("b/photo.png"), Path("c/x.png"), Path("c/x.png.png")]
    plans, notes = output_paths(files, tmp_path, "pic", 3, ".tif")
    flat = [p.name.casefold() for plan in plans for p in plan]
    assert len(flat) == len(set(flat)) == 15
    assert plans[3][0].name == "x_pic_0.tif"  # a name nobody shares stays as it was
    assert len(notes) == 3


def test_a_result_never_overwrites_an_input_photo(tiny_model, tmp_path, capsys):
    _grey(tmp_path / "a.png")
    victim = _grey(tmp_path / "a_vae-mdn_0.png", value=200)  # an input named like a's result
    before = victim.read_bytes()
    rc = main(["colorize", str(tmp_path), "-o", str(tmp_path), "-n", "1", "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1
    assert victim.read_bytes() == before
    assert "would overwrite the input photo" in err and "-o" in err
    assert (tmp_path / "a_vae-mdn_0_vae-mdn_0.png").exists()  # the other photo still done


def test_a_folder_of_50_photos_loads_the_model_once(tiny_model, tmp_path, monkeypatch, capsys):
    import engine.checkpoint as eck
    import engine.colorizer as ec

    models, files = [], []
    real_model, real_ck = ec.load_model, eck.load_checkpoint
    monkeypatch.setattr(ec, "load_model", lambda *a, **k: models.append(a) or real_model(*a, **k))
    monkeypatch.setattr(ec, "load_checkpoint", lambda *a, **k: files.append(a) or real_ck(*a, **k))
    monkeypatch.setattr(eck, "load_checkpoint", lambda *a, **k: files.append(a) or real_ck(*a, **k))
    for i in range(50):
        _grey(tmp_path / "in" / f"p{i:02d}.png", size=(12, 9), value=5 * i)
    rc = main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-n", "1", "--checkpoint", str(tiny_model), "-q"])
    assert rc == 0 and len(list((tmp_path / "out").iterdir())) == 50
    assert len(models) == 1
    assert len(files) == 1  # the model file was read once, not once per photo


# --- argument validation and manners ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["-n", "0"], "0"), (["-n", "-1"], "-1"), (["-n", "many"], "many"), (["-n", "101"], "101"),
        (["--seed", "12345678901234567890"], "12345678901234567890"), (["--seed", "-3"], "-3"),
        (["--temperature", "nan"], "nan"), (["--temperature", "inf"], "inf"), (["--temperature", "-1"], "-1"),
        (["--temperature", "0"], "0"), (["--method", "magic"], "magic"), (["--format", "gif"], "gif"),
    ],
)
def test_bad_values_are_refused_with_a_sentence(tmp_path, capsys, args, shown):
    with pytest.raises(SystemExit) as info:
        main(["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert shown in err and "Traceback" not in err
    assert "must be" in err or "choose from" in err
    assert not (tmp_path / "o").exists()


def test_every_option_says_what_it_does_and_method_lists_its_choices():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    colorize = sub.choices["colorize"]
    for action in colorize._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"
    text = colorize.format_help()
    assert "{vae-mdn,gcrf,pic,levin}" in text
    for flag in ("-o", "--seed", "--device", "-q", "--format", "--no-metadata"):
        assert flag in text


def test_version_and_dispatch_live_in_the_app_package(monkeypatch, capsys, tmp_path):
    from divcolor_gui import command

    with pytest.raises(SystemExit) as info:
        command.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("divcolor ")
    opened = []
    monkeypatch.setattr(command, "gui", lambda image, screenshot=None: opened.append(image) or 0)
    assert command.main([]) == 0 and command.main(["gui", "x.png"]) == 0
    assert opened == [None, "x.png"]
    assert command.main(["colorize", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"), "--method", "levin"]) == 2
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["gui-scripts"]["divcolor"] == "divcolor_gui.command:main"


def test_the_engine_never_names_the_gui():
    offenders = [
        str(f.relative_to(ROOT)) for f in (ROOT / "engine").rglob("*.py") if "divcolor_gui" in f.read_text(encoding="utf-8")
    ]
    assert offenders == []
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['divcolor_gui'] = None\n"
        "import engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "from engine.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_library_warnings_reach_the_terminal_as_one_plain_line(tiny_model, tmp_path, monkeypatch, capsys):
    import engine.io as eio

    real = eio.decode_file

    def noisy(p):
        warnings.warn_explicit("Possibly corrupt EXIF data.", UserWarning, "/usr/lib/python3/PIL/TiffImagePlugin.py", 900)
        return real(p)

    monkeypatch.setattr(eio, "decode_file", noisy)
    _grey(tmp_path / "a.png")
    assert main(["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "-n", "1", "--checkpoint", str(tiny_model)]) == 0
    err = capsys.readouterr().err
    assert f"divcolor: note: {tmp_path / 'a.png'}: Possibly corrupt EXIF data." in err
    assert "TiffImagePlugin" not in err and "/usr/lib" not in err


def test_a_real_pillow_warning_names_the_photo_not_the_library(tiny_model, tmp_path, capsys):
    """A JPEG whose EXIF points past its end: Pillow warns from TiffImagePlugin.py. The user
    sees one note naming the photo, once per photo, and no library path."""
    import struct

    ifd = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<HHHII", 1, 270, 2, 100, 5000) + struct.pack("<I", 0)
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.full((20, 30), 120, np.uint8)).save(tmp_path / "in" / name, exif=b"Exif\x00\x00" + ifd)
    rc = main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "-n", "1", "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 0
    for name in ("a.jpg", "b.jpg"):
        notes = [line for line in err.splitlines() if line.startswith(f"divcolor: note: {tmp_path / 'in' / name}: ")]
        assert len(notes) == 1 and "Skipping tag 270" in notes[0], err
    assert "site-packages" not in err and "TiffImagePlugin" not in err and "warnings.warn" not in err
    assert "Warning" not in err  # no category names either


def test_running_out_of_memory_is_one_clear_sentence(tiny_model, tmp_path, monkeypatch, capsys):
    import engine.save as esave

    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4608000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(esave, "save_colorizations", oom)
    _grey(tmp_path / "scan.png")
    rc = main(["colorize", str(tmp_path / "scan.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "scan.png" in err and "not enough memory" in err and "-n" in err
    assert "Traceback" not in err and "alloc_cpu" not in err


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried "
                                   "to allocate 4608000000 bytes"), torch.OutOfMemoryError("out of memory")])
def test_sampling_out_of_memory_on_the_cpu_is_one_sentence_and_the_next_photo_goes_on(
    tiny_model, tmp_path, monkeypatch, capsys, error
):
    """The model fails for every batch size on the first photo (the colorizer retries down to
    one at a time, then gives up with one sentence); the second photo is colorized."""
    from engine.models import model_class

    cls = model_class("vae-mdn")
    real, seen = cls.sample, []

    def sample(self, L, n, **kw):
        seen.append(n)
        if len(seen) <= 2:  # 2 at once, then 1 at a time, for the first photo
            raise error
        return real(self, L, n, **kw)

    monkeypatch.setattr(cls, "sample", sample)
    _grey(tmp_path / "in" / "a.png")
    _grey(tmp_path / "in" / "b.png")
    rc = main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "-n", "2", "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1 and seen == [2, 1, 2]  # a: 2 then 1 (given up); b: 2 at once
    assert "skipped" in err and "a.png" in err and "Not enough memory" in err and "Traceback" not in err
    assert "trying 1 at a time" in err  # the retry was said, as a note
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == ["b_vae-mdn_0.png", "b_vae-mdn_1.png"]


def test_out_of_memory_loading_the_models_is_one_sentence(tiny_model, tmp_path, monkeypatch, capsys):
    from engine.colorizer import Colorizer

    def model(self, info):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Colorizer, "model", model)
    _grey(tmp_path / "a.png")
    rc = main(["colorize", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "not enough memory" in err and "alloc_cpu" not in err


def test_write_errors_name_the_output_and_the_fix(tiny_model, tmp_path, capsys):
    _grey(tmp_path / "a.png")
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")
    rc = main(["colorize", str(tmp_path / "a.png"), "-o", str(blocker), "--checkpoint", str(tiny_model)])
    assert rc == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_a_killed_run_leaves_no_unfinished_file_after_the_next_run(tiny_model, tmp_path, capsys):
    """SIGKILL in the middle of writing a PNG leaves a hidden temporary; the next run into the
    same folder removes it, even when it writes other names, and says so."""
    _grey(tmp_path / "in" / "a.png", size=(64, 48))
    _grey(tmp_path / "b.png")
    out = tmp_path / "out"
    killer = (
        "import os, signal, sys\n"
        "import engine.image_writers as iw\n"
        "real = iw.PngStream.write\n"
        "def write(self, rows):\n"
        "    real(self, rows)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "iw.PngStream.write = write\n"
        "from engine.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    done = subprocess.run([sys.executable, "-c", killer, "colorize", str(tmp_path / "in"), "-o", str(out), "-n", "1",
                           "--checkpoint", str(tiny_model), "--device", "cpu", "-q"], cwd=ROOT, capture_output=True)
    assert done.returncode == -9
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".a_vae-mdn_0.png.") and left[0].endswith(".divcolor-part")
    assert main(["colorize", str(tmp_path / "b.png"), "-o", str(out), "-n", "1", "--checkpoint", str(tiny_model)]) == 0
    assert "removed 1 unfinished result file" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["b_vae-mdn_0.png"]


def test_a_disk_full_names_the_result_not_the_temporary(tiny_model, tmp_path, monkeypatch, capsys):
    import errno

    import engine.image_writers as iw

    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(iw.PngStream, "write", full)
    _grey(tmp_path / "a.png")
    out = tmp_path / "out"
    rc = main(["colorize", str(tmp_path / "a.png"), "-o", str(out), "-n", "2", "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err and "a_vae-mdn_" in err
    assert "divcolor-part" not in err and "Traceback" not in err
    assert list(out.iterdir()) == []  # nothing half-written, no temporaries


def test_an_all_white_photo_comes_out_white(tiny_model, tmp_path):
    """The audit's white photo came out cyan (244, 255, 253): the file the CLI writes is white."""
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(tmp_path / "white.png")
    assert main(["colorize", str(tmp_path / "white.png"), "-o", str(tmp_path / "o"), "-n", "3", "--temperature", "3",
                 "--checkpoint", str(tiny_model), "-q"]) == 0
    for k in range(3):
        with Image.open(tmp_path / "o" / f"white_vae-mdn_{k}.png") as im:
            assert (np.asarray(im.convert("RGB")) == 255).all()


# --- large scans: strips equal the whole image --------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpg", "tiff"])
def test_cli_strip_output_equals_the_whole_image_path(tiny_model, colorizer, tmp_path, monkeypatch, fmt):
    """The CLI samples at the model's size and writes strips (forced to 7 rows here); the result
    must be the pixels the whole-image path (Colorizer.sample at full size + save_image) gives,
    to within one level (the export quantises through a table, the float path through pow)."""
    import engine.save as esave
    from engine.io import load_photo
    from engine.save import save_image

    monkeypatch.setattr(esave, "RESULT_STRIP_PIXELS", 7 * 53)  # 7-row strips on a 53-wide photo
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:41, 0:53]
    grey = np.clip(xx * 4 + yy * 2 + rng.normal(0, 6, (41, 53)), 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([grey, np.full_like(grey, 180)]), "LA").save(tmp_path / "p.png")
    out = tmp_path / "out"
    assert main(["colorize", str(tmp_path / "p.png"), "-o", str(out), "-n", "3", "--seed", "7", "--format", fmt,
                 "--checkpoint", str(tiny_model), "--device", "cpu", "-q"]) == 0
    photo = load_photo(tmp_path / "p.png")
    whole = colorizer.sample(photo, "vae-mdn", n=3, seed=7)
    ext = {"png": ".png", "jpg": ".jpg", "tiff": ".tif"}[fmt]
    for k in range(3):
        ref = save_image(tmp_path / f"ref{k}{ext}", whole[k].rgb, photo.alpha, photo.bit_depth)
        with Image.open(out / f"p_vae-mdn_{k}{ext}") as a, Image.open(ref) as b:
            assert a.size == (53, 41) and a.mode == b.mode
            diff = np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int))
            if fmt == "jpg":  # a one-level change before the DCT may move a decoded pixel a little more
                assert diff.max() <= 4 and diff.mean() < 0.1, (k, diff.max(), diff.mean())
            else:
                assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (k, diff.max(), (diff > 0).mean())


def test_strips_of_any_height_equal_one_strip(colorizer, tmp_path):
    from engine.io import load_photo
    from engine.save import save_colorizations

    _grey(tmp_path / "p.png", (37, 29))
    photo = load_photo(tmp_path / "p.png")
    ab = torch.stack([c.ab_low for c in colorizer.sample(photo, "vae-mdn", n=2, seed=1)])
    base = save_colorizations([tmp_path / "w0.png", tmp_path / "w1.png"], photo, ab, strip_rows=29)
    for rows in (1, 4, 28):
        parts = save_colorizations([tmp_path / f"s{rows}_0.png", tmp_path / f"s{rows}_1.png"], photo, ab, strip_rows=rows)
        for a, b in zip(parts, base):
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_gcrf_strokes_hints_only_base_grey(tmp_path):
    """--base grey: the strokes alone colour the photo (no sample underneath)."""
    import numpy as np
    from PIL import Image

    from engine.cli import main
    from engine.strokes import Stroke, save_strokes

    img = tmp_path / "p.png"
    Image.fromarray(np.full((40, 48), 128, np.uint8)).save(img)
    s = tmp_path / "s.json"
    save_strokes(s, [Stroke((200, 40, 40), 5, ((10.0, 10.0), (30.0, 20.0)))])
    outs = {}
    for base in ("grey",):
        out = tmp_path / base
        assert main(["colorize", str(img), "-o", str(out), "--method", "gcrf", "--strokes", str(s), "--base", base, "-q"]) == 0
        outs[base] = np.asarray(Image.open(next(out.iterdir())).convert("RGB")).astype(int)
    from skimage.color import rgb2lab

    grey = outs["grey"]
    assert grey[15, 20, 0] > grey[15, 20, 1] + 20  # under the stroke: red
    far = rgb2lab(grey[38:, 44:].astype(np.float64) / 255)[..., 1]
    assert far.min() > -1.0  # the colour fades or fills, never turns to the opposite hue (cyan)


@pytest.mark.skipif(not hasattr(__import__("os"), "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_a_symlink_loop_is_named_and_skipped_and_the_rest_colorized(tiny_model, tmp_path, capsys):
    """Issue 28 item 1: ``self.jpg -> self.jpg`` and ``a.png <-> b.png`` beside a good photo
    stopped the whole batch with ``RuntimeError: Symlink loop``; alone, a loop said "does not exist"."""
    import os

    src = tmp_path / "in"
    _grey(src / "good.png")
    os.symlink("self.jpg", src / "self.jpg")
    os.symlink("b.png", src / "a.png")
    os.symlink("a.png", src / "b.png")
    out = tmp_path / "out"
    rc = main(["colorize", str(src), "-o", str(out), "-n", "1", "--checkpoint", str(tiny_model), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    loops = [line for line in err.splitlines() if "link loop" in line]
    assert len(loops) == 3 and all(line.startswith("divcolor: skipped ") for line in loops), err
    assert {n for n in ("self.jpg", "a.png", "b.png") if any(n in line for line in loops)} == {"self.jpg", "a.png", "b.png"}
    assert "3 of 4 photos failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["good_vae-mdn_0.png"]

    rc = main(["colorize", str(src / "self.jpg"), "-o", str(out), "-n", "1", "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1 and "link loop" in err and "does not exist" not in err and "Traceback" not in err


def test_a_folder_takes_every_photo_pillow_can_open_and_names_the_rest(tiny_model, tmp_path, capsys):
    """Issue 28 item 4: a GIF, or a JPEG named ``.heic``, in a folder was passed over without a
    word while the same file given alone was colorized."""
    src = tmp_path / "in"
    _grey(src / "good.png")
    yy, xx = np.mgrid[0:24, 0:32]
    Image.fromarray(((xx * 7 + yy) % 256).astype(np.uint8)).convert("P").save(src / "anim.gif")
    Image.fromarray(((xx * 3 + yy * 5) % 256).astype(np.uint8)).save(src / "phone.heic", format="JPEG")
    (src / "notes.txt").write_text("not a photo")
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "out"
    rc = main(["colorize", str(src), "-o", str(out), "-n", "1", "--checkpoint", str(tiny_model), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["anim_vae-mdn_0.png", "good_vae-mdn_0.png", "phone_vae-mdn_0.png"]
    with Image.open(out / "anim_vae-mdn_0.png") as im:
        assert im.size == (32, 24)
    assert f"divcolor: note: {src}: passed over 1 file that is not a photo divcolor can read: notes.txt" in err
    assert ".DS_Store" not in err


_INTERRUPTED_BATCH = r"""
import sys
import engine.cli as cli

real = cli._for_each_photo

def announcing(files, work, quiet, count=1):
    def wait_on_the_second(f):
        if f == files[1]:
            print("first photo written", flush=True)
            sys.stdin.readline()  # Ctrl-C comes here, while the second photo is being worked on
        return work(f)
    return real(files, wait_on_the_second, quiet, count)

cli._for_each_photo = announcing
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT")
def test_ctrl_c_in_a_batch_is_one_line_and_exit_code_130(tiny_model, tmp_path):
    """Issue 28 item 9: Ctrl-C during a batch printed a KeyboardInterrupt traceback. The signal
    is sent while the second photo's work waits on stdin: no timing involved."""
    import signal

    for i in range(4):
        _grey(tmp_path / "in" / f"p{i}.png", value=20 * i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", _INTERRUPTED_BATCH, "colorize", str(tmp_path / "in"), "-o", str(out), "-n", "2",
           "--checkpoint", str(tiny_model), "--device", "cpu", "-q"]
    # SIGINT's default, as a terminal gives it (a suite started in the background inherits it ignored).
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "first photo written"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "divcolor: interrupted: 1 of 4 photos done", err
    assert sorted(p.name for p in out.iterdir()) == ["p0_vae-mdn_0.png", "p0_vae-mdn_1.png"]
