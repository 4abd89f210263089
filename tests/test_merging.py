"""Conflict resolution of zpydb's mergeable nodes (merging.py, biglist.py).

Two transactions are interleaved by hand on two real connections (two zpydb
clients of one FileStorage, one ZEO server or one PostgreSQL database): both
read the same state, one commits, then the other commits.  Without
``_p_resolveConflict`` the second commit is a ConflictError; with it, both
changes are kept.  Changes that are not pure increments or appends must still
conflict (and zpydb's statements then retry them on fresh data).
"""

import subprocess
import sys
import textwrap

import pytest
import transaction
import ZODB.POSException as POS
from persistent.list import PersistentList

import zpydb
from tests.servers import ZeoServer
from zpydb import biglist, merging
from zpydb.session import DATA_KEY


def _raw(backend):
    """A second, raw ZODB connection to the backend's database (own transaction manager)."""
    db = backend.connect()
    tm = transaction.TransactionManager()
    conn = db._session.db.open(transaction_manager=tm)
    return db, tm, conn


def _data(conn):
    return conn.root()[DATA_KEY]


def _interleave(backend, change_a, change_b):
    """Run change_a and change_b from the same snapshot; commit a, then b."""
    _, tm_a, conn_a = _raw(backend)
    _, tm_b, conn_b = _raw(backend)
    tm_a.begin()
    tm_b.begin()
    change_a(_data(conn_a))
    change_b(_data(conn_b))
    tm_a.commit()
    try:
        tm_b.commit()
    finally:
        tm_b.abort()
        conn_a.close()
        conn_b.close()


def test_concurrent_increments_add_up(backend):
    db = backend.connect()
    db["n"] = 10
    db["n"] += 1  # the number now lives in a Counter of its own
    _interleave(backend, lambda d: d["n"].add(5), lambda d: d["n"].add(-2))
    assert db["n"] == 14
    assert isinstance(db["n"]._run(), int)


def test_float_increments_add_up(backend):
    db = backend.connect()
    db["x"] = 0.5
    db["x"] += 0.25
    _interleave(backend, lambda d: d["x"].add(1.0), lambda d: d["x"].add(2.0))
    assert db["x"] == 3.75


def test_a_counter_set_does_not_merge_with_an_increment(backend):
    db = backend.connect()
    db["n"] = 1
    db["n"] += 1
    with pytest.raises(POS.ConflictError):
        _interleave(backend, lambda d: d["n"].set(100), lambda d: d["n"].add(1))
    assert db["n"] == 100


def test_concurrent_appends_keep_both_in_commit_order(backend):
    db = backend.connect()
    db["l"] = [1, 2]
    _interleave(backend, lambda d: d["l"].append("a"), lambda d: d["l"].extend(["b", "c"]))
    assert db["l"] == [1, 2, "a", "b", "c"]


def test_appended_containers_merge_too(backend):
    db = backend.connect()
    db["l"] = [{"k": 0}]
    _interleave(backend,
                lambda d: d["l"].append(zpydb.nodes.to_node({"k": 1})),
                lambda d: d["l"].append(zpydb.nodes.to_node([2])))
    assert db["l"] == [{"k": 0}, {"k": 1}, [2]]


def _fresh_change(change):
    return lambda d: change(d["l"])


@pytest.mark.parametrize("change", [
    lambda lst: lst.__setitem__(0, "changed"),
    lambda lst: lst.pop(),
    lambda lst: lst.remove(1),
    lambda lst: lst.reverse(),
])
def test_an_append_never_merges_into_a_changed_list(backend, change):
    db = backend.connect()
    db["l"] = [1, 2, 3]
    with pytest.raises(POS.ConflictError):
        _interleave(backend, _fresh_change(change), lambda d: d["l"].append(4))
    assert 4 not in db["l"]._run()


def test_big_list_appends_merge_in_the_last_chunk(backend):
    db = backend.connect()
    db["b"] = list(range(biglist.CHUNK_SIZE * 2 + 10))
    _interleave(backend, lambda d: d["b"].append("x"), lambda d: d["b"].extend(["y", "z"]))
    value = db["b"]._run()
    assert value[-3:] == ["x", "y", "z"]
    assert len(db["b"]) == biglist.CHUNK_SIZE * 2 + 13 == len(value)


def test_big_list_appends_that_both_start_a_chunk_conflict(backend):
    db = backend.connect()
    db["b"] = list(range(biglist.CHUNK_SIZE * 4))  # a BigList whose last chunk is full
    with pytest.raises(POS.ConflictError):
        _interleave(backend, lambda d: d["b"].append("x"), lambda d: d["b"].append("y"))
    assert db["b"]._run()[-1] == "x"


def test_big_list_merge_that_overflows_a_chunk_conflicts(backend):
    db = backend.connect()
    db["b"] = list(range(biglist.CHUNK_SIZE * 4 - 1))  # one free slot in the last chunk
    with pytest.raises(POS.ConflictError):
        _interleave(backend, lambda d: d["b"].append("x"), lambda d: d["b"].append("y"))
    assert len(db["b"]) == biglist.CHUNK_SIZE * 4


def test_big_list_clear_never_merges_with_an_append(backend):
    db = backend.connect()
    db["b"] = list(range(biglist.CHUNK_SIZE * 2 + 10))
    with pytest.raises(POS.ConflictError):
        _interleave(backend, lambda d: d["b"].clear(), lambda d: d["b"].append("y"))
    assert db["b"] == []
    assert len(db["b"]) == 0


def test_undo_of_one_increment_among_later_ones(backend):
    """ZODB's undo uses the same resolution: undoing +10 keeps the +1 and the later +100.

    FileStorage (embedded and behind ZEO) resolves; RelStorage refuses the undo.
    """
    db = backend.connect()
    db["n"] = 0
    db["n"] += 1
    db["n"] += 10
    db["n"] += 100
    storage_db = db._session.db
    entries = storage_db.undoLog(0, 10)
    target = next(e for e in entries if e["description"] in (b"db['n'] += 10", "db['n'] += 10"))
    tm = transaction.TransactionManager()
    txn = tm.begin()
    storage_db.undo(target["id"], txn)
    if backend.name == "postgres":  # RelStorage's undo refuses instead of resolving
        with pytest.raises(POS.UndoError, match="modified by a later transaction"):
            tm.commit()
        tm.abort()
        assert db["n"] == 111
        return
    tm.commit()
    assert db["n"] == 101


def test_plain_reads_show_plain_values(backend):
    db = backend.connect()
    db["d"] = {"n": 1, "l": [0]}
    db["d"]["n"] += 1
    db["d"]["l"][0] += 2
    assert db["d"] == {"n": 2, "l": [2]}
    assert type(db["d"]["n"]._run()) is int
    assert "n" in db["d"]
    assert db["d"]["n"] + 1 == 3
    with pytest.raises(zpydb.NotAContainerError, match="int"):
        db["d"]["n"]["x"]._run()


def test_same_items_never_raises_on_references():
    from ZODB.ConflictResolution import PersistentReference
    ref_a, ref_b = PersistentReference(b"\0" * 7 + b"\1"), PersistentReference(b"\0" * 7 + b"\2")
    assert merging.same_items([ref_a, 1], [ref_a, 1])
    assert not merging.same_items([ref_a], [ref_b])
    assert not merging.same_items([ref_a], [1])
    assert not merging.same_items([1], [True])
    assert merging.same_items([float("nan")], [float("nan")])


def test_old_plain_persistent_lists_still_work(file_backend):
    """Lists stored before AppendList existed (plain PersistentList) read and change."""
    db = file_backend.connect()
    db["x"] = 0
    tm = transaction.TransactionManager()
    conn = db._session.db.open(transaction_manager=tm)
    tm.begin()
    _data(conn)["old"] = PersistentList([1, 2])
    tm.commit()
    conn.close()
    db["old"].append(3)
    db["old"] += [4]
    assert db["old"] == [1, 2, 3, 4]


class _ServerWithoutZpydb(ZeoServer):
    """runzeo in a Python that cannot import zpydb (stock ZEO, no bundled config)."""

    GUARD = textwrap.dedent("""\
        import sys
        sys.modules['zpydb'] = None  # any import of zpydb now raises ImportError
        from ZEO.runzeo import main
        sys.argv[0] = 'runzeo'
        main()
    """)

    def command(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.directory / "plain-zeo.conf"
        config.write_text(f"<zeo>\n  address {self.hostport}\n</zeo>\n"
                          f"<filestorage>\n  path {self.data_dir / 'Data.fs'}\n"
                          f"  blob-dir {self.data_dir / 'blobs'}\n</filestorage>\n")
        return [sys.executable, "-c", self.GUARD, "-C", str(config)]


def test_a_server_without_zpydb_still_counts_through_retries(tmp_path):
    """A server that cannot import zpydb cannot merge: the statements retry and succeed."""
    with _ServerWithoutZpydb(tmp_path / "zeo") as server:
        db = zpydb.connect(server.url, wait_timeout=10)
        db["n"] = 0
        db["l"] = []
        db["n"] += 1  # a Counter record the server cannot load
        code = textwrap.dedent(f"""\
            import zpydb
            db = zpydb.connect({server.url!r}, wait_timeout=10)
            for i in range(30):
                db['n'] += 1
                db['l'].append(i)
            db.close()
        """)
        workers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
        assert [w.wait(timeout=240) for w in workers] == [0, 0, 0]
        assert db["n"] == 91
        assert sorted(db["l"]._run()) == sorted(list(range(30)) * 3)
        db.close()
