"""Transaction blocks are serializable, for dicts and lists of every size (issue 10, item 0).

docs/transactions.md promises that every object a block reads is checked at
commit with the serial it was read at: a block that decided on data another
client changed meanwhile fails with ConflictError (nothing applied) or, under
``db.atomic``, runs again on the new data; and a lone client never sees a
conflict.  Each promise is tried on every shape the data can take, because
each shape is stored differently:

* ``dict_one_bucket``  5 keys: one OOBTree record (the bucket is inline);
* ``dict_buckets``     300 keys: a BigDict, an OOBTree of several bucket records
  and a Length;
* ``dict_two_levels``  6,000 keys: a BigDict whose tree's root has child trees;
* ``root_buckets``     300 top-level keys: the database root (a BigDict) spans buckets;
* ``list_small``       10 items: one list record;
* ``biglist``          2,000 items: a BigList of 512-item chunk records;

over the embedded file, ZEO and PostgreSQL (the ``backend`` fixture).  The two
watched items are far apart, so in the large shapes they live in different
records, neither of them the first bucket or chunk (the tree's own record
points at its first bucket, which hid the bug for keys there).  Interleavings
are forced (a block is held open while another client commits), so no test
depends on timing; the two-process ``db.atomic`` test
uses a line protocol (tests/workers.py ``skew``) to make both blocks read
before either commits, with every core busy (tests/load.py).
"""

import os
import time

import pytest

import zpydb
from tests import workers
from tests.load import busy


class Shape:
    """How one shape is stored, and which two items a test watches."""

    def __init__(self, name, make, keys, at_root=False):
        self.name = name
        self.make = make            # -> the plain value (or the root mapping)
        self.keys = keys            # the two watched keys/indexes, far apart
        self.at_root = at_root

    def setup(self, db, name="s"):
        if self.at_root:
            db.update(self.make())
        else:
            db[name] = self.make()

    def parent(self, t, name="s"):
        """The container of the watched items (``t`` is a db or a block root)."""
        return t if self.at_root else t[name]

    def item(self, t, which, name="s"):
        return self.parent(t, name)[self.keys[which]]

    def set(self, t, which, value, name="s"):
        self.parent(t, name)[self.keys[which]] = value

    def __repr__(self):
        return self.name


def _dict(n):
    return lambda: {f"k{j:05d}": 1 for j in range(n)}


SHAPES = [
    Shape("dict_one_bucket", _dict(5), ("k00000", "k00004")),
    Shape("dict_buckets", _dict(300), ("k00100", "k00250")),
    Shape("dict_two_levels", _dict(6000), ("k01000", "k05000")),
    Shape("root_buckets", _dict(300), ("k00100", "k00250"), at_root=True),
    Shape("list_small", lambda: [1] * 10, (1, 8)),
    Shape("biglist", lambda: [1] * 2000, (600, 1800)),
]


@pytest.fixture(params=SHAPES, ids=repr)
def shape(request):
    return request.param


def _store_shape(db, shape):
    shape.setup(db)
    assert shape.item(db, 0)._run() == 1 and shape.item(db, 1)._run() == 1


# -- write skew ----------------------------------------------------------------------

def test_write_skew_fails_the_later_block(backend, shape):
    """Both blocks read both items; B sets item 0, A sets item 1: A must not commit."""
    first, second = backend.connect(), backend.connect()
    _store_shape(first, shape)
    block_a = first.transaction()
    t1 = block_a.__enter__()
    a_sees_both = shape.item(t1, 0)._run() == 1 and shape.item(t1, 1)._run() == 1
    with second.transaction() as t2:                       # B reads both, commits first
        assert shape.item(t2, 0)._run() == 1 and shape.item(t2, 1)._run() == 1
        shape.set(t2, 0, 0)
    assert a_sees_both                                     # A's snapshot: both still 1
    shape.set(t1, 1, 0)
    with pytest.raises(zpydb.ConflictError):
        block_a.__exit__(None, None, None)
    assert (shape.item(first, 0)._run(), shape.item(first, 1)._run()) == (0, 1)


def test_write_skew_atomic_runs_again_on_new_data(backend, shape):
    """Under db.atomic the losing block runs again, sees B's change, and changes nothing."""
    first, second = backend.connect(), backend.connect()
    _store_shape(first, shape)
    calls = []

    def decide(t):
        calls.append(1)
        both = shape.item(t, 0)._run() == 1 and shape.item(t, 1)._run() == 1
        if len(calls) == 1:                                # B commits in between, once
            with second.transaction() as t2:
                if shape.item(t2, 0)._run() == 1 and shape.item(t2, 1)._run() == 1:
                    shape.set(t2, 0, 0)
        if both:
            shape.set(t, 1, 0)
        return both
    decided = first.atomic(decide)
    assert len(calls) == 2, "the block that read stale data committed without a retry"
    assert decided is False
    assert (shape.item(first, 0)._run(), shape.item(first, 1)._run()) == (0, 1)


def test_write_skew_with_a_blind_autocommit_write(backend, shape):
    """An autocommit statement (no block) changes what the block read: the block fails."""
    first, second = backend.connect(), backend.connect()
    _store_shape(first, shape)
    with pytest.raises(zpydb.ConflictError):
        with first.transaction() as t:
            seen = shape.item(t, 0)._run()
            shape.set(second, 0, 7)                        # another client, autocommit
            shape.set(t, 1, seen + 100)
    assert (shape.item(first, 0)._run(), shape.item(first, 1)._run()) == (7, 1)


# -- lost update ---------------------------------------------------------------------

def test_lost_update_is_refused(backend, shape):
    """Read-modify-write of one item by two blocks: the later one must fail, not overwrite."""
    first, second = backend.connect(), backend.connect()
    _store_shape(first, shape)
    block_a = first.transaction()
    t1 = block_a.__enter__()
    value = shape.item(t1, 1)._run()
    with second.transaction() as t2:
        shape.set(t2, 1, shape.item(t2, 1)._run() + 1)
    shape.set(t1, 1, value + 1)
    with pytest.raises(zpydb.ConflictError):
        block_a.__exit__(None, None, None)
    assert shape.item(first, 1)._run() == 2


def test_read_of_one_item_guards_a_write_to_another(backend, shape):
    """A block copies item 0 into item 1; item 0 changes meanwhile: the copy must not land."""
    first, second = backend.connect(), backend.connect()
    _store_shape(first, shape)
    block_a = first.transaction()
    t1 = block_a.__enter__()
    source = shape.item(t1, 0)._run()
    shape.set(second, 0, 42)
    shape.set(t1, 1, source + 1)
    with pytest.raises(zpydb.ConflictError):
        block_a.__exit__(None, None, None)
    assert (shape.item(first, 0)._run(), shape.item(first, 1)._run()) == (42, 1)


def test_blocks_on_unrelated_data_both_commit(backend, shape):
    """Isolation must not turn into refusing everything: disjoint blocks both commit."""
    first, second = backend.connect(), backend.connect()
    _store_shape(first, shape)
    first["other"] = {"x": 0}
    block_a = first.transaction()
    t1 = block_a.__enter__()
    shape.set(t1, 1, shape.item(t1, 1)._run() + 1)
    with second.transaction() as t2:
        t2["other"]["x"] = t2["other"]["x"]._run() + 1
    block_a.__exit__(None, None, None)
    assert shape.item(first, 1)._run() == 2 and first["other"]["x"]._run() == 1


# -- no phantom conflicts ------------------------------------------------------------

@pytest.mark.parametrize("cache", [None, 40], ids=["cache_default", "cache_40"])
def test_a_lone_client_never_conflicts(backend, cache):
    """The issue's repro: autocommit writes, and every third iteration a block writing 8
    keys plus a read-modify-write on a large dict and a BigList; one client only."""
    options = {"connection_cache_size": cache} if cache else {}
    db = backend.connect(**options)
    db["big"] = {f"k{j:04d}": j for j in range(2000)}
    db["small"] = {}
    db["l"] = list(range(1500))
    conflicts = []
    for i in range(100):
        db["small"][f"s{i % 50}"] = i
        db["big"][f"k{(i * 37) % 2000:04d}"] = i
        db["l"].append(i)
        if i % 3:
            continue
        try:
            with db.transaction() as t:
                for j in range(8):
                    t["big"][f"k{(i * 13 + j * 101) % 2000:04d}"] = -i
                key = f"k{(i * 7) % 2000:04d}"
                t["big"][key] = t["big"][key]._run() + 1
                t["l"][i % 1500] = t["l"][-1]._run() + t["l"][0]._run()
                t["small"]["last"] = len(t["l"])
        except zpydb.ConflictError as exc:
            conflicts.append((i, str(exc)[:300]))
    assert not conflicts, f"{len(conflicts)} of 34 blocks conflicted with no other client: " \
                          f"{conflicts[:3]}"
    assert db["small"]["last"]._run() == 1500 + 100


def test_a_lone_client_atomic_never_retries(backend):
    """With nobody else writing, db.atomic runs each function exactly once."""
    db = backend.connect(connection_cache_size=40)
    db["big"] = {f"k{j:04d}": j for j in range(2000)}
    calls = []

    def bump(t, key):
        calls.append(key)
        t["big"][key] = t["big"][key]._run() + 1
        t["big"]["k0000"] = t["big"]["k0000"]._run() + 1
    for i in range(30):
        db["big"][f"k{(i * 53) % 2000:04d}"] = -1         # autocommit between the blocks
        db.atomic(lambda t: bump(t, f"k{(i * 67) % 2000:04d}"))
    assert len(calls) == 30, f"{len(calls) - 30} retries with no other client"


# -- two processes, db.atomic, every core busy -------------------------------------------

SHARED_BACKENDS = [b for b in ("zeo", "postgres")
                   if b in os.environ.get("ZPYDB_TEST_BACKENDS", "file,zeo,postgres").split(",")]
ROUNDS = 6
PROCESS_SHAPES = [s for s in SHAPES if s.name in ("dict_one_bucket", "dict_buckets", "biglist")]


@pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", PROCESS_SHAPES, ids=repr)
def test_write_skew_between_processes_under_load(backend, shape, tmp_path):
    """Two processes run the on-call rule with db.atomic, ROUNDS times; in every round
    both read before either commits.  Exactly one of the two may go off call."""
    db = backend.connect()
    for r in range(ROUNDS):
        db[f"skew{r}"] = shape.make()
    with busy():
        procs = workers.start_workers(backend.url, "skew", 2, ROUNDS, tmp_path,
                                      keys=list(shape.keys))
        try:
            deadline = time.monotonic() + workers.FINISH_TIMEOUT
            for proc in procs:
                proc.send("go")
            attempts = []
            for _ in range(ROUNDS):
                for proc in procs:
                    proc.send("round")
                for proc in procs:
                    proc.expect("read", deadline)
                for proc in procs:
                    proc.send("commit")
                attempts.append([int(proc.expect("done", deadline).split()[1]) for proc in procs])
            reports = [proc.report(deadline) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
    total = workers.summary(reports)
    assert total["failed"] == 0, total["errors"]
    broken = []
    for r in range(ROUNDS):
        values = (db[f"skew{r}"][shape.keys[0]]._run(), db[f"skew{r}"][shape.keys[1]]._run())
        if values != (0, 1) and values != (1, 0):
            broken.append((r, values, attempts[r]))
    assert not broken, f"the invariant broke in {len(broken)} of {ROUNDS} rounds: {broken}"
    # both read before either committed, so in every round the later one ran again
    assert all(max(a) >= 2 for a in attempts), attempts


# -- appends interleaved with the list's promotion to a BigList --------------------------

def test_an_append_interleaved_with_the_promotion_to_biglist_is_kept(backend):
    """The list holds 1,023 items.  Client B's autocommit append begins (1,024 in its
    view: no promotion); client A appends twice, the second append (the 1,025th item)
    turns the list into a BigList; then B commits.  B's append must be in the list (or
    B must fail and retry), never merged into the list record A replaced.

    B's statement is driven step by step the way session.write runs it (begin on its
    connection, ops.call_writer, commit), so the interleaving is exact.
    """
    from zpydb import ops
    from zpydb.session import data_root

    a, b = backend.connect(), backend.connect()
    a["l"] = list(range(1022))
    a["l"].append(1022)                                   # 1,023 items, appended to once
    tm, conn = b._session.connection()
    tm.begin()
    ops.call_writer(data_root(conn), ("l",), "append", ["from-b"], {})
    a["l"].append("a1")                                   # 1,024 items
    a["l"].append("a2")                                   # 1,025: promoted to a BigList
    try:
        tm.commit()
    except Exception:                                     # a conflict: B would retry
        tm.abort()
        b["l"].append("from-b")
    items = a["l"]._run()
    missing = [x for x in ("a1", "a2", "from-b") if x not in items]
    assert not missing, f"lost {missing}: {len(items)} items, tail {items[-3:]}"
    assert len(items) == 1026


# -- blocks that read a merging node (a counter, an appended-to list) ----------------------

def test_a_block_that_read_a_counter_does_not_merge_blindly(backend):
    """A block copies n and increments it; another client increments n meanwhile.
    Increments merge, but this block's copy was decided on the old n: it must fail."""
    first, second = backend.connect(), backend.connect()
    first["n"] = 0
    first["n"] += 1                                       # n is now an incremented number
    block = first.transaction()
    t = block.__enter__()
    seen = t["n"]._run()
    t["copy"] = seen
    t["n"] += 1
    second["n"] += 1
    with pytest.raises(zpydb.ConflictError):
        block.__exit__(None, None, None)
    assert first["n"]._run() == 2 and "copy" not in first


LIST_SIZES = pytest.mark.parametrize("size", [1, 1100], ids=["list", "biglist"])


@LIST_SIZES
def test_a_block_that_read_a_list_does_not_merge_its_append_blindly(backend, size):
    """A block appends the list's length to the list (a numbering scheme); another
    client appends meanwhile.  Appends merge, but the number was decided on the old
    length: the block must fail rather than store a duplicate number."""
    first, second = backend.connect(), backend.connect()
    first["l"] = list(range(size - 1))
    first["l"].append(size - 1)
    block = first.transaction()
    t = block.__enter__()
    t["l"].append(len(t["l"]))
    second["l"].append(size)
    with pytest.raises(zpydb.ConflictError):
        block.__exit__(None, None, None)
    assert first["l"]._run() == list(range(size + 1))


@LIST_SIZES
def test_atomic_numbering_under_concurrent_appends_has_no_duplicates(backend, size):
    """The same numbering with db.atomic: it runs again and numbers after the append."""
    first, second = backend.connect(), backend.connect()
    first["l"] = list(range(size))
    first["l"].append(size)
    calls = []

    def number(t):
        calls.append(1)
        n = len(t["l"])
        if len(calls) == 1:
            second["l"].append(n)                         # someone else takes number n
        t["l"].append(n)
    first.atomic(number)
    assert len(calls) == 2
    assert first["l"]._run() == list(range(size + 3))
