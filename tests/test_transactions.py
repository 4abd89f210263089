"""Transaction blocks, atomic retries, lock/unlock and concurrency (transactions.py).

Concurrency tests use separate OS processes against ZEO and PostgreSQL, and
threads (each with its own connection) against the embedded FileStorage, which
one process at a time may open.
"""

import pytest

import zpydb
from tests import workers
from tests.helpers import transaction_count


def run_clients(backend, tmp_path, mode, clients, count, **options):
    """Run ``clients`` workers of ``mode`` at once (processes, or threads on a file);
    every statement of every worker must succeed.  Returns their reports."""
    if backend.name == "file":
        reports = workers.run_threads(backend.connect(), mode, clients, count, **options)
    else:
        reports = workers.run_workers(backend.url, mode, clients, count, tmp_path, **options)
    total = workers.summary(reports)
    assert total["unfinished"] == 0 and total["failed"] == 0, total
    assert total["done"] == clients * count, total
    return reports


def test_block_commits_once_at_the_end(db):
    before = transaction_count(db)
    with db.transaction() as t:
        t["a"] = [1]
        t["a"].append(2)
        assert t["a"]._run() == [1, 2]           # the block sees its own writes
        assert "a" not in db                      # ...others do not, yet
    assert db["a"]._run() == [1, 2]
    assert transaction_count(db) == before + 1
    assert db.history(1)[0]["note"] == "db['a'] = [1]; db['a'].append(2)"


def test_exception_in_a_block_leaves_nothing_behind(db):
    db["a"] = 1
    before = transaction_count(db)
    with pytest.raises(RuntimeError):
        with db.transaction() as t:
            t["a"] = 2
            t["b"] = {"x": 1}
            raise RuntimeError("boom")
    assert db._run() == {"a": 1}
    assert transaction_count(db) == before


def test_a_failed_statement_inside_a_block_is_rolled_back(db):
    db["d"] = {"a": 1}
    with db.transaction() as t:
        t["d"]["b"] = 2
        with pytest.raises(zpydb.UnorderableKeyError):
            t["d"].update({"c": 3, 4: "mixed"})   # caught by the user: the block goes on
        t["d"]["e"] = 5
    assert db["d"]._run() == {"a": 1, "b": 2, "e": 5}


class Text(str):
    """A str subclass: stored as a plain str, never as this class."""


def test_bulk_records_that_cannot_take_the_short_way_fail_alone_in_a_block(db):
    """A dict of str keys and scalars converts without checks (nodes.plain_dict_node);
    every other dict -- a key of another kind, a value that cannot be stored,
    a subclass -- still gets the long way's error naming the path, the block
    goes on without anything of the failed statement, and commits the rest."""
    db["d"] = {"a": 1}
    before = transaction_count(db)
    with db.transaction() as t:
        t["ok"] = {"i": 1, "name": "item 1"}
        with pytest.raises(zpydb.UnorderableKeyError) as mixed:
            t["mixed"] = {"a": 1, 2: "b"}
        with pytest.raises(zpydb.UnstorableValueError) as unstorable:
            t["unstorable"] = {"a": 1, "b": object()}
        with pytest.raises(zpydb.UnstorableValueError) as nested:
            t["nested"] = {"a": {"x": 1, "y": {1, 2}}}
        with pytest.raises(zpydb.UnorderableKeyError) as int_key:
            t["d"][5] = {"x": 1}                    # an int key into a str-keyed dict
        t["sub"] = {Text("k"): Text("v"), "n": True}
        t["many"] = {f"k{n}": n for n in range(100)}   # past one bucket: a BigDict
        t["empty"] = {}
    assert mixed.value.path == "db['mixed']"
    assert unstorable.value.path == "db['unstorable']['b']"
    assert nested.value.path == "db['nested']['a']['y']"
    assert int_key.value.path == "db['d'][5]"
    assert transaction_count(db) == before + 1
    assert db._run() == {"d": {"a": 1}, "ok": {"i": 1, "name": "item 1"},
                         "sub": {"k": "v", "n": True},
                         "many": {f"k{n}": n for n in range(100)}, "empty": {}}
    stored = db["sub"]._run()
    assert [type(k) for k in stored] == [str, str] and type(stored["k"]) is str
    assert len(db["many"]) == 100 and db["many"]["k99"]._run() == 99


def test_reads_in_a_block_see_one_snapshot(backend):
    db, other = backend.connect(), backend.connect()
    db["x"] = 1
    db["box"] = {}
    with pytest.raises(zpydb.ConflictError):
        with db.transaction() as t:
            assert t["x"]._run() == 1
            other["y"] = "later"                  # committed by another client meanwhile
            assert "y" not in t                   # the block keeps its snapshot
            t["box"]["z"] = 1
    # the block read db's own keys, which changed under it: serializable means it fails
    assert db._run() == {"x": 1, "box": {}, "y": "later"}


def test_blocks_touching_different_data_both_commit(backend):
    first, second = backend.connect(), backend.connect()
    first["a"] = {"n": 0}
    first["b"] = {"n": 0}
    block = first.transaction()
    t1 = block.__enter__()
    t1["a"]["n"] = t1["a"]["n"]._run() + 1
    with second.transaction() as t2:
        t2["b"]["n"] = t2["b"]["n"]._run() + 1
    block.__exit__(None, None, None)
    assert first._run() == {"a": {"n": 1}, "b": {"n": 1}}


def test_write_skew_is_prevented(backend):
    """Two blocks each check a rule over x and y, then change different keys."""
    first, second = backend.connect(), backend.connect()
    first["doctors"] = {"alice": "on call", "bob": "on call"}
    block_a = first.transaction()
    t1 = block_a.__enter__()
    with second.transaction() as t2:              # bob goes off call: alice still on
        assert list(t2["doctors"].values()).count("on call") == 2
        t2["doctors"]["bob"] = "off"
    assert list(t1["doctors"].values()).count("on call") == 2   # stale snapshot...
    t1["doctors"]["alice"] = "off"                # ...so alice thinks bob is still on
    with pytest.raises(zpydb.ConflictError):
        block_a.__exit__(None, None, None)
    assert first["doctors"]._run() == {"alice": "on call", "bob": "off"}


def test_a_read_registered_once_still_holds_after_the_block_writes_next_to_it(backend):
    """A block registers each object it reads once (Block.register); reading the
    same bucket again, after writing into it (ZODB then drops its own readCurrent
    for the bucket) and after a savepoint, still fails the commit when another
    client changed what the block read."""
    first, second = backend.connect(), backend.connect()
    first["d"] = {"a": 1, "b": 2}
    block = first.transaction()
    t1 = block.__enter__()
    assert t1["d"]["a"]._run() == 1               # registers d's bucket
    t1["d"]["b"] = 20                             # the same bucket, written
    block.block.tm.savepoint(optimistic=True)     # stores it: ZODB forgets the read
    assert t1["d"]["a"]._run() == 1               # registered already: skipped
    second["d"]["a"] = 100                        # what the block read changes
    with pytest.raises(zpydb.ConflictError):
        block.__exit__(None, None, None)
    assert first["d"]._run() == {"a": 100, "b": 2}


def test_conflicting_blocks_raise_and_change_nothing(backend):
    first, second = backend.connect(), backend.connect()
    first["n"] = 0
    block = first.transaction()
    t1 = block.__enter__()
    t1["n"] = t1["n"]._run() + 10
    second["n"] = 5
    with pytest.raises(zpydb.ConflictError) as info:
        block.__exit__(None, None, None)
    assert "nothing was applied" in str(info.value)
    assert first["n"]._run() == 5


def test_atomic_retries_until_it_wins(backend):
    db, other = backend.connect(), backend.connect()
    db["n"] = 0
    calls = []

    @db.atomic
    def result(t):
        calls.append(1)
        value = t["n"]._run()
        if len(calls) == 1:
            other["n"] = 100                      # interfere once
        t["n"] = value + 1
        return value + 1
    assert result == 101 and len(calls) == 2
    assert db["n"]._run() == 101


def test_atomic_gives_up_after_bounded_tries(backend):
    db, other = backend.connect(), backend.connect()
    db["n"] = 0

    def always_interfered(t):
        t["n"] = t["n"]._run() + 1
        other["n"] += 1
    with pytest.raises(zpydb.ConflictError):
        db.atomic(always_interfered, tries=3)
    assert db["n"]._run() == 3                    # only the interfering writes landed


def test_lock_and_unlock_group_statements(backend):
    db, other = backend.connect(), backend.connect()
    db["locks"] = {}
    before = transaction_count(db)
    db.lock()
    db["locks"][("l", 4)] = True                  # pyzdb's partial-lock pattern
    db["x"] = 1
    assert "x" not in other                       # not visible until unlock()
    other["y"] = 2                                # other clients are never blocked
    db.unlock()
    assert db._run() == {"locks": {("l", 4): True}, "x": 1, "y": 2}
    assert transaction_count(db) == before + 2


def test_unlock_raises_on_conflict(backend):
    db, other = backend.connect(), backend.connect()
    db["n"] = 1
    db.lock()
    db["n"] = db["n"]._run() + 1
    other["n"] = 50
    with pytest.raises(zpydb.ConflictError):
        db.unlock()
    assert db["n"]._run() == 50
    with pytest.raises(zpydb.Error):
        db.unlock()                               # the lock is gone after a failure too


def test_many_clients_lose_no_increment_through_atomic(backend, tmp_path):
    db = backend.connect()
    db["counter"] = 0
    run_clients(backend, tmp_path, "atomic_incr", clients=4, count=25)
    assert db["counter"]._run() == 100


def test_many_clients_augmented_assignment_loses_nothing(backend, tmp_path):
    db = backend.connect()
    db["n"] = 0
    run_clients(backend, tmp_path, "increment", clients=4, count=25)
    assert db["n"]._run() == 100


def test_concurrent_appends_lose_no_element(backend, tmp_path):
    db = backend.connect()
    db["items"] = []
    run_clients(backend, tmp_path, "append", clients=4, count=25)
    items = db["items"]._run()
    assert sorted(items) == sorted(workers.tag(w, i) for w in range(4) for i in range(25))


def test_concurrent_writes_to_different_keys_all_succeed(backend, tmp_path):
    db = backend.connect()
    db["shared"] = {}
    run_clients(backend, tmp_path, "distinct_keys", clients=4, count=25)
    assert len(db["shared"]) == 100


def test_bank_transfers_keep_the_total(backend, tmp_path):
    """4 clients x 15 db.atomic transfers between 10 accounts: every transfer succeeds
    (retries bounded by time, not by a count that a busy machine runs out of), every
    snapshot read sees the total, and each account ends at its start plus the transfers
    that reported success."""
    db = backend.connect()
    initial = {f"acct{i}": 100 for i in range(10)}
    db["accounts"] = initial
    reports = run_clients(backend, tmp_path, "bank", clients=4, count=15, total=1000)
    balances = db["accounts"]._run()
    assert sum(balances.values()) == 1000 and min(balances.values()) >= 0, balances
    assert balances == {name: 100 + sum(r["net"][name] for r in reports) for name in initial}
    assert sum(r["bad_total_count"] for r in reports) == 0, [r["bad_totals"] for r in reports]
    assert sum(r["moved"] for r in reports) > 0


def test_closing_with_an_open_lock_applies_nothing(backend):
    db = backend.connect()
    db["x"] = 1
    db.lock()
    db["x"] = 2
    db.close()
    with backend.connect() as again:
        assert again["x"]._run() == 1


def _records_in_memory():
    """Stored dicts (OOBTrees) alive with their state in memory, not ghosts."""
    import gc
    from BTrees.OOBTree import OOBTree
    return sum(1 for obj in gc.get_objects()
               if type(obj) is OOBTree and obj._p_changed is not None)


def _in_memory_after_block(fdb, count, tag):
    """How many records are in memory (not ghosts) after a block wrote ``count``
    records of ~2 KB, just before it commits."""
    handle = fdb.transaction()
    t = handle.__enter__()
    try:
        for n in range(count):
            t[f"{tag}{n:06d}"] = {"n": n, "text": f"{n:02000d}"}
        return _records_in_memory()
    finally:
        handle.__exit__(None, None, None)


def test_a_long_block_holds_a_bounded_number_of_written_records(fdb, monkeypatch):
    """Past SAVEPOINT_EVERY writes a block takes a savepoint, and the records it saved
    leave memory (ZODB's cache ghosts them down to its size): a block of 6,000 writes
    holds about as many objects as one of 2,000.  The attack, the same blocks without
    savepoints: every record written stays in memory until the commit."""
    from zpydb import transactions
    fdb._session.db.setCacheSize(500)
    monkeypatch.setattr(transactions, "SAVEPOINT_EVERY", 1000)
    short, long = _in_memory_after_block(fdb, 2000, "a"), _in_memory_after_block(fdb, 6000, "b")
    assert len(fdb) == 8000 and fdb["b005999"]["n"].value() == 5999
    assert long < short + 500 < 2 * 1000 + 1000, (short, long)
    monkeypatch.setattr(transactions, "SAVEPOINT_EVERY", 10**9)
    short_all, long_all = (_in_memory_after_block(fdb, 2000, "c"),
                           _in_memory_after_block(fdb, 6000, "d"))
    assert long_all >= 6000 and long_all - short_all >= 4000, (short_all, long_all)

