"""Streaming import (json_import.py) stores what decoding the whole document stores.

The reference is the import zpydb had before it streamed: ``json.loads`` (the
last of repeated keys wins), :func:`zpydb.export.decode` of the whole document,
then one assignment.  Documents are written as text here, not by ``json.dumps``,
so they can hold what export never writes but a user's file may: repeated
keys, one-key objects that look like tags, a plain object whose first key is
``"$dict"``, tags at the root.
"""

import base64
import io
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import zpydb
from zpydb import nodes, export, json_import

_KEYS = st.sampled_from(["$dict", "$bytes", "$tuple", "$int", "$x", "a", "b", "0"])
_scalars = (st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab$", max_size=3)
            | st.sampled_from([1.5, -0.25]))


def _text(value):
    return json.dumps(value)


def _object(pairs):
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in pairs) + "}"


def _tags(inner):
    """Well-formed tags, and a few that are not."""
    return st.one_of(
        st.lists(st.tuples(_scalars.filter(lambda v: not isinstance(v, float)).map(_text)
                           | st.lists(st.integers(0, 3), max_size=2).map(_text), inner),
                 max_size=6).map(lambda pairs: _object(
                     [("$dict", "[" + ", ".join(f"[{k}, {v}]" for k, v in pairs) + "]")])),
        st.binary(max_size=4).map(lambda b: _object([("$bytes", _text(
            base64.b64encode(b).decode()))])),
        st.integers(-300, 300).map(lambda n: _object([("$int", _text(hex(n)))])),
        st.lists(_scalars.map(_text), max_size=3).map(
            lambda items: _object([("$tuple", "[" + ", ".join(items) + "]")])),
        st.sampled_from(['{"$dict": [[1]]}', '{"$dict": [1, 2]}', '{"$int": "12"}']),
    )


def _document(inner):
    return (st.lists(inner, max_size=5).map(lambda items: "[" + ", ".join(items) + "]")
            | st.lists(st.tuples(_KEYS, inner), max_size=5).map(_object)
            | _tags(inner))


_values = st.recursive(_scalars.map(_text), _document, max_leaves=20)
_roots = st.lists(st.tuples(_KEYS, _values), max_size=5).map(_object) | _tags(_values)


def _repeats_a_malformed_value(text):
    """Does an object repeat a key and some value anywhere fail to decode or to store?

    Streaming decodes (and stores) each value of a streamed object as it is read, so
    a malformed or unstorable value (``{"$dict": [[null, 1]]}``: a None key) is
    refused even when a repeated key would replace it later
    (json.loads keeps only the last); such documents are left out of the comparison
    (test_a_malformed_value_is_refused_even_if_its_key_repeats covers them).
    """
    repeated, malformed = [], []

    def pairs(items):
        keys = [key for key, _ in items]
        repeated.append(len(set(keys)) != len(keys))
        for _, value in items:
            try:
                nodes.to_node(export.decode(value))
            except (ValueError, TypeError, zpydb.Error):
                malformed.append(True)
        return dict(items)
    json.loads(text, object_pairs_hook=pairs)
    return any(repeated) and bool(malformed)


def _reference(db, text, steps):
    """The pre-streaming import: decode the whole document, then store it at once."""
    document = export.decode(json.loads(text), export.import_context())
    with db.transaction() as t:
        if not steps:
            if not isinstance(document, dict):
                raise zpydb.Error("importing at the root needs a JSON object")
            for key, value in document.items():
                t[key] = value
        else:
            t[steps[0]] = document


def _outcome(db, run):
    """What ``run`` leaves in ``db``: ("stored", {key: value}) or ("refused", None)."""
    for key in list(db.keys()):
        del db[key]
    try:
        run()
    except (zpydb.Error, ValueError, TypeError):
        assert list(db.keys()) == [], "a refused import stored something"
        return "refused", None
    return "stored", {key: db[key].value() for key in db.keys()}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streamed")
    with zpydb.connect(str(folder / "a.fs")) as streamed, \
            zpydb.connect(str(folder / "b.fs")) as reference:
        yield streamed, reference


@pytest.fixture
def tiny_batches(monkeypatch):
    """Every batch, savepoint and spool-to-file boundary is crossed by small documents."""
    monkeypatch.setattr(json_import, "IMPORT_BATCH", 2)
    monkeypatch.setattr(json_import, "IMPORT_RELEASE_EVERY", 3)
    monkeypatch.setattr(json_import, "SPOOL_MEMORY", 16)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=_roots, at_root=st.booleans())
def test_streamed_import_stores_what_decoding_the_whole_document_stores(two, tiny_batches,
                                                                        text, at_root):
    assume(not _repeats_a_malformed_value(text))
    streamed, reference = two
    steps = () if at_root else ("p",)
    got = _outcome(streamed, lambda: export.import_json(streamed, io.StringIO(text), steps,
                                                        progress=False))
    expected = _outcome(reference, lambda: _reference(reference, text, steps))
    assert got == expected, text


@pytest.mark.parametrize("text, stored", [
    ('{"$dict": [[1, "a"], [2, "b"]]}', {1: "a", 2: "b"}),
    ('{"$dict": [[1, "a"]], "b": 2}', {"$dict": [[1, "a"]], "b": 2}),
    ('{"$x": {"$y": 1}}', {"$x": {"$y": 1}}),
    ('{"a": 1, "a": 2}', {"a": 2}),
    ('{"$dict": [[1, 2]], "$dict": [[3, 4]]}', {3: 4}),
    ('{"$dict": 5, "$dict": [[3, 4]]}', {3: 4}),
    ('{"$dict": [[3, 4]], "$dict": 5, "b": 1}', {"$dict": 5, "b": 1}),
    ('{"$bytes": "x", "b": 1, "$bytes": "y"}', {"$bytes": "y", "b": 1}),
])
def test_the_root_object_may_be_a_tagged_dict(fdb, text, stored):
    export.import_json(fdb, io.StringIO(text), progress=False)
    assert {key: fdb[key].value() for key in fdb.keys()} == stored


@pytest.mark.parametrize("text", ['{"$bytes": "aGk="}', '{"$tuple": [1]}', '{"$int": "0x1"}',
                                  '{"$dict": 5}', '{"$bytes": "x", "$bytes": "aGk="}'])
def test_a_root_that_decodes_to_something_else_is_refused(fdb, text):
    fdb["kept"] = 1
    with pytest.raises(zpydb.Error, match="needs a JSON object|malformed"):
        export.import_json(fdb, io.StringIO(text), progress=False)
    assert list(fdb.keys()) == ["kept"]


def test_a_database_whose_root_keys_are_not_str_round_trips(tmp_path):
    with zpydb.connect(str(tmp_path / "a.fs")) as source, \
            zpydb.connect(str(tmp_path / "b.fs")) as target:
        for key in range(3000):
            source[key] = {"n": key}
        out = io.StringIO()
        export.export_json(source, stream=out, progress=False)
        assert out.getvalue().startswith('{"$dict": [[0, {"n": 0}]')
        assert export.import_json(target, io.StringIO(out.getvalue()), progress=False) == 3000
        assert list(target.keys()) == list(range(3000))
        assert target[2999]["n"].value() == 2999


def test_a_large_dict_with_int_keys_is_spooled_to_a_file_and_stored(fdb, monkeypatch):
    monkeypatch.setattr(json_import, "SPOOL_MEMORY", 1000)  # the pairs go to a file
    text = json.dumps({"d": export.encode({i: [i, str(i)] for i in range(20_000)})})
    assert export.import_json(fdb, io.StringIO(text), progress=False) == 1
    assert len(fdb["d"]) == 20_000 and fdb["d"][19_999].value() == [19_999, "19999"]


def test_a_malformed_value_is_refused_even_if_its_key_repeats(fdb):
    """json.loads keeps the last of repeated keys; a streamed object has stored (and
    checked) the first value by then, so a malformed one is refused."""
    with pytest.raises(zpydb.Error, match="malformed"):
        export.import_json(fdb, io.StringIO('{"a": {"$int": "12"}, "a": 1}'), progress=False)
    assert list(fdb.keys()) == []
