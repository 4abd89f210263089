"""db.pack(days=...) (pack.py) on real storages: an embedded FileStorage, runzeo, PostgreSQL.

Packing must drop old revisions and the undo log before the pack time, keep the
current data and the blobs they reference, keep ``days`` of recent history, and
refuse (PackError naming the database, nothing packed) where it cannot pack.
"""

import os
import time
from pathlib import Path

import pytest

import zpydb
from tests.helpers import transaction_count


def blob_files(directory):
    return sorted(p for p in Path(directory).rglob("*.blob"))


def churn(db, times=30):
    for i in range(times):
        db["x"] = list(range(i, i + 50))


def test_pack_drops_old_revisions_and_keeps_current_data(backend):
    db = backend.connect()
    churn(db)
    db["d"] = {"a": [1, {"b": 2}]}
    before = transaction_count(db)
    db.pack()
    assert transaction_count(db) < before
    assert db._run() == {"d": {"a": [1, {"b": 2}]}, "x": list(range(29, 79))}
    other = backend.connect()  # a second client (a fresh cache) reads the packed data too
    assert other["x"]._run() == list(range(29, 79)) and other["d"]["a"][1]["b"]._run() == 2
    db["y"] = 1  # and the database goes on: writes, undo of a change after the pack
    db.undo()
    assert "y" not in db


def test_pack_shrinks_the_file_and_removes_old_blobs(fdb, file_backend):
    path = file_backend.url
    blobs = os.path.join(os.path.dirname(path), "blobs")
    fdb["f"] = zpydb.File(b"old" * 10_000, name="old.bin")
    fdb["f"] = zpydb.File(b"new" * 10_000, name="new.bin")
    fdb["gone"] = zpydb.File(b"gone" * 10_000, name="gone.bin")
    del fdb["gone"]
    churn(fdb)
    size, stored = os.path.getsize(path), len(blob_files(blobs))
    assert stored == 3
    fdb.pack()
    assert os.path.getsize(path) < size / 2
    assert len(blob_files(blobs)) == 1  # only the current revision of db['f']
    assert fdb["f"]._run().read() == b"new" * 10_000
    assert fdb["f"]._run().name == "new.bin"


def test_pack_over_zeo_packs_the_servers_file(zeo_server):
    db = zpydb.connect(zeo_server.url, wait_timeout=10)
    try:
        db["f"] = zpydb.File(b"one" * 10_000, name="one.bin")
        db["f"] = zpydb.File(b"two" * 10_000, name="two.bin")
        churn(db)
        data = zeo_server.data_dir / "Data.fs"
        size = os.path.getsize(data)
        db.pack()
        assert os.path.getsize(data) < size / 2
        assert len(blob_files(zeo_server.data_dir / "blobs")) == 1
        assert db["f"]._run().read() == b"two" * 10_000
        assert db["x"]._run() == list(range(29, 79))
    finally:
        db.close()


def test_days_keeps_recent_history(fdb):
    fdb["x"] = "old"
    time.sleep(1.5)
    fdb["x"] = "recent"
    fdb["x"] = "newest"
    fdb.pack(days=1)  # a day: every change is newer, nothing goes
    assert [c["note"] for c in fdb.history(5)][:3] == [
        "db['x'] = 'newest'", "db['x'] = 'recent'", "db['x'] = 'old'"]
    fdb.pack(days=1 / 86400)  # one second: 'old' is older, the two recent changes stay
    assert [c["note"] for c in fdb.history(5)] == ["db['x'] = 'newest'", "db['x'] = 'recent'"]
    fdb.undo()
    assert fdb["x"]._run() == "recent"
    fdb.undo()
    assert fdb["x"]._run() == "old"  # the state as of the pack time is kept
    with pytest.raises(zpydb.UndoError, match="nothing to undo"):
        fdb.undo()


def test_memory_database_refuses_pack():
    db = zpydb.connect("memory://")
    try:
        db["x"] = 1
        with pytest.raises(zpydb.PackError, match="in-memory") as caught:
            db.pack()
        assert caught.value.url == "memory://" and "memory://" in str(caught.value)
        assert db["x"]._run() == 1
    finally:
        db.close()


@pytest.mark.parametrize("block", ["transaction", "lock", "atomic"])
def test_pack_is_refused_inside_an_open_block(fdb, file_backend, block):
    fdb["x"] = 1
    fdb["x"] = 2
    count = transaction_count(fdb)
    with pytest.raises(zpydb.PackError, match="nothing was packed") as caught:
        if block == "transaction":
            with fdb.transaction() as t:
                t["x"] = 3
                fdb.pack()
        elif block == "lock":
            fdb.lock()
            try:
                fdb["x"] = 3
                fdb.pack()
            finally:
                fdb.unlock()
        else:
            fdb.atomic(lambda t: fdb.pack())
    assert caught.value.url == file_backend.url
    assert transaction_count(fdb) >= count  # nothing packed


@pytest.mark.parametrize("days", [-1, "7", None, True, float("nan"), float("inf")])
def test_bad_days_are_refused(fdb, days):
    with pytest.raises(zpydb.BadArgumentError, match="days"):
        fdb.pack(days=days)


def test_a_read_only_file_refuses_pack(file_backend):
    file_backend.connect()["x"] = 1
    file_backend.close_all()
    db = file_backend.connect(read_only=True)
    with pytest.raises(zpydb.ReadOnlyError, match="read-only"):
        db.pack()
