"""Project and strokes files from users: every malformed one is refused in one sentence that
names the value, never a traceback. A table of the variants found broken, then hypothesis
fuzzing of both formats (bounded, derandomized: the same examples every run)."""

from __future__ import annotations

import copy
import re
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, StrokesError
from engine.schema import MAX_DEPTH, check_project, loads, read_json_file
from engine.strokes import Stroke, parse_strokes

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

GOOD_STROKES = {"version": 1, "strokes": [{"color": "#DC1E1E", "radius": 6, "points": [[1.5, 2], [30, 40]]}]}
GOOD_PROJECT = {
    "format": "divcolor-project",
    "version": 1,
    "photo": "/photos/grandma.jpg",
    "photo_relative": "grandma.jpg",
    "sample": {"method": "vae-mdn", "model": "vae_mdn_general", "family": "general", "checkpoint": None,
               "seed": 7, "n": 6, "index": 2, "temperature": 1.0},
    "gallery": {"seed": 7, "temperature": 1.0, "samples": 6, "family": "general", "checkpoint": None,
                "batches": [{"seed": 7, "n": 6, "temperature": 1.0, "first": 0}]},
    "strokes": GOOD_STROKES,
}


def _with(path: str, value):
    """GOOD_PROJECT with the value at a dotted path replaced (``DELETE`` removes the key)."""
    d = copy.deepcopy(GOOD_PROJECT)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return d


DELETE = object()


def test_a_good_project_passes_unchanged():
    assert check_project(copy.deepcopy(GOOD_PROJECT), 1, parse_strokes=parse_strokes) == GOOD_PROJECT
    assert check_project(loads(json.dumps(GOOD_PROJECT)), 1, parse_strokes=parse_strokes) == GOOD_PROJECT


BAD_PROJECTS = [
    # (path, value, words the message must hold: the field, the value and the range)
    ("gallery.samples", 2000, "gallery.samples is 2000, but must be from 1 to 32"),
    ("sample.n", 2000, "sample.n is 2000, but must be from 1 to 32"),
    ("gallery.batches.0.n", 2000, "gallery.batches[0].n is 2000"),
    ("gallery.seed", 10**30, "gallery.seed is a 31-digit number, but must be from 0 to 2147483647"),
    ("sample.seed", -1, "sample.seed is -1, but must be from 0 to 2147483647"),
    ("gallery.seed", "7", "gallery.seed is \"7\", but must be a whole number"),
    ("gallery.temperature", "hot", "gallery.temperature is \"hot\", but must be a number from 0.05 to 3"),
    ("gallery.temperature", 0, "gallery.temperature is 0, but must be from 0.05 to 3"),
    ("sample.temperature", None, "sample.temperature is null"),
    ("sample.index", 1.5, "sample.index is 1.5, but must be a whole number"),
    ("sample", [1, 2], "sample is a list of 2, but must be an object"),
    ("sample.seed", DELETE, "sample lacks 'seed'"),
    ("gallery", "big", "gallery is \"big\", but must be an object"),
    ("gallery.batches", {"n": 1}, "gallery.batches is an object, but must be a list"),
    ("gallery.batches", [{"seed": 1, "n": 32, "temperature": 1.0}] * 17, "hold 544 samples together, more than the 512"),
    ("gallery.family", 3, "gallery.family is 3, but must be text"),
    ("photo", ["a"], "photo is a list of 1, but must be text"),
    ("photo_relative", 5, "photo_relative is 5, but must be text"),
    ("version", "1", "version is \"1\", but must be a whole number"),
    ("version", 99, "saved by a newer divcolor (project version 99"),
    ("format", "something-else", "not a divcolor project file"),
    ("strokes", [], "strokes is a list of 0, but must be an object"),
    ("sample.locked", [1, 2], "sample.locked is a list of 2, but must be an object"),
    ("gallery.batches.0.locked", "red", "gallery.batches[0].locked is \"red\", but must be an object"),
    ("strokes.strokes.0.radius", -3, "its strokes are malformed: stroke 0: the radius must be more than 0"),
    ("strokes.strokes.0.color", "red", "stroke 0: the colour 'red' is not of the form"),
]


@pytest.mark.parametrize("path, value, words", BAD_PROJECTS)
def test_bad_project_values_are_named(path, value, words):
    with pytest.raises(ConfigError) as e:
        check_project(loads(json.dumps(_with(path, value))), 1, parse_strokes=parse_strokes)
    msg = str(e.value)
    assert words in msg, msg
    assert "\n" not in msg and len(msg) < 400


def test_project_json_that_would_crash_the_parser(tmp_path):
    deep = '{"format": "divcolor-project", "version": 1, "gallery": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ConfigError, match=r"nested \d+ levels deep, more than divcolor files ever are \(32\)"):
        loads(deep)
    digits = json.dumps(GOOD_PROJECT).replace('"seed": 7', '"seed": ' + "9" * 400, 1)
    with pytest.raises(ConfigError, match=r"a number with 400 digits \(999999999999…\)"):
        loads(digits)
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1, column 2"):
        loads("{nope")
    with pytest.raises(ConfigError, match="not UTF-8"):
        loads(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="does not exist"):
        read_json_file(tmp_path / "missing.divcolor")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_json_file(tmp_path)
    assert loads('"[[[{{{"') == "[[[{{{"  # brackets inside strings are not nesting


def test_gui_read_project_refuses_with_one_sentence_and_keeps_nothing_half_done(tmp_path):
    """The GUI's reader calls the engine schema; its error is the project error the app shows
    in a plain dialog (not the "please report this bug" one)."""
    from divcolor_gui.document import ProjectError, read_project

    (tmp_path / "grandma.jpg").write_bytes(b"")
    for path, value, words in BAD_PROJECTS[:6] + [("gallery.seed", 10**30, "gallery.seed")]:
        p = tmp_path / "p.divcolor"
        p.write_text(json.dumps(_with(path, value)))
        with pytest.raises(ProjectError, match=re.escape("“p.divcolor” cannot be opened: " + words.split(" ")[0])):
            read_project(p)
    p.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ProjectError, match="nested"):
        read_project(p)


# --- strokes --------------------------------------------------------------------------------

BAD_STROKES_TEXT = [
    ('{"version": 1, "strokes": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested"),
    ('{"version": 1, "strokes": [{"color": "#000000", "radius": 6, "points": [[1, ' + "7" * 400 + "]]}]}",
     "a number with 400 digits"),
    ('{"version": ' + "1" * 400 + ', "strokes": []}', "a number with 400 digits"),
    ('{"version": 1, "strokes": [{"color": "#000000", "radius": 1e400, "points": [[1, 2]]}]}', "radius inf is not a number"),
    ('{"version": 1, "strokes": [{"color": "#000000", "radius": 6, "points": [[1e999, 2]]}]}', "NaN or infinite"),
    ('{"version": 1, "strokes": [{"color": "#000000", "radius": 6, "points": [' + "[" * 40 + "]" * 40 + "]}]}", "nested"),
]


@pytest.mark.parametrize("text, words", BAD_STROKES_TEXT)
def test_strokes_json_that_used_to_give_tracebacks(text, words):
    with pytest.raises(StrokesError) as e:
        parse_strokes(text)
    assert words in str(e.value)


def test_strokes_objects_built_in_code_are_guarded_too():
    deep: list = [1, 2]
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(StrokesError, match="nested more than 32 levels"):
        parse_strokes({"version": 1, "strokes": [{"color": "#000000", "radius": 6, "points": deep}]})
    with pytest.raises(StrokesError, match="larger than any real value"):
        parse_strokes({"version": 1, "strokes": [{"color": "#000000", "radius": 6, "points": [[10**400, 1]]}]})
    with pytest.raises(StrokesError, match="larger than any real value"):
        parse_strokes({"version": 10**400, "strokes": []})


# --- fuzzing ----------------------------------------------------------------------------------

_leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([10**400, -(10**40), 2**31, 2**31 - 1])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["#DC1E1E", "#zzzzzz", "divcolor-project", "general", ""]))
_keys = st.sampled_from(["format", "version", "photo", "sample", "gallery", "strokes", "seed", "n", "index", "temperature",
                         "samples", "batches", "first", "color", "radius", "points", "family", "checkpoint", "method", "x"])
_json = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
                     max_leaves=25)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, data):
    """Replace one value (anywhere in a good document) by fuzz, or delete one key."""
    doc = copy.deepcopy(doc)
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    node = doc
    for k in path[:-1]:
        node = node[k]
    if isinstance(node, dict) and data.draw(st.booleans()) and data.draw(st.booleans()):
        del node[path[-1]]
    else:
        node[path[-1]] = data.draw(_json)
    return doc


def _project_values_are_usable(d):
    """What a file that passed must give the GUI: values it can use without another check."""
    g = d.get("gallery") or {}
    assert 1 <= int(g.get("samples", 6)) <= 32 and 0 <= int(g.get("seed", 0)) < 2**31
    assert 0.05 <= float(g.get("temperature", 1.0)) <= 3.0
    for b in g.get("batches") or []:
        assert 1 <= b["n"] <= 32 and 0 <= b["seed"] < 2**31
    if d.get("strokes"):
        assert all(isinstance(s, Stroke) for s in parse_strokes(d["strokes"]))


@FUZZ
@given(st.data())
def test_fuzzed_projects_pass_or_are_refused_in_words(data):
    doc = _mutate(GOOD_PROJECT, data)
    for candidate in (doc, json.dumps(doc, allow_nan=True)):
        try:
            d = check_project(loads(candidate) if isinstance(candidate, str) else candidate, 1, parse_strokes=parse_strokes)
        except ConfigError as e:
            assert str(e) and "\n" not in str(e) and len(str(e)) < 600
        else:
            _project_values_are_usable(d)


@FUZZ
@given(_json)
def test_fuzzed_json_values_as_projects(value):
    try:
        check_project(value, 1, parse_strokes=parse_strokes)
    except ConfigError as e:
        assert str(e)


@FUZZ
@given(st.data())
def test_fuzzed_strokes_parse_or_are_refused_in_words(data):
    doc = _mutate(GOOD_STROKES, data)
    for candidate in (doc, json.dumps(doc, allow_nan=True)):
        try:
            strokes = parse_strokes(candidate)
        except StrokesError as e:
            assert str(e) and len(str(e)) < 600
        else:
            assert all(isinstance(s, Stroke) for s in strokes)


@FUZZ
@given(st.text(alphabet='{}[]",:0123456789.eE-tfnulrs #', max_size=200))
def test_fuzzed_text_is_json_or_a_sentence(text):
    for parse, error in ((lambda t: check_project(loads(t), 1, parse_strokes=parse_strokes), ConfigError), (parse_strokes, StrokesError)):
        try:
            parse("{" + text)
        except error as e:
            assert str(e)
