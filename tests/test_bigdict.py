"""BigDict: ``len()`` of a dict past one bucket reads one record, and stays right.

* Every write path that adds or removes keys keeps the count: hypothesis runs
  random statement sequences against a plain dict, on dicts above the bucket
  threshold, at every kind of place (a key of db, db itself, a dict in a list,
  a dict in a dict), inside and outside transaction blocks; and the stored
  count equals the tree's real size afterwards (:func:`check_stored_counts`).
* The switch to a BigDict is race-free: a write that splits a one-bucket tree
  (or first writes into a big format-1 tree) conflicts with every concurrent
  write into the unwrapped tree (raw ZODB connections running ops.py, as an
  autocommit statement does, without read tracking).
* Concurrent inserts and deletes of different keys never conflict for good:
  writer processes over ZEO and PostgreSQL (threads on a FileStorage), every
  statement succeeds and the final len is right.
* Undo and redo keep the count (undo resolves conflicts on the Length record
  the way concurrent commits do: FileStorage and ZEO; RelStorage refuses an
  undo of an older change that later ones touched, and changes nothing).
"""

import io
import json

import pytest
import transaction
from BTrees.OOBTree import OOBTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ZODB.POSException import ConflictError as ZODBConflictError
from ZODB.POSException import UndoError as ZODBUndoError

import zpydb
from tests import workers
from tests.conftest import BACKENDS
from tests.helpers import check_stored_counts
from tests.load import cpu_hog, worker_pool  # noqa: F401  (module-scoped fixtures)
from zpydb import export, ops
from zpydb.bigdict import BigDict, descending_items
from zpydb.copy import copy_database
from zpydb.session import DATA_KEY, data_root

#: Keys a one-bucket OOBTree holds before it splits (BTrees' max_leaf_size for OO).
BUCKET = OOBTree.max_leaf_size


# -- helpers ---------------------------------------------------------------------

def raw(db):
    """A raw ZODB connection of ``db``'s database with its own transaction manager."""
    tm = transaction.TransactionManager()
    conn = db._session.db.open(transaction_manager=tm)
    tm.begin()
    return tm, conn


def stored(db, *steps):
    """The type and size of the stored node at ``steps`` (a fresh raw read)."""
    tm, conn = raw(db)
    try:
        node = data_root(conn)
        for step in steps:
            node = node[step]
        return type(node), len(node)
    finally:
        tm.abort()
        conn.close()


def path_of(db, steps):
    node = db
    for step in steps:
        node = node[step]
    return node


# -- the shape ---------------------------------------------------------------------

def test_one_bucket_stays_a_plain_tree_and_a_split_makes_a_bigdict(fdb):
    fdb["d"] = {i: i for i in range(BUCKET)}
    assert stored(fdb, "d") == (OOBTree, BUCKET)              # one record, as before
    fdb["d"][BUCKET] = BUCKET                                  # the split wraps it
    assert stored(fdb, "d") == (BigDict, BUCKET + 1)
    fdb["e"] = {i: i for i in range(BUCKET + 1)}               # made big: a BigDict at once
    fdb["rows"] = [{"a": 1}, {i: i for i in range(100)}]
    assert stored(fdb, "e") == (BigDict, BUCKET + 1)
    assert stored(fdb, "rows", 0)[0] is OOBTree and stored(fdb, "rows", 1) == (BigDict, 100)
    for key in range(BUCKET + 1):                              # shrinking keeps the count
        del fdb["d"][key]
    assert stored(fdb, "d") == (BigDict, 0) and fdb["d"].value() == {} and len(fdb["d"]) == 0
    assert stored(fdb) == (OOBTree, 3)                    # db's own keys: a dict like any other
    fdb.update({f"top{i}": i for i in range(BUCKET)})
    assert stored(fdb) == (BigDict, BUCKET + 3) and len(fdb) == BUCKET + 3
    assert check_stored_counts(fdb) == 4


def test_descending_items_walks_any_tree_backwards():
    for size in (0, 1, BUCKET, BUCKET + 1, 1000, 20000):
        tree = OOBTree({k * 2: k for k in range(size)})
        for key in range(0, size * 2, 14):  # every 7th: some buckets emptied and dropped
            del tree[key]
        want = sorted(tree.items(), reverse=True)
        assert list(descending_items(tree)) == want
        for before in (-1, 0, 1, 3, size, size * 2 - 1, size * 2, size * 3):
            assert list(descending_items(BigDict(tree), before)) == [p for p in want
                                                                     if p[0] < before]


# -- every write path keeps the count (hypothesis) -------------------------------------

KEYS = st.integers(0, 400)
STATEMENTS = st.one_of(
    st.tuples(st.just("set"), KEYS),
    st.tuples(st.just("del"), KEYS),
    st.tuples(st.just("pop"), KEYS, st.booleans()),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("update"), st.lists(KEYS, max_size=40)),
    st.tuples(st.just("setdefault"), KEYS),
    st.tuples(st.just("clear")),
    st.tuples(st.just("replace"), st.integers(0, 200)),
    st.tuples(st.just("block"), st.lists(st.tuples(st.sampled_from(["set", "del"]), KEYS),
                                         max_size=40)),
)


def apply(target, model, statement, db):
    """Run ``statement`` on the path ``target`` and on the plain dict ``model``:
    both succeed the same way or both refuse (KeyError)."""
    kind, *args = statement
    try:
        if kind == "set":
            model[args[0]] = ("v", args[0])
        elif kind == "del":
            del model[args[0]]
        elif kind == "pop":
            want = model.pop(args[0], "gone") if args[1] else model.pop(args[0])
        elif kind == "popitem":
            if not model:
                raise KeyError("empty")
            want = (max(model), model.pop(max(model)))
        elif kind == "update":
            model.update({k: k for k in args[0]})
        elif kind == "setdefault":
            want = model.setdefault(args[0], [args[0]])
        elif kind == "clear":
            model.clear()
    except KeyError:
        with pytest.raises(zpydb.KeyNotFoundError):
            run_on_path(target, kind, args)
        return model
    if kind == "block":
        with db.transaction() as t:
            inner = path_of(t, target._steps)
            for sub, key in args[0]:
                if sub == "set":
                    inner[key] = key
                    model[key] = key
                elif key in model:
                    del inner[key]
                    del model[key]
        return model
    got = run_on_path(target, kind, args)
    if kind in ("pop", "popitem", "setdefault"):
        assert got == want
    return model


def run_on_path(target, kind, args):
    if kind == "set":
        target[args[0]] = ("v", args[0])
    elif kind == "del":
        del target[args[0]]
    elif kind == "pop":
        return target.pop(args[0], "gone") if args[1] else target.pop(args[0])
    elif kind == "popitem":
        return target.popitem()
    elif kind == "update":
        target.update({k: k for k in args[0]})
    elif kind == "setdefault":
        return target.setdefault(args[0], [args[0]])
    elif kind == "clear":
        target.clear()
    return None


#: Where the dict under test lives: a key of db, db itself, a dict in a list, in a dict.
PLACES = {"key": ("d",), "root": (), "in a list": ("rows", 1), "in a dict": ("outer", "inner")}


@pytest.mark.parametrize("place", list(PLACES))
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(BUCKET - 3, 300), statements=st.lists(STATEMENTS, max_size=25))
def test_len_equals_the_plain_dicts_after_any_statements(fdb, place, size, statements):
    steps = PLACES[place]
    model = {k: k for k in range(size)}
    if place == "root":
        fdb.clear()
        fdb.update(model)
    elif place == "key":
        fdb["d"] = model
    elif place == "in a list":
        fdb["rows"] = [{"a": 1}, model, {"z": 2}]
    else:
        fdb["outer"] = {"x": 1, "inner": model}
    target = path_of(fdb, steps)
    for statement in statements:
        if statement[0] == "replace":
            model = {k: k for k in range(statement[1])}
            if steps:
                path_of(fdb, steps[:-1])[steps[-1]] = model
            else:
                fdb.clear()
                fdb.update(model)
        else:
            model = apply(target, model, statement, fdb)
        assert len(target) == len(model), statement
        assert bool(target) == bool(model)
    assert target.value() == model
    assert list(reversed(target)) == sorted(model, reverse=True)
    check_stored_counts(fdb)


def test_import_copy_and_path_copies_keep_the_count(file_backend, tmp_path):
    db = file_backend.connect()
    db.update({f"t{i:03d}": i for i in range(100)})
    document = {f"t{i:03d}": "imported" for i in range(50, 150)}  # 50 replaced, 50 new
    export.import_json(db, io.StringIO(json.dumps(document)), progress=False)
    assert len(db) == 150
    export.import_json(db, io.StringIO(json.dumps({str(i): i for i in range(500)})),
                       steps=("imported",), progress=False)
    assert len(db["imported"]) == 500 and stored(db, "imported") == (BigDict, 500)
    db["copy"] = db["imported"]                             # a path copied in one statement
    db["copy"]["new"] = 1
    assert len(db["copy"]) == 501 and len(db["imported"]) == 500
    assert len(db) == 152
    check_stored_counts(db)
    db.close()
    target = str(tmp_path / "copy" / "Data.fs")
    copy_database(file_backend.url, target, progress=False)  # records copied as they are
    copied = zpydb.connect(target)
    try:
        assert len(copied) == 152 and len(copied["copy"]) == 501
        del copied["copy"]["new"]
        copied["t999"] = 1
        assert len(copied["copy"]) == 500 and len(copied) == 153
        assert check_stored_counts(copied) == 3
    finally:
        copied.close()


# -- blocks register the count, not the items ----------------------------------------

def test_len_in_a_block_registers_the_count_only(backend):
    db, other = backend.connect(), backend.connect()
    db["d"] = {i: i for i in range(5000)}
    with db.transaction() as t:
        assert len(t["d"]) == 5000 and t["d"]
        assert len(t._executor.read_set) <= 6       # path, BigDict, Length: not 170 buckets
    with pytest.raises(zpydb.ConflictError):       # ... and a decision on it is serializable
        with db.transaction() as t:
            n = len(t["d"])
            other["d"][-1] = "inserted meanwhile"
            t["count"] = n
    assert "count" not in db
    with db.transaction() as t:                    # a blind insert merges with another one
        t["d"][10_000] = "mine"
        other["d"][-2] = "theirs"
    assert len(db["d"]) == 5003 and db["d"][10_000] == "mine"
    check_stored_counts(db)


# -- the switch to a BigDict is race-free ----------------------------------------------

def concurrently(db, first, second):
    """Run ``first`` and ``second`` (functions of a data root) on two raw connections
    that both began before either commits; commit ``first``, then ``second``."""
    (tm1, conn1), (tm2, conn2) = raw(db), raw(db)
    try:
        first(data_root(conn1))
        second(data_root(conn2))
        tm1.commit()
        tm2.commit()
    finally:
        tm1.abort()
        tm2.abort()
        conn1.close()
        conn2.close()


@pytest.mark.parametrize("order", ["split first", "insert first"])
def test_a_split_conflicts_with_a_concurrent_insert_into_the_small_tree(backend, order):
    db = backend.connect()
    db["d"] = {f"k{i:02d}": i for i in range(BUCKET - 1)}

    def split(root):  # two new keys: BUCKET + 1, the tree splits and is wrapped
        ops.set_item(root, ("d", "a1"), 1)
        ops.set_item(root, ("d", "a2"), 2)

    def insert(root):  # one new key: BUCKET, still one bucket
        ops.set_item(root, ("d", "z"), 3)

    with pytest.raises(ZODBConflictError):
        concurrently(db, *((split, insert) if order == "split first" else (insert, split)))
    want = BUCKET + 1 if order == "split first" else BUCKET
    assert len(db["d"]) == want and stored(db, "d")[1] == want
    db["d"]["retried"] = 1                          # what the retry of the loser does
    assert len(db["d"]) == want + 1 == len(db["d"].value())
    check_stored_counts(db)


def test_two_writers_of_a_big_format1_tree_conflict_on_the_wrap(backend):
    db = backend.connect()
    tm, conn = raw(db)
    conn.root()[DATA_KEY]["d"] = OOBTree({i: i for i in range(500)})  # as format 1 stored it
    tm.commit()
    conn.close()
    assert stored(db, "d") == (OOBTree, 500) and len(db["d"]) == 500

    with pytest.raises(ZODBConflictError):          # different keys, different buckets
        concurrently(db, lambda root: ops.set_item(root, ("d", 1000), 1),
                     lambda root: ops.del_item(root, ("d", 3)))
    assert stored(db, "d") == (BigDict, 501)
    del db["d"][3]                                  # the retry
    assert len(db["d"]) == 500 and sorted(db["d"].keys())[:4] == [0, 1, 2, 4]
    check_stored_counts(db)


def test_concurrent_inserts_into_a_bigdict_merge(backend):
    db = backend.connect()
    db["d"] = {i * 10: i for i in range(1000)}
    concurrently(db, lambda root: ops.set_item(root, ("d", 5), "a"),     # the same bucket
                 lambda root: ops.set_item(root, ("d", 15), "b"))
    concurrently(db, lambda root: ops.set_item(root, ("d", 1), "c"),     # far apart
                 lambda root: ops.del_item(root, ("d", 9990)))
    concurrently(db, lambda root: ops.call_writer(root, ("d",), "pop", [20], {}),
                 lambda root: ops.call_writer(root, ("d",), "setdefault", [-1, "d"], {}))
    assert len(db["d"]) == 1002 == len(db["d"].value())
    check_stored_counts(db)


def test_clear_and_a_concurrent_insert_keep_count_and_tree_together(backend):
    db = backend.connect()
    db["d"] = {i: i for i in range(300)}
    concurrently(db, lambda root: ops.call_writer(root, ("d",), "clear", [], {}),
                 lambda root: ops.set_item(root, ("d", 1000), "late"))
    assert len(db["d"]) == len(db["d"].value()) == 0   # the insert went before the clear
    check_stored_counts(db)


# -- undo and redo ---------------------------------------------------------------------

def test_undo_and_redo_keep_the_count(backend):
    db = backend.connect()
    db["d"] = {i: i for i in range(BUCKET)}                     # one bucket
    states = [db["d"].value()]
    for statement in (lambda: db["d"].__setitem__(1000, 1),  # wraps it
                      lambda: db["d"].__setitem__(5, "replaced"),
                      lambda: db["d"].__delitem__(7),
                      lambda: db["d"].update({100 + i: i for i in range(50)}),
                      lambda: db["d"].pop(8),
                      lambda: db["d"].clear(),
                      lambda: db["d"].setdefault(2000, 1)):
        statement()
        states.append(db["d"].value())
        assert len(db["d"]) == len(states[-1])
    for state in reversed(states[:-1]):
        db.undo()
        assert db["d"].value() == state and len(db["d"]) == len(state)
    assert stored(db, "d")[0] is OOBTree                          # the wrap was undone too
    for state in states[1:]:
        db.redo()
        assert db["d"].value() == state and len(db["d"]) == len(state)
    check_stored_counts(db)


def test_undo_of_an_older_insert_with_later_inserts(backend):
    """Raw ZODB undo of a transaction that later ones changed: FileStorage and ZEO
    resolve it (buckets merge, the Length adds -1); RelStorage refuses it whole."""
    db = backend.connect()
    db["d"] = {i * 10: i for i in range(1000)}
    db["d"][15] = "older"                                         # the one to undo
    older = db._session.db.undoLog(0, 1)[0]["id"]
    db["d"][25] = "later, same bucket"
    db["d"][99999] = "later, last bucket"
    del db["d"][500]
    zdb = db._session.db
    tm = transaction.TransactionManager()
    try:
        zdb.undo(older, tm.get())
        tm.commit()
    except ZODBUndoError as exc:
        tm.abort()
        assert backend.name == "postgres", exc
        assert "later transaction" in str(exc)
        assert len(db["d"]) == 1002 and db["d"][15] == "older"
        check_stored_counts(db)
        return
    assert backend.name != "postgres"
    assert 15 not in db["d"] and db["d"][25] == "later, same bucket"
    assert len(db["d"]) == 1001 == len(db["d"].value())
    undo_of_older = zdb.undoLog(0, 1)[0]["id"]                   # and redo it (undo the undo)
    tm = transaction.TransactionManager()
    zdb.undo(undo_of_older, tm.get())
    tm.commit()
    assert db["d"][15] == "older" and len(db["d"]) == 1002 == len(db["d"].value())
    check_stored_counts(db)


# -- concurrent writers (processes; threads on a FileStorage) ---------------------------

CHURN = {2: 150, 8: 30}


@pytest.mark.usefixtures("cpu_hog")
@pytest.mark.parametrize("writers", [2, 8])
@pytest.mark.parametrize("backend", [b for b in ("zeo", "postgres") if b in BACKENDS],
                         indirect=True)
def test_concurrent_inserts_and_deletes_of_one_big_dict(backend, worker_pool, writers):
    db = backend.connect()
    db["shared"] = {f"pre{i:04d}": i for i in range(500)}
    count = CHURN[writers]
    reports = worker_pool.run(backend.url, "churn", writers, count, key="shared")
    total = workers.summary(reports)
    assert total["failed"] == 0 and total["unfinished"] == 0, total
    expected = {f"pre{i:04d}": i for i in range(500)}
    expected.update(workers.churn_keys(reports))
    assert len(db["shared"]) == len(expected)
    assert db["shared"].value() == expected
    assert check_stored_counts(db) == 1  # "shared" (db itself holds one key)


def test_concurrent_inserts_and_deletes_of_one_big_dict_in_threads(fdb):
    fdb["shared"] = {f"pre{i:04d}": i for i in range(500)}
    reports = workers.run_threads(fdb, "churn", 4, 90, key="shared")
    total = workers.summary(reports)
    assert total["failed"] == 0 and total["unfinished"] == 0, total
    expected = {f"pre{i:04d}": i for i in range(500)}
    expected.update(workers.churn_keys(reports))
    assert len(fdb["shared"]) == len(expected) and fdb["shared"].value() == expected
    check_stored_counts(fdb)
