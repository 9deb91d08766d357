import json
import struct

import pytest
import torch

from engine.checkpoint import FORMAT_VERSION, check_state_dict, load_checkpoint, save_checkpoint
from engine.colorizer import load_model
from engine.errors import CheckpointError
from engine.models.vae_mdn import VAEMDN


def test_round_trip(tmp_path):
    t = {"a.w": torch.randn(3, 4), "b": torch.arange(5)}
    p = save_checkpoint(tmp_path / "m.safetensors", t, {"method": "vae-mdn", "config": {"x": 1}, "steps": 7})
    ck = load_checkpoint(p, "vae-mdn")
    assert ck.meta["format_version"] == FORMAT_VERSION and ck.meta["steps"] == 7 and "created" in ck.meta
    torch.testing.assert_close(ck.tensors["a.w"], t["a.w"])
    assert ck.subset("a") == {"w": ck.tensors["a.w"]}


def test_model_round_trip_gives_identical_outputs(tiny_model):
    a, b = load_model(tiny_model), VAEMDN.from_checkpoint(tiny_model)
    L = torch.rand(1, 1, 64, 64) * 100
    torch.testing.assert_close(a.colorize(L, 3), b.colorize(L, 3))
    assert a.meta["method"] == "vae-mdn" and "pca_components" in a.meta["statistics"]


def test_refuses_pickle(tmp_path):
    p = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(p)
    q = tmp_path / "sneaky.safetensors"
    q.write_bytes(p.read_bytes())
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(q)


def test_refuses_truncated_and_garbage(tmp_path, tiny_model):
    data = tiny_model.read_bytes()
    t = tmp_path / "trunc.safetensors"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc"):
        load_checkpoint(t)
    g = tmp_path / "garbage.safetensors"
    g.write_bytes(b"hello world, not a model at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(g)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def _rewrite_meta(src, dst, **changes):
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["divcolor"])
    meta.update(changes)
    header["__metadata__"]["divcolor"] = json.dumps(meta)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    dst.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    return dst


def test_refuses_newer_format_and_wrong_method(tmp_path, tiny_model):
    newer = _rewrite_meta(tiny_model, tmp_path / "newer.safetensors", format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="newer divcolor"):
        load_model(newer)
    other = _rewrite_meta(tiny_model, tmp_path / "other.safetensors", method="style-transfer")
    with pytest.raises(CheckpointError, match="'style-transfer' model, which this divcolor cannot run"):
        load_model(other)
    disguised = _rewrite_meta(tiny_model, tmp_path / "disguised.safetensors", method="pic")  # VAE weights, PIC label
    with pytest.raises(CheckpointError, match="invalid PIC config"):
        load_model(disguised)
    with pytest.raises(CheckpointError, match="expected"):
        load_checkpoint(tiny_model, method="gcrf")


def test_refuses_config_that_does_not_match_weights(tmp_path, tiny_model):
    cfg = load_checkpoint(tiny_model).config
    bad = _rewrite_meta(tiny_model, tmp_path / "bad.safetensors", config={**cfg, "width": cfg["width"] * 2})
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(bad)
    junk = _rewrite_meta(tiny_model, tmp_path / "junk.safetensors", config={**cfg, "bogus": 1})
    with pytest.raises(CheckpointError, match="invalid VAE-MDN config"):
        load_model(junk)


def test_safetensors_without_divcolor_metadata(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(p))
    with pytest.raises(CheckpointError, match="not a divcolor model"):
        load_checkpoint(p)


def test_check_state_dict_names_the_problem():
    m = torch.nn.Linear(2, 3)
    with pytest.raises(CheckpointError, match="shape mismatch for weight"):
        check_state_dict(m, {"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, "f", "test")


def test_saved_model_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, {"method": "x"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
