
import numpy as np
from PIL import Image

from engine.cli import main
from engine.io import load_photo


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
