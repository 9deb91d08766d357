import json
from pathlib import Path
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
    torch.testing.assert_close(a.colorize(L, 3, mode="means"), b.colorize(L, 3, mode="means"))
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


# --- damaged metadata and weights: every one is a CheckpointError that says what to do -------

def _with_config(tiny_model, tmp_path, **changes):
    cfg = load_checkpoint(tiny_model).config
    return _rewrite_meta(tiny_model, tmp_path / "bad.safetensors", config={**cfg, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"width": 10**7}, "'width' is 10000000, but must be between 1 and 65536"),
    ({"width": 40000, "latent_dim": 40000}, r"network of [\d,]+ weights .* more than divcolor loads"),
    ({"width": "32"}, r"'width' is '32' \(a string\), but must be a whole number"),
    ({"width": 4.5}, "'width' is 4.5 .*whole number"),
    ({"width": True}, "'width' is True .*whole number"),
    ({"size": -64}, "'size' is -64, but must be between 1 and 65536"),
    ({"latent_dim": None}, "'latent_dim' is None"),
    ({"grey_skip": "yes"}, "'grey_skip' is 'yes' .*true or false"),
    ({"mdn_sigma": [0.1]}, "'mdn_sigma' is \\[0.1\\] \\(a list\\), but must be a number"),
    ({"mdn_sigma": -1.0}, "'mdn_sigma' is -1.0, but must be at least 0"),
    ({"dropout": 3.0}, "describes no network"),  # the constructor's own check, met on the meta device
])
def test_refuses_bad_config_values_before_building(tmp_path, tiny_model, changes, message):
    bad = _with_config(tiny_model, tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message) as e:
        load_model(bad)
    assert "divcolor-train export" in str(e.value)  # and what to do


def test_huge_width_is_refused_without_allocating(tmp_path, tiny_model, monkeypatch):
    """A width within the per-field range but a network of billions of weights is refused from
    the meta-device build: the real constructor is never reached."""
    import engine.models.vae_mdn as vm

    real_init = vm.VAEMDN.__init__
    built_for_real = []

    def spy(self, *a, **k):
        if torch.empty(0).device.type != "meta":
            built_for_real.append(True)
        real_init(self, *a, **k)

    monkeypatch.setattr(vm.VAEMDN, "__init__", spy)
    bad = _with_config(tiny_model, tmp_path, width=60000)
    with pytest.raises(CheckpointError, match="more than divcolor loads"):
        load_model(bad)
    assert not built_for_real


@pytest.mark.parametrize("changes, message", [
    ({"config": [1, 2, 3]}, r"'config' is a list"),
    ({"config": "width=4"}, r"'config' is a string"),
    ({"method": ["vae-mdn"]}, r"'method' is a list"),
    ({"statistics": 7}, r"'statistics' is an integer"),
    ({"sampling": {"temperature": "hot"}}, r"sampling temperature 'hot'"),
    ({"sampling": {"temperature": -1}}, r"sampling temperature -1"),
    ({"step": -5}, r"step -5 is negative"),
    ({"format_version": "1"}, r"no format version"),
])
def test_refuses_metadata_of_the_wrong_json_type(tmp_path, tiny_model, changes, message):
    bad = _rewrite_meta(tiny_model, tmp_path / "bad.safetensors", **changes)
    with pytest.raises(CheckpointError, match=message):
        load_model(bad)


def _rewrite_header(src, dst, edit):
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    h = edit(raw[8 : 8 + n])
    h += b" " * (-len(h) % 8)
    dst.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    return dst


def test_refuses_metadata_that_is_not_an_object_or_nests_too_deep(tmp_path, tiny_model):
    def set_meta(text):
        def edit(h):
            header = json.loads(h)
            header["__metadata__"]["divcolor"] = text
            return json.dumps(header).encode()
        return edit

    listed = _rewrite_header(tiny_model, tmp_path / "a.safetensors", set_meta("[1, 2]"))
    with pytest.raises(CheckpointError, match="a list instead of an object"):
        load_model(listed)
    deep = _rewrite_header(tiny_model, tmp_path / "b.safetensors", set_meta("[" * 100_000 + "]" * 100_000))
    with pytest.raises(CheckpointError, match="corrupt metadata"):
        load_model(deep)


def test_refuses_non_finite_weights(tmp_path, tiny_model):
    ck = load_checkpoint(tiny_model)
    for bad_value in (float("nan"), float("inf")):
        tensors = dict(ck.tensors)
        key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        t = tensors[key].clone()
        t.view(-1)[1] = bad_value
        tensors[key] = t
        p = save_checkpoint(tmp_path / "nan.safetensors", tensors, ck.meta)
        with pytest.raises(CheckpointError, match=f"non-finite values .*'{key}'.*diverged or the file is damaged"):
            load_model(p)


def test_refuses_weights_stored_as_whole_numbers(tmp_path, tiny_model):
    """Issue 28 item 3: every float tensor stored as int32 loaded (cast back to float) and every
    result was flat grey, exit code 0. Now it is refused in one sentence, as NaN weights are."""
    ck = load_checkpoint(tiny_model)
    tensors = {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in ck.tensors.items()}
    p = save_checkpoint(tmp_path / "int32.safetensors", tensors, ck.meta)
    with pytest.raises(CheckpointError, match=r"stores \d+ of its \w+ weight tensors as whole numbers \(int32, e\.g\. '.+'\)"
                       r" where the network needs floating-point values, so every result would be flat grey") as e:
        load_model(p)
    import re

    assert not re.search(r"\.\s+[A-Z]", str(e.value)) and "divcolor-train export" in str(e.value)  # one sentence, with the fix
    half = {k: v.half() if v.is_floating_point() else v for k, v in ck.tensors.items()}
    load_model(save_checkpoint(tmp_path / "fp16.safetensors", half, ck.meta))  # a float storage is fine


def test_refuses_missing_and_extra_tensors(tmp_path, tiny_model):
    ck = load_checkpoint(tiny_model)
    some = sorted(ck.tensors)[0]
    fewer = save_checkpoint(tmp_path / "fewer.safetensors", {k: v for k, v in ck.tensors.items() if k != some}, ck.meta)
    with pytest.raises(CheckpointError, match="missing 1 tensors"):
        load_model(fewer)
    prefix = some.split(".")[0]
    more = save_checkpoint(tmp_path / "more.safetensors", {**ck.tensors, f"{prefix}.extra": torch.zeros(2)}, ck.meta)
    with pytest.raises(CheckpointError, match="1 unexpected tensors"):
        load_model(more)


def test_truncated_anywhere_is_a_checkpoint_error(tmp_path, tiny_model):
    data = tiny_model.read_bytes()
    p = tmp_path / "t.safetensors"
    for cut in (0, 4, 8, 9, 100, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_model(p)


def test_a_header_claiming_a_huge_length_is_refused(tmp_path, tiny_model):
    data = bytearray(tiny_model.read_bytes())
    data[:8] = struct.pack("<Q", 2**62)
    p = tmp_path / "h.safetensors"
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_model(p)


def test_every_shipped_model_builds_on_the_meta_device_and_loads():
    """The pre-build check must accept every real file (its meta build is how sizes are known)."""
    from importlib import resources

    from engine.models.backbone import Backbone

    for f in sorted(resources.files("resources.models").iterdir()):
        if f.name.startswith("backbone_") and f.name.endswith(".safetensors"):
            Backbone.from_checkpoint(Path(str(f)))  # the shared grey network, not a colorization model
        elif f.name.endswith(".safetensors"):
            load_model(Path(str(f)))
