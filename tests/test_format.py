"""The stored format: layout parameters live with the data, the root records the format.

* ``tests/fixtures/format0`` was written by zpydb before the format was stored
  (commit 2a677a1, see tests/fixtures/make_format0.py): no ``zpydb_format`` in
  the root, BigLists without ``_chunk_size``, chunks without ``capacity``.  The
  current code must read every value of it, change it, and stamp it (the
  current format) unless it is opened read-only.
* ``tests/fixtures/format1`` was written by format 1 (main 2f3b735, see
  tests/fixtures/make_format1.py): every dict a plain OOBTree, big ones
  included, with no stored length.  The current code must count them right
  before and after writing into them (the first write gives a big one its
  Length), read them read-only without writing, and undo back to them.
* A BigList keeps the chunk size it was made with: changing the module's
  ``CHUNK_SIZE`` changes only lists made afterwards, and conflict resolution
  (in the ZEO server for ZEO) uses each chunk's own capacity.
* A database in a newer format than this code knows is refused.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest
import transaction
from ZODB.POSException import ConflictError

import zpydb
from zpydb import biglist, errors
from zpydb.biglist import LEGACY_CHUNK_SIZE, BigList, Chunk
from zpydb.copy import copy_database
from zpydb.merging import AppendList, Counter
from zpydb.storage import Options, open_database
from zpydb.session import DATA_KEY, FORMAT_KEY, FORMAT_VERSION
from BTrees.OOBTree import OOBTree
from tests.helpers import check_stored_counts
from zpydb.bigdict import BigDict

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_format0 import expected  # noqa: E402
from make_format1 import expected as expected1  # noqa: E402

sys.path.remove(str(FIXTURES))


# -- helpers -------------------------------------------------------------------

def _raw(db):
    """A raw ZODB connection of ``db``'s database, with its own transaction manager."""
    tm = transaction.TransactionManager()
    conn = db._session.db.open(transaction_manager=tm)
    tm.begin()
    return tm, conn


def _root_items(db):
    tm, conn = _raw(db)
    try:
        return dict(conn.root())
    finally:
        tm.abort()
        conn.close()


def _set_root(db, **items):
    """Change ZODB's root mapping directly (``None`` deletes the key)."""
    tm, conn = _raw(db)
    try:
        root = conn.root()
        for key, value in items.items():
            if value is None:
                root.pop(key, None)
            else:
                root[key] = value
        tm.commit()
    finally:
        conn.close()


def _check_fixture_values(db, big, d=None):
    want = expected()
    d = want["d"] if d is None else d
    assert db["big"]._run() == big
    assert len(db["big"]) == len(big)
    for index in (0, 5, 511, 512, 513, 1023, 1024, 1500, 2047, 2048, len(big) - 1):
        assert db["big"][index]._run() == big[index]
    assert db["big"][-1]._run() == big[-1]
    assert db["big"][500:530]._run() == big[500:530]
    nested = big.index({"nested": [1, 2, 3], "k": "v"})
    assert db["big"][nested]["nested"][2] == 3
    assert db["d"]._run() == d
    assert db["d"]["b"]["t"]._run() == (1, "x")
    assert db["s"] == "hello"
    assert db["f"]._run().read() == want["f"]
    assert db["f"]._run().name == "f.txt"


def _fixture_backend(backend, tmp_path, name="format0"):
    """Put a copy of the fixture ``name`` where ``backend`` keeps its data."""
    source = tmp_path / name
    shutil.copytree(FIXTURES / name, source)
    if backend.name == "file":
        os.remove(backend.url) if os.path.exists(backend.url) else None
        shutil.copy(source / "Data.fs", backend.url)
        if (source / "blobs").exists():
            shutil.copytree(source / "blobs", Path(backend.url).parent / "blobs")
    elif backend.name == "zeo":
        backend.server.stop()
        data = backend.server.data_dir
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(source, data)
        backend.server.start()
    else:
        copy_database(str(source / "Data.fs"), backend.url, progress=False)


# -- the previous format ---------------------------------------------------------

def test_fixture_is_small_and_in_the_old_format():
    files = [p for p in (FIXTURES / "format0").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 200_000
    assert b"zpydb_format" not in (FIXTURES / "format0" / "Data.fs").read_bytes()
    assert b"_chunk_size" not in (FIXTURES / "format0" / "Data.fs").read_bytes()


def test_opens_a_database_written_by_the_previous_format(backend, tmp_path):
    _fixture_backend(backend, tmp_path)
    db = backend.connect()
    big = expected()["big"]
    _check_fixture_values(db, big)
    assert db["n"] == 12 and db["l"] == ["x", "y", "z", 4]

    # stored as the old code stored it, read with the legacy defaults
    tm, conn = _raw(db)
    try:
        root = conn.root()
        assert root[FORMAT_KEY] == FORMAT_VERSION          # stamped by the first open
        node = root[DATA_KEY]["big"]
        node._p_activate()
        assert "_chunk_size" not in node.__dict__ and node._chunk_size == LEGACY_CHUNK_SIZE
        last = node._chunks[len(node._chunks) - 1]
        last._p_activate()
        assert "capacity" not in last.__dict__ and last.capacity == LEGACY_CHUNK_SIZE
        assert isinstance(root[DATA_KEY]["n"], Counter)
        assert isinstance(root[DATA_KEY]["l"], AppendList)
    finally:
        tm.abort()
        conn.close()

    # change it with the new code: appends into the old last chunk and new chunks,
    # inserts, item assignment, pops; then check every value again
    for i in range(600):
        db["big"].append(("new", i))
        big.append(("new", i))
    db["big"].insert(0, "first")
    big.insert(0, "first")
    db["big"].insert(1700, {"inserted": 1})
    big.insert(1700, {"inserted": 1})
    db["big"][2500] = "set"
    big[2500] = "set"
    assert db["big"].pop(3) == big.pop(3)
    assert db["big"].pop() == big.pop()
    db["big"].extend(range(100))
    big.extend(range(100))
    db["n"] += 1
    db["l"].append(5)
    db["d"]["b"]["c"].append("more")
    d = expected()["d"]
    d["b"]["c"].append("more")
    _check_fixture_values(db, big, d)
    assert db["n"] == 13 and db["l"] == ["x", "y", "z", 4, 5]
    assert db["d"]["b"]["c"][-1] == "more"

    # and again from a fresh client, after the caches are gone
    backend.close_all()
    again = backend.connect()
    _check_fixture_values(again, big, d)
    assert again.history()[0]["note"] == "db['d']['b']['c'].append('more')"


def test_old_chunks_still_merge_concurrent_appends(file_backend, tmp_path):
    _fixture_backend(file_backend, tmp_path)
    db = file_backend.connect()
    (tm_a, conn_a), (tm_b, conn_b) = _raw(db), _raw(db)
    conn_a.root()[DATA_KEY]["big"].append("a")   # both land in the old last chunk
    conn_b.root()[DATA_KEY]["big"].append("b")
    tm_a.commit()
    tm_b.commit()                                 # merged, not a conflict
    conn_a.close()
    conn_b.close()
    assert db["big"][-2:]._run() == ["a", "b"]
    assert len(db["big"]) == 3002


def test_read_only_open_of_the_previous_format_writes_nothing(tmp_path):
    target = tmp_path / "format0"
    shutil.copytree(FIXTURES / "format0", target)
    before = (target / "Data.fs").read_bytes()
    db = zpydb.connect(str(target / "Data.fs"), read_only=True)
    try:
        _check_fixture_values(db, expected()["big"])
        assert FORMAT_KEY not in _root_items(db)
    finally:
        db.close()
    assert (target / "Data.fs").read_bytes() == before


# -- format 1: big dicts without a stored length ---------------------------------

#: The dicts of the format-1 fixture: (steps, stored as a plain tree of several buckets?)
FORMAT1_DICTS = [((), True), (("big",), True), (("d",), False), (("d", "inner"), True),
                 (("d", "small"), False), (("rows", 0), True), (("rows", 1), True),
                 (("empty",), False)]


def _at(value, steps):
    for step in steps:
        value = value[step]
    return value


def _stored_types(db):
    tm, conn = _raw(db)
    try:
        return {steps: type(_at(conn.root()[DATA_KEY], steps)) for steps, _ in FORMAT1_DICTS}
    finally:
        tm.abort()
        conn.close()


def _check_lens(db, model):
    for steps, _ in FORMAT1_DICTS:
        assert len(_at(db, steps)) == len(_at(model, steps)), steps
        assert bool(_at(db, steps)) == bool(_at(model, steps)), steps
    assert db._run() == model


def test_format1_fixture_is_small_and_in_format_1():
    data = (FIXTURES / "format1" / "Data.fs").read_bytes()
    assert len(data) < 200_000
    assert b"zpydb_format" in data and b"BigDict" not in data and b"BTrees.Length" not in data


def test_opens_a_database_written_by_format_1(backend, tmp_path):
    _fixture_backend(backend, tmp_path, "format1")
    db = backend.connect()
    model = expected1()
    _check_lens(db, model)                    # counted by walking the plain trees
    assert _root_items(db)[FORMAT_KEY] == FORMAT_VERSION
    assert set(_stored_types(db).values()) == {OOBTree}   # opening wrote only the stamp
    check_stored_counts(db, legacy=True)

    statements = [  # (zpydb statement, the same on the model): every kind of dict
        (lambda: db["big"].__setitem__("new", 1), lambda m: m["big"].__setitem__("new", 1)),
        (lambda: db["big"].__delitem__("k00011"), lambda m: m["big"].__delitem__("k00011")),
        (lambda: db["d"]["inner"].pop(3), lambda m: m["d"]["inner"].pop(3)),
        (lambda: db["rows"][1].update({"f99": 1, "id": 7}),
         lambda m: m["rows"][1].update({"f99": 1, "id": 7})),
        (lambda: db["d"]["small"].setdefault("c", 3),
         lambda m: m["d"]["small"].setdefault("c", 3)),
        (lambda: db.__setitem__("t99", 99), lambda m: m.__setitem__("t99", 99)),
        (lambda: db.__delitem__("t00"), lambda m: m.__delitem__("t00")),
        (lambda: db["empty"].update({str(i): i for i in range(40)}),
         lambda m: m["empty"].update({str(i): i for i in range(40)})),
        (lambda: db["big"].popitem(), lambda m: m["big"].pop("zz-last")),
    ]
    states = [expected1()]
    for on_db, on_model in statements:
        on_db()
        on_model(model)
        states.append(_copy(model))
        _check_lens(db, model)
    types = _stored_types(db)
    assert types[()] is BigDict and types[("big",)] is BigDict                  # wrapped
    assert types[("d", "inner")] is BigDict and types[("rows", 1)] is BigDict
    assert types[("empty",)] is BigDict                                          # it split
    assert types[("d", "small")] is OOBTree and types[("rows", 0)] is OOBTree    # untouched
    assert check_stored_counts(db, legacy=True) == 5

    backend.close_all()                       # a fresh client, caches gone
    db = backend.connect()
    _check_lens(db, model)
    for state in reversed(states[:-1]):       # undo goes newest first: the wraps go too
        db.undo()
        _check_lens(db, state)
    assert set(_stored_types(db).values()) == {OOBTree}
    for state in states[1:]:
        db.redo()
        _check_lens(db, state)
    check_stored_counts(db, legacy=True)


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def test_read_only_open_of_format_1_counts_and_writes_nothing(tmp_path):
    target = tmp_path / "format1"
    shutil.copytree(FIXTURES / "format1", target)
    before = (target / "Data.fs").read_bytes()
    db = zpydb.connect(str(target / "Data.fs"), read_only=True)
    try:
        _check_lens(db, expected1())
        assert list(reversed(db["big"]))[:2] == ["zz-last", "k02999"]
        assert _root_items(db)[FORMAT_KEY] == 1
        with pytest.raises(zpydb.ReadOnlyError):
            db["big"]["x"] = 1
    finally:
        db.close()
    assert (target / "Data.fs").read_bytes() == before


# -- the layout travels with the data ------------------------------------------

def test_a_new_database_records_the_format(backend):
    db = backend.connect()
    assert _root_items(db)[FORMAT_KEY] == FORMAT_VERSION
    db["x"] = 1
    assert [entry["note"] for entry in db.history()] == ["db['x'] = 1"]


def test_the_format_stamp_does_not_block_undo(file_backend):
    db = file_backend.connect()
    db["x"] = 1
    db["y"] = 2
    _set_root(db, **{FORMAT_KEY: None})           # as if written before the format existed
    file_backend.close_all()
    db = file_backend.connect()                   # stamps format 1 (kind "format")
    assert _root_items(db)[FORMAT_KEY] == FORMAT_VERSION
    assert [entry["note"] for entry in db.history()] == ["db['y'] = 2", "db['x'] = 1"]
    db.undo()
    db.undo()
    assert db._run() == {}
    db.redo()
    assert db._run() == {"x": 1}


def test_changing_chunk_size_does_not_misread_existing_lists(backend, monkeypatch):
    db = backend.connect()
    old = list(range(3000))
    db["old"] = old                                   # chunks of 512
    monkeypatch.setattr(biglist, "CHUNK_SIZE", 100)
    assert db["old"]._run() == old
    assert db["old"][1234] == 1234 and db["old"][-1] == 2999
    db["old"].append(3000)
    db["old"].insert(600, "in")
    old.append(3000)
    old.insert(600, "in")
    new = list(range(1500))
    db["new"] = new                                   # chunks of 100
    db["new"].append("x")
    new.append("x")
    assert db["old"]._run() == old and db["new"]._run() == new

    monkeypatch.setattr(biglist, "CHUNK_SIZE", 512)   # and back: each list keeps its own
    backend.close_all()
    db = backend.connect()
    assert db["old"]._run() == old and db["new"]._run() == new
    assert db["new"][1234] == 1234 and db["new"][-1] == "x"
    db["new"].insert(0, "first")
    db["new"].extend(range(250))
    new.insert(0, "first")
    new.extend(range(250))
    assert db["new"]._run() == new

    tm, conn = _raw(db)
    try:
        data = conn.root()[DATA_KEY]
        assert data["old"]._chunk_size == 512 and data["new"]._chunk_size == 100
        assert all(len(chunk) <= 100 for chunk in data["new"]._chunks.values())
        assert {chunk.capacity for chunk in data["new"]._chunks.values()} == {100}
    finally:
        tm.abort()
        conn.close()


def _interleave_appends(db, key, items_a, items_b):
    (tm_a, conn_a), (tm_b, conn_b) = _raw(db), _raw(db)
    try:
        conn_a.root()[DATA_KEY][key].extend(items_a)
        conn_b.root()[DATA_KEY][key].extend(items_b)
        tm_a.commit()
        tm_b.commit()
    finally:
        tm_b.abort()
        conn_a.close()
        conn_b.close()


def test_conflict_resolution_uses_each_chunks_own_capacity(backend, monkeypatch):
    """Resolution runs in the ZEO server for ZEO, whose CHUNK_SIZE is still 512."""
    monkeypatch.setattr(biglist, "CHUNK_SIZE", 100)
    db = backend.connect()
    db["b"] = list(range(1090))                      # last chunk: 90 of 100
    _interleave_appends(db, "b", ["a"] * 4, ["b"] * 4)  # 98 items: fits, merges
    assert len(db["b"]) == 1098
    with pytest.raises(ConflictError):                  # 102 > 100 (though < 512)
        _interleave_appends(db, "b", ["c"], ["d"] * 3)
    assert len(db["b"]) == 1099 and db["b"][-1] == "c"
    assert db["b"]._run() == list(range(1090)) + ["a"] * 4 + ["b"] * 4 + ["c"]


def test_chunk_resolver_reads_capacity_from_the_state():
    chunk = Chunk.__new__(Chunk)                      # what ZODB resolves with: no state
    old = {"data": [1], "capacity": 3}
    merged = chunk._p_resolveConflict(old, {"data": [1, 2], "capacity": 3},
                                      {"data": [1, 3], "capacity": 3})
    assert merged == {"data": [1, 2, 3], "capacity": 3}
    with pytest.raises(ConflictError):
        chunk._p_resolveConflict(old, {"data": [1, 2], "capacity": 3},
                                 {"data": [1, 3, 4], "capacity": 3})
    with pytest.raises(ConflictError):                # a capacity that changed
        chunk._p_resolveConflict(old, {"data": [1, 2], "capacity": 4},
                                 {"data": [1, 3], "capacity": 3})
    legacy = chunk._p_resolveConflict({"data": [0] * 510}, {"data": [0] * 511},
                                      {"data": [0] * 511})
    assert legacy == {"data": [0] * 512}             # format 0: 512
    with pytest.raises(ConflictError):
        chunk._p_resolveConflict({"data": [0] * 510}, {"data": [0] * 512},
                                 {"data": [0] * 511})


def test_biglist_refuses_a_bad_chunk_size():
    for bad in (0, -1, 1.5, "512", True):
        with pytest.raises(ValueError):
            BigList([1], chunk_size=bad)
    assert BigList(range(10), chunk_size=3)[7] == 7


# -- a newer format is refused -------------------------------------------------

@pytest.mark.parametrize("stamp", [FORMAT_VERSION + 1, "2", -1])
def test_a_newer_format_is_refused(backend, stamp):
    db = backend.connect()
    db["x"] = 1
    name = db._session.name
    _set_root(db, **{FORMAT_KEY: stamp})
    backend.close_all()
    for options in ({}, {"read_only": True}):
        with pytest.raises(errors.FormatError) as refused:
            backend.connect(**options)
        assert refused.value.url == name and refused.value.found == stamp
        assert name in str(refused.value) and repr(stamp) in str(refused.value)
        assert "upgrade zpydb" in str(refused.value)
    # the refusal closed what it opened (an embedded Data.fs is not left locked)
    raw = open_database(backend.url, Options(wait_timeout=10))
    try:
        tm = transaction.TransactionManager()
        conn = raw.db.open(transaction_manager=tm)
        conn.root()[FORMAT_KEY] = FORMAT_VERSION
        tm.commit()
        conn.close()
    finally:
        raw.close()
    db = backend.connect()
    assert db["x"] == 1
