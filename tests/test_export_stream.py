"""Export and import stream (export.py): bounded memory, one snapshot, same values.

Memory is measured with tracemalloc in-process (every Python object the walk,
the parser, ZODB's caches and BTrees allocate) and compared with the size of
the JSON document: a ratio, never a time.
"""

import io
import json
import os
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zpydb
from zpydb import export, json_import

SMALL, LARGE = 20_000, 200_000


class _Sink(io.TextIOBase):
    """A write-only text stream that only counts (the document is never held)."""

    def __init__(self):
        self.size = 0

    def writable(self):
        return True

    def write(self, text):
        self.size += len(text)
        return len(text)


def _peak(func):
    tracemalloc.start()
    try:
        result = func()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _items(shape, n):
    return ([f"item {i:07d} of the list" for i in range(n)] if shape == "list" else
            {f"key{i:07d}": f"value {i} of the dict" for i in range(n)})


def _export_and_import_peaks(db, folder, shape, n):
    """Peak traced memory of exporting db['big'] (n items) to a file and importing it back."""
    with db.transaction() as t:
        t["big"] = _items(shape, n)
    document = folder / f"{shape}-{n}.json"

    def run_export():
        with open(document, "w") as stream:
            return export.export_json(db, ("big",), stream, progress=False)

    def run_import():
        with open(document, "rb") as stream:
            return export.import_json(db, stream, ("copy",), progress=False)
    count, export_peak = _peak(run_export)
    assert count == n
    count, import_peak = _peak(run_import)
    assert count == n and len(db["copy"]) == n
    del db["big"], db["copy"]
    return export_peak, import_peak, document.stat().st_size


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_memory_does_not_grow_with_the_number_of_items(backend, tmp_path, shape):
    """10x the items must not take 3x the memory (the figures: make bench, X1)."""
    db = backend.connect()
    small = _export_and_import_peaks(db, tmp_path, shape, SMALL)
    large = _export_and_import_peaks(db, tmp_path, shape, LARGE)
    print(f"\n{backend.name} {shape}: export peak {small[0] / 1e6:.1f} -> {large[0] / 1e6:.1f} MB, "
          f"import peak {small[1] / 1e6:.1f} -> {large[1] / 1e6:.1f} MB, document "
          f"{small[2] / 1e6:.1f} -> {large[2] / 1e6:.1f} MB")
    assert large[2] > 9 * small[2]
    assert large[0] < 3 * small[0], f"export: {small[0]:,} -> {large[0]:,} bytes"
    assert large[1] < 3 * small[1], f"import: {small[1]:,} -> {large[1]:,} bytes"


class _WritesMeanwhile(io.StringIO):
    """The first time export writes out a piece, another connection commits changes."""

    def __init__(self, db):
        super().__init__()
        self.db, self.done = db, False

    def write(self, text):
        if not self.done:
            self.done = True
            self.db["d"]["k0049999"] = "changed"
            del self.db["d"]["k0040000"]
            self.db["d"]["zzz"] = "added"
            self.db["l"].append("appended")
            self.db["l"][29_999] = "changed"
            self.db["other"] = 1
        return super().write(text)


def test_a_concurrent_writer_does_not_change_the_exported_snapshot(backend, monkeypatch):
    db = backend.connect()
    monkeypatch.setattr(export, "FLUSH_BYTES", 10_000)  # write out pieces early
    before = {"d": {f"k{i:07d}": i for i in range(50_000)},
              "l": [f"x{i}" for i in range(30_000)]}
    with db.transaction() as t:
        t["d"], t["l"] = before["d"], before["l"]
    stream = _WritesMeanwhile(db)
    export.export_json(db, stream=stream, progress=False)
    assert stream.done
    assert json.loads(stream.getvalue()) == before            # the snapshot it began with
    assert db["d"]["k0049999"].value() == "changed" and db["other"].value() == 1
    stream = io.StringIO()
    export.export_json(db, stream=stream, progress=False)      # a new export sees the writes
    assert json.loads(stream.getvalue())["d"]["zzz"] == "added"


# -- round trip of any value ------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2 ** 60)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
            | st.binary(max_size=8))
_keys = st.text(max_size=4) | st.sampled_from(["$bytes", "$tuple", "$dict", "$int", "$file",
                                                "$x"])


def _children(inner):
    return (st.lists(inner, max_size=5)
            | st.lists(_scalars | st.lists(_scalars, max_size=2).map(tuple),
                       max_size=3).map(tuple)  # tuples hold scalars and tuples
            | st.dictionaries(_keys, inner, max_size=4)
            | st.dictionaries(st.integers(), inner, max_size=3))


_values = st.recursive(_scalars, _children, max_leaves=25)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roundtrip")
    with zpydb.connect(str(folder / "a.fs")) as source, \
            zpydb.connect(str(folder / "b.fs")) as target:
        yield source, target


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, indent=st.sampled_from([None, 2]))
def test_round_trip_keeps_any_value_and_writes_what_json_dump_writes(pair, value, indent):
    source, target = pair
    old = (export.FLUSH_BYTES, json_import.IMPORT_BATCH, export.GC_EVERY,
           json_import.IMPORT_RELEASE_EVERY, json_import.SPOOL_MEMORY)
    # tiny batches: every streaming path runs on small values
    export.FLUSH_BYTES, json_import.IMPORT_BATCH, export.GC_EVERY, \
        json_import.IMPORT_RELEASE_EVERY, json_import.SPOOL_MEMORY = 16, 2, 3, 3, 64
    try:
        source["v"] = value
        out = io.StringIO()
        export.export_json(source, ("v",), out, indent=indent, progress=False)
        stored = source["v"].value()  # dicts come back in key order
        assert out.getvalue() == json.dumps(export.encode(stored), indent=indent) + "\n"
        export.import_json(target, io.StringIO(out.getvalue()), ("v",), progress=False)
        assert target["v"].value() == value
        whole = io.StringIO()
        export.export_json(source, (), whole, indent=indent, progress=False)
        target["v"] = None
        export.import_json(target, io.StringIO(whole.getvalue()), progress=False)
        assert target["v"].value() == value
    finally:
        export.FLUSH_BYTES, json_import.IMPORT_BATCH, export.GC_EVERY, \
            json_import.IMPORT_RELEASE_EVERY, json_import.SPOOL_MEMORY = old


def test_long_digit_strings_import_and_long_integers_are_refused(fdb):
    digits = "7" * 5000
    export.import_json(fdb, io.StringIO(json.dumps({"s": digits, "n": 12})), progress=False)
    assert fdb["s"].value() == digits and fdb["n"].value() == 12
    with pytest.raises(zpydb.Error, match=r'"\$int": "0x\.\.\."'):
        export.import_json(fdb, io.StringIO('{"m": 1, "big": ' + digits + "}"), progress=False)
    assert "m" not in fdb.keys()
    export.import_json(fdb, io.StringIO('{"after": ' + "9" * 4300 + "}"), progress=False)
    assert fdb["after"].value() == int("9" * 4300)


@pytest.mark.parametrize("text, says", [
    ('{"a": [1, 2', "not valid JSON"),
    ('{"a": 1} {"b": 2}', "not valid JSON"),
    ('{"a": [1, NaN]}', "not strict JSON: NaN"),
    ('{"a": Infinity}', "not strict JSON: Infinity"),
    ('{"a": [-Infinity]}', "not strict JSON"),
    ('{"a": 1e400}', "not strict JSON"),
    ('[1, 2]', "needs a JSON object"),
])
def test_bad_input_halfway_stores_nothing(fdb, text, says):
    fdb["kept"] = 1
    with pytest.raises(zpydb.Error, match=says):
        export.import_json(fdb, io.StringIO(text), progress=False)
    assert list(fdb.keys()) == ["kept"]
