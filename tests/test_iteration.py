"""Iteration reads a snapshot in batches (ops.read_batch, transactions.py ``iterate``).

``for x in db['l']``, ``db['d'].keys()/values()/items()`` read ``ops.BATCH_SIZE``
items per read, every batch from the snapshot of the first (a historical
connection at its transaction id), so memory stays bounded and concurrent
writers never make an iteration skip or repeat items.  ``reversed()`` of a
list, a dict or a view does the same from the end.
"""

import gc
import threading
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zpydb
from zpydb import ops
from zpydb.paths import Listing


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(ops, "BATCH_SIZE", 7)
    return 7


def historical_in_use(db):
    """Historical connections of ``db`` that are open (checked out of the pool)."""
    pool = db._session.db.historical_pool
    return sum(len(p.all) - len(p.available) for p in pool.pools.values())


@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 14, 15, 1024, 1025, 1500])
def test_lists_dicts_and_views_equal_plain_python(db, small_batches, size):
    items = [[i, "x"] if i % 5 == 0 else i for i in range(size)]
    mapping = {f"k{i:05d}": items[i] for i in range(size)}
    db["l"] = items
    db["d"] = mapping
    assert list(db["l"]) == items
    assert list(db["d"]) == list(mapping)
    assert list(db["d"].keys()) == list(mapping.keys())
    assert list(db["d"].values()) == list(mapping.values())
    assert list(db["d"].items()) == list(mapping.items())
    assert len(db["d"].keys()) == size and len(db["d"].items()) == size
    assert db["d"].keys() == list(mapping) and sorted(db["d"].values(), key=repr) == \
        sorted(mapping.values(), key=repr)
    assert list(reversed(db["l"])) == items[::-1]
    assert list(reversed(db["d"])) == list(reversed(mapping))
    assert list(reversed(db["d"].keys())) == list(reversed(mapping.keys()))
    assert list(reversed(db["d"].values())) == list(reversed(mapping.values()))
    assert list(reversed(db["d"].items())) == list(reversed(mapping.items()))
    assert historical_in_use(db) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.one_of(st.integers(), st.text(max_size=3),
                                st.lists(st.integers(), max_size=3)), max_size=60),
       batch=st.integers(1, 9))
def test_any_list_and_dict_iterates_as_python_does(fdb, monkeypatch, items, batch):
    monkeypatch.setattr(ops, "BATCH_SIZE", batch)
    mapping = {i * 3: v for i, v in enumerate(items)}
    fdb["l"] = items
    fdb["d"] = mapping
    fdb["nested"] = {"in": items}
    assert list(fdb["l"]) == items
    assert list(fdb["nested"]["in"]) == items
    assert list(fdb["d"].items()) == sorted(mapping.items())
    assert list(fdb["d"].values()) == [mapping[k] for k in sorted(mapping)]
    assert list(reversed(fdb["l"])) == items[::-1]
    assert list(reversed(fdb["nested"]["in"])) == list(reversed(items))
    assert list(reversed(fdb["d"])) == sorted(mapping, reverse=True)
    assert list(reversed(fdb["d"].items())) == sorted(mapping.items(), reverse=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.sets(st.integers(-10**6, 10**6), min_size=25, max_size=400),
       gone=st.data(), batch=st.integers(1, 40))
def test_reversed_dicts_of_several_buckets_as_python_does(fdb, monkeypatch, keys, gone, batch):
    """Backwards through a tree of many buckets, some emptied and removed by deletes."""
    monkeypatch.setattr(ops, "BATCH_SIZE", batch)
    mapping = {k: str(k) for k in keys}
    fdb["d"] = mapping
    for key in gone.draw(st.lists(st.sampled_from(sorted(keys)), max_size=len(keys), unique=True)):
        del fdb["d"][key]
        del mapping[key]
    want = dict(sorted(mapping.items()))
    assert list(reversed(fdb["d"])) == list(reversed(want))
    assert list(reversed(fdb["d"].items())) == list(reversed(want.items()))
    assert list(reversed(fdb["d"].values())) == list(reversed(want.values()))


def test_biglist_iterates_from_any_chunk_boundary(db, monkeypatch):
    items = list(range(3000))  # a BigList of 512-item chunks
    db["big"] = items
    for batch in (1, 511, 512, 513, 1000, 5000):
        monkeypatch.setattr(ops, "BATCH_SIZE", batch)
        if batch == 1:
            assert list(db["big"])[:1100] == items[:1100]
        else:
            assert list(db["big"]) == items


def test_biglist_iterates_backwards_from_any_chunk_boundary(db, monkeypatch):
    items = list(range(3000))
    db["big"] = items
    for batch in (1, 511, 512, 513, 1000, 5000):
        monkeypatch.setattr(ops, "BATCH_SIZE", batch)
        if batch == 1:
            it = reversed(db["big"])
            assert [next(it) for _ in range(1100)] == items[::-1][:1100]
        else:
            assert list(reversed(db["big"])) == items[::-1]


def test_strings_tuples_and_errors(db):
    db["s"], db["t"], db["n"], db["l"] = "abc", (1, 2), 5, [1]
    assert list(db["s"]) == ["a", "b", "c"] and list(db["t"]) == [1, 2]
    assert list(reversed(db["s"])) == ["c", "b", "a"] and list(reversed(db["t"])) == [2, 1]
    with pytest.raises(zpydb.NotAContainerError):
        iter(db["n"])
    with pytest.raises(zpydb.NotAContainerError):
        reversed(db["n"])
    with pytest.raises(TypeError):  # as reversed(5) is
        reversed(db["n"])
    with pytest.raises(zpydb.KeyNotFoundError):
        iter(db["missing"])  # the first batch is read by iter(): errors come now
    with pytest.raises(zpydb.KeyNotFoundError):
        reversed(db["missing"])
    with pytest.raises(zpydb.NotAContainerError, match="no method keys"):
        db["l"].keys()  # the view reads its first batch at once: errors come now
    with pytest.raises(zpydb.KeyNotFoundError):
        db["missing"].items()
    db["d2"] = {}
    assert isinstance(db["d2"].keys(), Listing)


def test_views_behave_like_the_lists_they_were(db):
    db["d"] = {"a": 1, "b": [2]}
    keys, values, items = db["d"].keys(), db["d"].values(), db["d"].items()
    assert keys == ["a", "b"] and keys != ["a"] and keys[0] == "a" and keys[-1:] == ["b"]
    assert "a" in keys and "z" not in keys and [2] in values and ("a", 1) in items
    assert repr(keys) == "['a', 'b']" and bool(keys) and keys + ["c"] == ["a", "b", "c"]
    assert dict(items) == {"a": 1, "b": [2]} and sorted(keys, reverse=True) == ["b", "a"]
    db["e"] = {}
    assert not db["e"].keys() and list(db["e"].items()) == []


def run_writer(backend, stop, started):
    other = backend.connect()
    try:
        n = 0
        while not stop.is_set():
            other["l"].append(-1)
            del other["l"][0]
            other["d"][f"new{n:06d}"] = n
            del other["d"][f"k{n:06d}"]
            n += 1
            started.set()
    finally:
        other.close()


def test_a_concurrent_writer_never_makes_iteration_skip_or_repeat(backend, small_batches):
    db = backend.connect()
    db["l"] = list(range(3000))
    db["d"] = {f"k{i:06d}": i for i in range(600)}
    list_snapshot, dict_snapshot = db["l"].value(), db["d"].value()
    stop, started = threading.Event(), threading.Event()
    writer = threading.Thread(target=run_writer, args=(backend, stop, started))
    writer.start()
    try:
        assert started.wait(30)
        got_list, got_items = [], []
        list_it, dict_it = iter(db["l"]), iter(db["d"].items())
        before_list, before_dict = next(list_it), next(dict_it)
        for x in list_it:  # 7 items per read: hundreds of reads while the writer writes
            got_list.append(x)
        for pair in dict_it:
            got_items.append(pair)
        changed = db["l"].value() != list(range(3000))
    finally:
        stop.set()
        writer.join(30)
    assert changed  # the writer did change the list while we read it
    got_list.insert(0, before_list)
    got_items.insert(0, before_dict)
    # each iteration is ONE snapshot: a state the list (dict) had at some moment,
    # after some k appends and k or k-1 deletes of the first item (key)
    first = got_list[0]
    assert got_list in (list(range(first, 3000)) + [-1] * first,
                        list(range(first, 3000)) + [-1] * (first + 1)), \
        "the list iteration skipped, repeated or mixed items of two states"
    keys = [k for k, _ in got_items]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    old = [int(k[1:]) for k in keys if k.startswith("k")]
    new = [int(k[3:]) for k in keys if k.startswith("new")]
    assert new == list(range(len(new))) and old and \
        old == list(range(old[0], 600)) and old[0] in (len(new), len(new) - 1), \
        "the dict iteration skipped, repeated or mixed items of two states"
    assert all(v == int(k[3:] if k.startswith("new") else k[1:]) for k, v in got_items)
    assert list_snapshot and dict_snapshot
    assert historical_in_use(db) == 0


def test_a_concurrent_writer_never_makes_reversed_iteration_skip_or_repeat(backend,
                                                                          small_batches):
    db = backend.connect()
    db["l"] = list(range(3000))
    db["d"] = {f"k{i:06d}": i for i in range(600)}
    stop, started = threading.Event(), threading.Event()
    writer = threading.Thread(target=run_writer, args=(backend, stop, started))
    writer.start()
    try:
        assert started.wait(30)
        got_list = list(reversed(db["l"]))  # 7 items per read while the writer writes
        got_keys = list(reversed(db["d"]))
        changed = db["l"].value() != list(range(3000))
    finally:
        stop.set()
        writer.join(30)
    assert changed
    got_list.reverse()
    first = got_list[0]  # ONE state: k appends of -1 and k or k-1 deletes of the first item
    assert got_list in (list(range(first, 3000)) + [-1] * first,
                        list(range(first, 3000)) + [-1] * (first + 1)), \
        "the reversed list iteration skipped, repeated or mixed items of two states"
    assert got_keys == sorted(got_keys, reverse=True) and len(got_keys) == len(set(got_keys))
    old = sorted(int(k[1:]) for k in got_keys if k.startswith("k"))
    new = sorted(int(k[3:]) for k in got_keys if k.startswith("new"))
    assert new == list(range(len(new))) and old == list(range(old[0], 600)) and \
        old[0] in (len(new), len(new) - 1), \
        "the reversed dict iteration skipped, repeated or mixed items of two states"
    assert historical_in_use(db) == 0


def test_an_early_break_leaves_no_historical_connection_open(db, small_batches):
    db["l"] = list(range(100))
    for x in db["l"]:
        if x == 30:  # several batches in: later ones came from a historical connection
            assert historical_in_use(db) == 0  # none is held between batches
            break
    gc.collect()
    assert historical_in_use(db) == 0
    pool = db._session.db.historical_pool
    assert sum(len(p.all) for p in pool.pools.values()) <= pool.size


def test_iteration_inside_a_block_reads_the_blocks_snapshot(backend, small_batches):
    db, other = backend.connect(), backend.connect()
    db["d"] = {f"k{i:03d}": i for i in range(50)}
    with pytest.raises(zpydb.ConflictError):
        with db.transaction() as t:
            it = iter(t["d"].items())
            seen = [next(it) for _ in range(10)]
            other["d"]["k045"] = "changed"  # after the block's snapshot
            seen += list(it)
            assert dict(seen)["k045"] == 45  # the block's snapshot
            assert historical_in_use(db) == 0
            t["total"] = sum(v for _, v in seen)  # a decision on what was read
    # the block read the bucket that changed: its commit failed (serializable)
    assert "total" not in db


def test_reversed_inside_a_block_reads_the_blocks_snapshot(backend, small_batches):
    db, other = backend.connect(), backend.connect()
    db["l"] = list(range(40))
    with pytest.raises(zpydb.ConflictError):
        with db.transaction() as t:
            it = reversed(t["l"])
            seen = [next(it) for _ in range(10)]
            other["l"][3] = "changed"  # after the block's snapshot
            seen += list(it)
            assert seen == list(range(39, -1, -1))
            assert historical_in_use(db) == 0
            t["total"] = sum(seen)
    assert "total" not in db


def test_closing_the_database_mid_iteration_is_a_clear_error(backend, small_batches):
    db = backend.connect()
    db["l"] = list(range(100))
    it = iter(db["l"])
    assert [next(it) for _ in range(10)] == list(range(10))
    db.close()
    if backend.name == "postgres":   # no snapshot id from RelStorage: read in one batch,
        assert list(it) == list(range(10, 100))     # so the rest is already in memory
        return
    with pytest.raises(zpydb.Error, match="is closed"):
        list(it)


def test_a_block_that_ended_mid_iteration_is_a_clear_error(db, small_batches):
    db["l"] = list(range(100))
    with db.transaction() as t:
        it = iter(t["l"])
        next(it)
    with pytest.raises(zpydb.Error, match="already ended"):
        list(it)


def peak_memory(func):
    gc.collect()
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_iteration_memory_is_bounded(fdb):
    n = 200_000
    fdb["l"] = list(range(n))
    fdb["d"] = {f"key{i:07d}": i for i in range(n)}
    session = fdb._session

    def fresh_cache():  # every measurement starts from an empty object cache
        for conn in session.db.pool:
            conn.cacheMinimize()

    def iterate_list():
        total = 0
        for x in fdb["l"]:
            total += x
        assert total == n * (n - 1) // 2

    def copy_list():
        assert sum(fdb["l"].value()) == n * (n - 1) // 2

    def iterate_dict():
        assert sum(1 for _ in fdb["d"].items()) == n

    def copy_dict():
        assert len(fdb["d"].value()) == n

    def reverse_list():
        it = reversed(fdb["l"])
        assert next(it) == n - 1 and sum(it) == (n - 1) * (n - 2) // 2

    def reverse_dict():
        it = reversed(fdb["d"].items())
        assert next(it) == (f"key{n - 1:07d}", n - 1) and sum(1 for _ in it) == n - 1

    figures = {}
    for name, func in [("list iteration", iterate_list), ("list copy", copy_list),
                       ("dict iteration", iterate_dict), ("dict copy", copy_dict),
                       ("list reversed", reverse_list), ("dict reversed", reverse_dict)]:
        fresh_cache()
        figures[name] = peak_memory(func)
    print({k: f"{v / 1e6:.1f} MB" for k, v in figures.items()})
    assert figures["list iteration"] * 5 < figures["list copy"], figures
    assert figures["dict iteration"] * 5 < figures["dict copy"], figures
    assert figures["list reversed"] * 5 < figures["list copy"], figures
    assert figures["dict reversed"] * 5 < figures["dict copy"], figures
