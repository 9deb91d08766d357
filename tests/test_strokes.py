import json
import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from engine.color import rgb_to_lab
from engine.errors import StrokesError
from engine.strokes import (
    Stroke,
    clip_strokes,
    load_strokes,
    parse_strokes,
    rasterize,
    save_strokes,
    stroke_ab,
    strokes_to_json,
)

RED, BLUE = (220, 30, 30), (30, 60, 220)


# --- rasterisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [None, (50, 25), (17, 9)])
def test_horizontal_line_covers_the_capsule_area(grid):
    W, H, r = 100, 50, 5.3
    (x0, y), x1 = (10.2, 20.7), 80.9
    cov, ab = rasterize([Stroke(RED, r, ((x0, y), (x1, y)))], (W, H), grid)
    gw, gh = grid or (W, H)
    assert cov.shape == (gh, gw) and ab.shape == (2, gh, gw)
    assert cov.dtype == np.float32 and ab.dtype == np.float32
    area = float(cov.sum()) * (W / gw) * (H / gh)
    assert area == pytest.approx(2 * r * (x1 - x0) + math.pi * r * r, rel=0.03)
    assert cov.min() >= 0 and cov.max() <= 1
    covered = cov > 0
    np.testing.assert_allclose(ab[:, covered].T, np.tile(stroke_ab(RED), (covered.sum(), 1)), atol=1e-6)
    assert not ab[:, ~covered].any()


def test_point_hint_covers_a_disc():
    W = H = 64
    r = 10.0
    cov, _ = rasterize([Stroke(BLUE, r, [(30.0, 33.0)])], (W, H))
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    d = np.hypot(xx - 30.0, yy - 33.0)
    assert (cov[d < r - 0.75] == 1).all()  # cells whole inside the disc
    assert (cov[d > r + 0.75] == 0).all()
    assert float(cov.sum()) == pytest.approx(math.pi * r * r, rel=0.02)


def test_later_stroke_paints_over_earlier():
    W, H = 40, 30
    first = Stroke(RED, 6, [(5, 15), (35, 15)])
    second = Stroke(BLUE, 4, [(20.3, 2), (20.3, 28)])
    cov, ab = rasterize([first, second], (W, H))
    a_red, a_blue = np.array(stroke_ab(RED)), np.array(stroke_ab(BLUE))
    np.testing.assert_allclose(ab[:, 15, 20], a_blue, atol=1e-6)  # the crossing: blue on top
    np.testing.assert_allclose(ab[:, 15, 8], a_red, atol=1e-6)
    np.testing.assert_allclose(ab[:, 3, 20], a_blue, atol=1e-6)
    assert cov.max() <= 1.0
    cov_rev, ab_rev = rasterize([second, first], (W, H))
    np.testing.assert_allclose(ab_rev[:, 15, 20], a_red, atol=1e-6)
    np.testing.assert_allclose(cov, cov_rev)  # the union is the same whichever is on top
    # A cell partly under the later stroke mixes the two colours by area.
    mixed = (ab[0] != 0) & ~np.isclose(ab[0], a_red[0]) & ~np.isclose(ab[0], a_blue[0])
    assert mixed.any()
    m = ab[:, mixed]
    assert (m[0] <= max(a_red[0], a_blue[0]) + 1e-6).all() and (m[0] >= min(a_red[0], a_blue[0]) - 1e-6).all()


def test_points_outside_the_image_are_clipped():
    obj = {"version": 1, "strokes": [{"color": "#FF0000", "radius": 3, "points": [[-50, 10], [10, 10], [10, 999.5]]}]}
    (s,) = parse_strokes(obj, image_size=(40, 30))
    assert s.points == ((0.0, 10.0), (10.0, 10.0), (10.0, 30.0))
    (u,) = parse_strokes(obj)
    assert u.points[0] == (-50.0, 10.0)
    assert clip_strokes([u], (40, 30)) == [s]
    cov, _ = rasterize([u], (40, 30), (20, 15))  # unclipped strokes just lose what is off the image
    assert cov.shape == (15, 20) and cov.max() == 1.0


def test_far_off_stroke_and_empty_list():
    cov, ab = rasterize([Stroke(RED, 2, [(500, 500)])], (40, 30), (8, 6))
    assert not cov.any() and not ab.any()
    cov, ab = rasterize([], (40, 30))
    assert cov.shape == (30, 40) and not cov.any()


def test_long_diagonal_on_a_large_grid():
    # Long segments are cut into pieces; the union must still be one clean capsule.
    W = H = 1000
    L = math.hypot(900, 900)
    cov, _ = rasterize([Stroke(RED, 3, [(50, 50), (950, 950)])], (W, H))
    assert float(cov.sum()) == pytest.approx(2 * 3 * L + math.pi * 9, rel=0.02)


def test_stroke_ab_matches_scikit_image():
    for c in [RED, BLUE, (128, 128, 128), (12, 250, 99)]:
        ref = rgb2lab(np.array(c, np.float64).reshape(1, 1, 3) / 255.0)[0, 0, 1:] / 128.0
        np.testing.assert_allclose(stroke_ab(c), ref, atol=2e-4)


# --- validation and JSON ----------------------------------------------------------------------


def _doc(**stroke):
    s = {"color": "#112233", "radius": 6, "points": [[1, 2], [3, 4]]}
    s.update(stroke)
    return {"version": 1, "strokes": [{"color": "#000000", "radius": 1, "points": [[0, 0]]}, s]}


BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ({"strokes": []}, '"version"'),
    ({"version": 2, "strokes": []}, "newer"),
    ({"version": 0, "strokes": []}, "unknown"),
    ({"version": "1", "strokes": []}, "version"),
    ({"version": 1}, '"strokes"'),
    ({"version": 1, "strokes": {}}, "must be a list"),
    ({"version": 1, "strokes": [5]}, "stroke 0"),
    (_doc(color="red"), "#RRGGBB"),
    (_doc(color="#12345"), "#RRGGBB"),
    (_doc(color=[1, 2, 3]), "#RRGGBB"),
    (_doc(radius=0), "more than 0"),
    (_doc(radius=-2), "more than 0"),
    (_doc(radius=1e9), "absurd"),
    (_doc(radius="6"), "not a number"),
    (_doc(radius=float("nan")), "not a number"),
    (_doc(points=[]), "no points"),
    (_doc(points="1,2"), "list of [x, y]"),
    (_doc(points=[[1, 2], [3]]), "point 1"),
    (_doc(points=[[1, "a"]]), "not a number"),
    (_doc(points=[[1, float("nan")]]), "NaN"),
    (_doc(points=[[True, 2]]), "not a number"),
]


@pytest.mark.parametrize("obj,words", BAD)
def test_bad_strokes_are_refused_with_a_useful_message(obj, words):
    with pytest.raises(StrokesError) as e:
        parse_strokes(obj if isinstance(obj, str) else json.loads(json.dumps(obj)))
    msg = str(e.value)
    assert words in msg
    if isinstance(obj, dict) and len(obj.get("strokes", [])) == 2:
        assert "stroke 1" in msg  # names which stroke is wrong


def test_missing_keys_are_named():
    with pytest.raises(StrokesError, match=r"stroke 0 lacks 'radius'"):
        parse_strokes({"version": 1, "strokes": [{"color": "#000000", "points": [[0, 0]]}]})


def test_stroke_constructor_validates():
    with pytest.raises(StrokesError):
        Stroke((256, 0, 0), 3, [(0, 0)])
    with pytest.raises(StrokesError):
        Stroke(RED, 0, [(0, 0)])
    with pytest.raises(StrokesError):
        Stroke(RED, 3, [])
    s = Stroke([1, 2, 3], 2, [[1, 2]])
    assert s.color == (1, 2, 3) and s.points == ((1.0, 2.0),) and s.is_point and s.hex == "#010203"
    hash(s)  # frozen, usable as a key


def test_round_trip_and_file_errors(tmp_path):
    strokes = [Stroke(RED, 6, [(1.5, 2.25), (30, 40)]), Stroke((0, 255, 16), 0.5, [(7, 8)])]
    path = save_strokes(tmp_path / "sub" / "s.json", strokes)
    assert load_strokes(path) == strokes
    assert parse_strokes(json.dumps(strokes_to_json(strokes))) == strokes
    assert parse_strokes(str(path)) == strokes
    assert json.loads(path.read_text())["strokes"][0] == {"color": "#DC1E1E", "radius": 6, "points": [[1.5, 2.25], [30, 40]]}
    with pytest.raises(StrokesError, match="nothere.json"):
        load_strokes(tmp_path / "nothere.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "strokes": [{"color": "#zzzzzz", "radius": 1, "points": [[0, 0]]}]}')
    with pytest.raises(StrokesError, match=r"bad\.json.*stroke 0"):
        load_strokes(bad)


# --- dark and light pixels take colour ---------------------------------------------------------


def _hue(a: float, b: float) -> float:
    return math.degrees(math.atan2(b, a)) % 360


def _linear_rgb(lab) -> np.ndarray:
    """Lab -> linear sRGB without any clipping (scikit-image's XYZ and sRGB matrix)."""
    from skimage.color import lab2xyz
    from skimage.color.colorconv import rgb_from_xyz

    return lab2xyz(np.asarray(lab, np.float64).reshape(1, 1, 3)).reshape(3) @ rgb_from_xyz.T


@pytest.mark.parametrize("color, L", [((30, 60, 230), 15.0), ((240, 220, 40), 95.0), ((200, 40, 40), 25.0)])
def test_a_stroke_colour_is_applied_at_the_pixels_lightness(color, L):
    """Blue on a dark coat reads dark blue, yellow on a white shirt pale yellow: the output keeps
    the photo's L, is in gamut there (not clipped to another hue) and has the stroke's hue."""
    from engine.color import lab_to_rgb
    from engine.io import photo_from_array
    from engine.propagate import LevinField
    from engine.strokes import color_ab_at, displayed_color

    grey = lab_to_rgb(torch.tensor([L, 0.0, 0.0], dtype=torch.float64).view(3, 1, 1))[0, 0, 0].item()
    photo = photo_from_array(np.full((24, 32), grey, np.float32))
    out = LevinField(photo).propagate([Stroke(color, 6, ((8.0, 12.0), (24.0, 12.0)))]).rgb
    lab = rgb_to_lab(torch.from_numpy(out).permute(2, 0, 1).double())[:, 12, 16].numpy()
    want = rgb_to_lab(torch.tensor(color, dtype=torch.float64).view(3, 1, 1) / 255)[:, 0, 0].numpy()
    assert abs(lab[0] - L) < 1.0  # the photo's lightness
    chroma = math.hypot(lab[1], lab[2])
    assert chroma > 8  # visibly coloured, even at L = 15 or 95
    dh = abs((_hue(lab[1], lab[2]) - _hue(want[1], want[2]) + 180) % 360 - 180)
    assert dh < 6  # the stroke's hue, not the hue clipping would give
    ab = color_ab_at(color, L) * 128
    lin = _linear_rgb([L, *ab])
    assert lin.min() > -1e-3 and lin.max() < 1 + 1e-3  # in gamut at that L
    np.testing.assert_allclose(lab[1:], ab, atol=1.5)
    swatch = displayed_color(color, L)  # the preview swatch: the same colour at that lightness
    sw = rgb_to_lab(torch.tensor(swatch, dtype=torch.float64).view(3, 1, 1) / 255)[:, 0, 0].numpy()
    assert abs(sw[0] - L) < 1.0 and np.linalg.norm(sw[1:] - ab) < 2.0


def test_naive_ab_at_a_dark_pixel_would_clip_to_another_hue():
    """Why color_ab_at exists: pure blue's own ab at L = 15 is far outside sRGB."""
    a, b = (v * 128 for v in stroke_ab((30, 60, 230)))
    lin = _linear_rgb([15.0, a, b])
    assert lin.min() < -0.05 or lin.max() > 1.05


def test_a_long_stroke_is_simplified_on_load_and_an_endless_one_refused_with_the_limit(tmp_path):
    """Issue 28 item 10: a one-million-point stroke was accepted as written and took 97 s and
    703 MB to draw. Points closer than a pixel to the last one kept are merged when a long
    stroke is loaded (a short one loads exactly as written); one still too long is refused."""
    from engine import strokes as st

    n = 200_000  # a pen sampled every 0.05 px: 10,000 px of stroke
    t = np.arange(n) * 0.05 / 200.0
    pts = np.stack([256 + 200 * np.cos(t), 256 + 200 * np.sin(t)], 1).round(3).tolist()
    (tmp_path / "dense.json").write_text(json.dumps({"version": 1, "strokes": [
        {"color": "#C04020", "radius": 4, "points": pts}, {"color": "#2040C0", "radius": 3, "points": [[1, 1], [1.2, 1.1], [9, 9]]}]}))
    dense, short = load_strokes(tmp_path / "dense.json")
    assert short.points == ((1.0, 1.0), (1.2, 1.1), (9.0, 9.0))  # short strokes are kept as written
    assert 9_000 <= len(dense.points) <= 10_001
    assert dense.points[0] == tuple(pts[0]) and dense.points[-1] == tuple(pts[-1])
    gaps = np.hypot(*np.diff(np.asarray(dense.points[:-1]), axis=0).T)
    assert gaps.min() >= 1.0 and gaps.max() < 1.1  # merged, not thinned beyond the pixel
    full, merged = rasterize([Stroke((192, 64, 32), 4, tuple(map(tuple, pts[:20_000])))], (512, 512)), rasterize(
        [Stroke((192, 64, 32), 4, st._check_points(pts[:20_000], spacing=1.0))], (512, 512))
    assert np.abs(full[0] - merged[0]).max() < 0.2 and abs(full[0].sum() - merged[0].sum()) < 0.01 * full[0].sum()

    far = [[float(k % 1000) * 2, float(k // 1000) * 2] for k in range(st.MAX_DRAWN_POINTS + 10)]
    (tmp_path / "endless.json").write_text(json.dumps({"version": 1, "strokes": [{"color": "#C04020", "radius": 2, "points": far}]}))
    with pytest.raises(StrokesError) as e:
        load_strokes(tmp_path / "endless.json")
    assert str(e.value) == (f"“endless.json”: stroke 0: too long to draw: {st.MAX_DRAWN_POINTS + 10:,} points a pixel or more "
                            f"apart (of {st.MAX_DRAWN_POINTS + 10:,}), and the limit is {st.MAX_DRAWN_POINTS:,} per stroke; "
                            "split it into shorter strokes")
