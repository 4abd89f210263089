"""Time travel (timetravel.py, pathhistory.py): db.at(when), path.history(n), diff(a, b).

The property: run random statements, record the plain tree after each (with the
transaction id db.history() gives it), then

* ``db.at(id)`` reads exactly the recorded tree, whole and path by path;
* ``path.history()`` lists exactly the recorded changes of that path;
* ``diff(a, b)`` applied with the ``jsonpatch`` library turns tree a into tree b.

On every backend (file, ZEO, PostgreSQL): the ``db`` fixture of conftest.py.
"""

import copy
import datetime
import time

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zpydb
from tests.helpers import transaction_count
from zpydb.export import encode
from zpydb.pathhistory import same

KEYS = ["a", "b", "d", "l"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text("xyz", max_size=2),
                    st.floats(-2, 2, width=16), st.binary(max_size=2))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from("pqr"), inner, max_size=3)),
    max_leaves=6)
#: Paths whose history the property checks (missing at times, or not containers).
PATHS = [("a",), ("b",), ("d",), ("l",), ("d", "p"), ("d", "q"), ("l", 0), ("l", 1),
         ("l", -1), ("d", "p", 0)]


def statement(data, db, model):
    """Draw one statement that is valid for ``model``; run it on ``db`` and ``model``."""
    key = data.draw(st.sampled_from(KEYS))
    current = model.get(key)
    choices = ["set", "set"]
    if key in model:
        choices.append("del")
    if isinstance(current, int) and not isinstance(current, bool):
        choices.append("add")
    if isinstance(current, list):
        choices += ["append", "insert"] + (["item", "pop"] if current else [])
    if isinstance(current, dict):
        choices += ["subkey"] + (["delsub"] if current else [])
    kind = data.draw(st.sampled_from(choices))
    if kind == "set":
        value = data.draw(VALUES)
        db[key] = value
        model[key] = copy.deepcopy(value)
    elif kind == "del":
        del db[key]
        del model[key]
    elif kind == "add":
        delta = data.draw(st.integers(-2, 2))
        db[key] += delta
        model[key] += delta
    elif kind == "append":
        value = data.draw(VALUES)
        db[key].append(value)
        current.append(copy.deepcopy(value))
    elif kind == "insert":
        index, value = data.draw(st.integers(-3, 3)), data.draw(VALUES)
        db[key].insert(index, value)
        current.insert(index, copy.deepcopy(value))
    elif kind == "item":
        index, value = data.draw(st.integers(0, len(current) - 1)), data.draw(VALUES)
        db[key][index] = value
        current[index] = copy.deepcopy(value)
    elif kind == "pop":
        db[key].pop()
        current.pop()
    elif kind == "subkey":
        sub, value = data.draw(st.sampled_from("pqr")), data.draw(VALUES)
        db[key][sub] = value
        current[sub] = copy.deepcopy(value)
    else:
        sub = data.draw(st.sampled_from(sorted(current)))
        del db[key][sub]
        del current[sub]


def value_at(tree, steps):
    """(exists, value) of ``steps`` in a plain tree, as zpydb reads it."""
    node = tree
    for step in steps:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, (list, str, bytes, tuple)) and isinstance(step, int) and \
                -len(node) <= step < len(node):  # zpydb reads into str, bytes, tuples too
            node = node[step]
        else:
            return False, None
    return True, node


def expected_changes(records, steps):
    """The changes of ``steps`` in the recorded (id, tree) pairs, newest first."""
    changes = []
    for (_, before), (tid, after) in zip(records, records[1:]):
        old, new = value_at(before, steps), value_at(after, steps)
        if old[0] != new[0] or (new[0] and not same(old[1], new[1])):
            changes.append({"id": tid, "value": new[1], "deleted": not new[0]})
    return changes[::-1]


def fresh_start(db):
    """Empty the database (one transaction) and return its (id, {}) record."""
    db["_"] = 0
    with db.transaction() as t:
        for key in list(db.keys()):
            del t[key]
    return (db.history(1)[0]["id"], {})


def examples(backend, fast, slow):
    return fast if backend.name == "file" else slow


@pytest.mark.timeout(900)
@settings(deadline=None, max_examples=25,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_the_past_reads_as_recorded(backend, db, data):
    records = [fresh_start(db)]
    model = {}
    count = data.draw(st.integers(1, examples(backend, 12, 7)))
    for _ in range(count):
        statement(data, db, model)
        tree = db.value()
        assert same(tree, model), (tree, model)
        records.append((db.history(1)[0]["id"], tree))
    for tid, tree in records:
        with db.at(tid) as old:
            assert same(old.value(), tree)
            for key in KEYS:
                exists, value = value_at(tree, (key,))
                assert (key in old) == exists
                if exists:
                    assert same(old[key].value(), value)
                    if isinstance(value, (list, dict)):
                        assert len(old[key]) == len(value)
                        assert same(list(old[key]), list(value))
    for steps in data.draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=4,
                                    unique=True)):
        expected = expected_changes(records, steps)
        path = db
        for step in steps:
            path = path[step]
        got = path.history(len(expected) + 1)
        assert [(c["id"], c["deleted"]) for c in got[:len(expected)]] == \
            [(c["id"], c["deleted"]) for c in expected], steps
        assert all(same(g["value"], e["value"]) for g, e in zip(got, expected)), steps
        assert all(c["id"] <= records[0][0] for c in got[len(expected):]), steps
    first, second = sorted(data.draw(st.lists(st.integers(0, len(records) - 1), min_size=2,
                                              max_size=2)))
    (a, tree_a), (b, tree_b) = records[first], records[second]
    for old, new, x, y in ((tree_a, tree_b, a, b), (tree_b, tree_a, b, a)):
        patch = db.diff(x, y)
        assert jsonpatch.apply_patch(encode(old), patch) == encode(new)
    assert jsonpatch.apply_patch(encode(tree_a), db.diff(a)) == encode(records[-1][1])


# -- when: ids, entries, datetimes, timestamps ------------------------------------------

def test_every_form_of_when(db):
    time.sleep(0.01)
    db["x"] = 1
    time.sleep(0.002)
    db["x"] = 2
    time.sleep(0.002)
    db["x"] = 3
    entries = db.history(3)[::-1]
    for entry, value in zip(entries, (1, 2, 3)):
        assert db.at(entry["id"])["x"] == value
        assert db.at(entry["id"].upper())["x"] == value
        assert db.at(entry)["x"] == value
        assert db.at(entry["time"])["x"] == value                    # naive: local time
        assert db.at(entry["time"].astimezone(datetime.timezone.utc))["x"] == value
        assert db.at(entry["time"].timestamp())["x"] == value
    before_all = entries[0]["time"] - datetime.timedelta(milliseconds=1)
    assert "x" not in db.at(before_all)
    assert db.at(datetime.datetime.now() + datetime.timedelta(days=3))["x"] == 3
    assert db.at(time.time())["x"] == 3
    assert db.at("f" * 16)["x"] == 3                      # the largest id: now
    assert db.at(datetime.datetime(9999, 12, 31))["x"] == 3   # past what a tid can say
    assert db.at(1e300)["x"] == 3


def test_the_future_is_now_and_stays_fixed(backend):
    """A time after the newest transaction reads the newest state, and later writes
    never show up in that snapshot (it is not a moving view)."""
    db = backend.connect()
    db["x"] = 1
    later = db.at(datetime.datetime.now() + datetime.timedelta(hours=1))
    other = backend.connect()
    other["x"] = 2
    assert later["x"] == 1 and db["x"] == 2
    later.close()


@pytest.mark.parametrize("bad", ["yesterday", "040d44", "g" * 16, True, None, [1],
                                 float("nan"), float("inf"), -1e12, {"time": 1},
                                 datetime.datetime(1, 1, 1), datetime.datetime(1800, 1, 1),
                                 datetime.date(2020, 1, 1), {"id": object()}])
def test_a_bad_when_is_refused_naming_the_forms(db, bad):
    with pytest.raises(zpydb.BadArgumentError, match="POSIX timestamp"):
        db.at(bad)
    with pytest.raises(zpydb.BadArgumentError, match="POSIX timestamp"):
        db.diff(bad)


def test_before_the_first_transaction_is_not_kept(db):
    db["x"] = 1
    with pytest.raises(zpydb.HistoryNotKeptError, match="oldest state kept") as caught:
        db.at(datetime.datetime(2001, 1, 1))
    assert caught.value.oldest_id is not None and caught.value.oldest.year >= 2020
    with pytest.raises(zpydb.HistoryNotKeptError):
        db.diff(0.5)


def test_after_a_pack_the_dropped_states_are_refused_saying_what_is_kept(backend):
    db = backend.connect()
    db["x"] = 1
    db["x"] = 2
    gone = db.history(2)[1]["id"]
    time.sleep(0.01)
    db.pack()
    db["x"] = 3
    kept = db.history(1)[0]["id"]
    with pytest.raises(zpydb.HistoryNotKeptError, match="oldest state kept") as caught:
        db.at(gone)
    oldest = caught.value.oldest_id
    assert oldest in str(caught.value) and gone < oldest < kept
    assert db.at(oldest)["x"] == 2            # the state the pack kept
    assert db.at(kept)["x"] == 3
    with pytest.raises(zpydb.HistoryNotKeptError):
        db.diff(gone)
    changes = db["x"].history()                # stops at what the pack kept
    assert [c["id"] for c in changes] == [kept] and changes[0]["value"] == 3


# -- read-only ---------------------------------------------------------------------------

def test_every_write_through_the_past_is_refused_and_writes_nothing(db):
    db["n"], db["l"], db["d"], db["s"] = 1, [1, 2], {"k": 1}, "abc"
    old = db.at(db.history(1)[0]["id"])
    count = transaction_count(db)
    consumed = []

    def generator():
        consumed.append(1)
        yield 1

    attempts = {
        "set": lambda: old.__setitem__("n", 2),
        "set nested": lambda: old["d"].__setitem__("k", 2),
        "set new": lambda: old.__setitem__("new", 1),
        "del": lambda: old.__delitem__("n"),
        "del nested": lambda: old["l"].__delitem__(0),
        "append": lambda: old["l"].append(3),
        "extend": lambda: old["l"].extend(generator()),
        "insert": lambda: old["l"].insert(0, 3),
        "pop": lambda: old["l"].pop(),
        "remove": lambda: old["l"].remove(1),
        "sort": lambda: old["l"].sort(),
        "reverse": lambda: old["l"].reverse(),
        "clear": lambda: old["d"].clear(),
        "update": lambda: old["d"].update({"z": 1}),
        "setdefault": lambda: old["d"].setdefault("z", 1),
        "popitem": lambda: old["d"].popitem(),
        "dict pop": lambda: old["d"].pop("k"),
        "undo": old.undo, "undo(id)": lambda: old.undo(db.history(1)[0]["id"]),
        "redo": old.redo, "pack": old.pack, "transaction": old.transaction,
        "atomic": lambda: old.atomic(lambda t: None), "lock": old.lock, "unlock": old.unlock,
    }
    for name, attempt in attempts.items():
        with pytest.raises(zpydb.ReadOnlyError) as caught:
            attempt()
        assert isinstance(caught.value, zpydb.PastIsReadOnlyError), name
        assert caught.value.path.startswith("db"), name
        assert "read-only view of the past" in str(caught.value), name
    for symbol in ("+=", "-=", "*=", "//=", "%=", "**=", "<<=", ">>=", "&=", "|=", "^=", "/="):
        with pytest.raises(zpydb.PastIsReadOnlyError, match=r"db\['n'\]"):
            exec(f"old['n'] {symbol} 1", {"old": old})
    with pytest.raises(zpydb.PastIsReadOnlyError, match=r"db\['l'\]\[0\]"):
        old["l"][0] = 5
    assert consumed == []
    assert transaction_count(db) == count
    assert db.value() == {"n": 1, "l": [1, 2], "d": {"k": 1}, "s": "abc"}
    assert old.value() == db.value()


def test_reads_of_the_past_work_like_reads_of_now(db):
    db["l"] = list(range(2000))            # a BigList
    db["d"] = {f"k{i:03d}": i for i in range(300)}  # an OOBTree of several buckets
    db["s"], db["n"], db["t"] = "text", 5, (1, "a")
    then = db.history(1)[0]["id"]
    db["l"].append("new")
    db["d"]["k000"] = "changed"
    db["n"] += 1
    with db.at(then) as old:
        assert old["l"][4] == 4 and old["l"][-1] == 1999 and len(old["l"]) == 2000
        assert list(old["l"]) == list(range(2000))
        assert old["l"][10:13].value() == [10, 11, 12]
        assert old["d"]["k000"] == 0 and len(old["d"].keys()) == 300
        assert list(old["d"].items())[:2] == [("k000", 0), ("k001", 1)]
        assert old["s"].upper() == "TEXT" and old["s"][1] == "e"
        assert old["n"] + 1 == 6 and old["n"] < 6 and int(old["n"]) == 5
        assert old["t"][1] == "a" and 3 in old["l"] and "k299" in old["d"]
        assert old.get("n") == 5 and old["l"].index(7) == 7 and old["l"].count(3) == 1
        assert sorted(old.keys()) == ["d", "l", "n", "s", "t"]
        assert repr(old).endswith(f"as at '{then}'>") and old.when == f"'{then}'"
        with pytest.raises(zpydb.KeyNotFoundError, match=r"no such key \(as at"):
            old["missing"].value()
        with pytest.raises(zpydb.BadIndexError, match="as at"):
            old["l"][5000].value()
    assert old.closed
    with pytest.raises(zpydb.Error, match="closed"):
        old["n"].value()
    assert db["n"] == 6


def test_export_of_a_path_in_the_past(db, tmp_path):
    import io
    import json

    from zpydb.export import export_json
    db["cfg"] = {"port": 1, "raw": b"\x00"}
    then = db.history(1)[0]["id"]
    db["cfg"]["port"] = 2
    out = io.StringIO()
    export_json(db.at(then), ("cfg",), out, progress=False)
    assert json.loads(out.getvalue()) == {"port": 1, "raw": {"$bytes": "AA=="}}


def test_a_snapshot_is_released_when_closed_or_dropped(db):
    import gc
    db["x"] = 1
    pool = db._session.db.historical_pool

    def live():
        gc.collect()
        return sum(len(p.all) for p in pool.pools.values())

    start = live()
    with db.at(time.time()) as old:
        assert old["x"] == 1
        assert live() == start + 1
    assert live() == start
    dropped = db.at(time.time())
    assert dropped["x"] == 1
    del dropped
    assert live() == start
    for _ in range(5):
        db["x"].history()
    assert live() == start   # the walk releases every connection it opened


def test_snapshots_are_independent_of_threads_and_other_clients(backend):
    import threading
    db = backend.connect()
    db["l"] = list(range(100))
    then = db.history(1)[0]["id"]
    other = backend.connect()
    old = db.at(then)
    errors = []

    def reader():
        try:
            for _ in range(20):
                assert old["l"][50] == 50 and sum(old["l"]) == 4950
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(10):
        other["l"][50] = -i
    for thread in threads:
        thread.join(60)
    assert errors == [] and not any(thread.is_alive() for thread in threads)
    assert old["l"][50] == 50 and db["l"][50] == -9
    old.close()


def test_the_past_of_a_closed_database_says_closed(backend):
    db = backend.connect()
    db["x"] = 1
    old = db.at(time.time())
    db.close()
    with pytest.raises(zpydb.Error, match="closed"):
        old["x"].value()
    with pytest.raises(zpydb.Error, match="closed"):
        db.at(time.time())


def test_history_of_the_past_ends_there(db):
    for i in range(5):
        db["x"] = i
    entries = db.history(5)
    old = db.at(entries[2]["id"])
    assert old.history(10) == db.history(10)[2:]
    assert [c["value"] for c in old["x"].history(10)] == [2, 1, 0]
    assert old.diff(entries[4]["id"]) == [{"op": "replace", "path": "/x", "value": 2}]


# -- diff ------------------------------------------------------------------------------

def test_diff_of_a_subtree_is_relative_to_it(db):
    db["cfg"] = {"port": 1, "hosts": ["a"]}
    then = db.history(1)[0]["id"]
    db["cfg"]["port"] = 2
    db["cfg"]["hosts"].append("b")
    db["other"] = "not in the subtree"
    assert sorted(db["cfg"].diff(then), key=lambda op: op["path"]) == [
        {"op": "add", "path": "/hosts/1", "value": "b"},
        {"op": "replace", "path": "/port", "value": 2}]
    assert db["cfg"].diff(then, then) == []
    patch = db.diff(then)
    assert {"op": "add", "path": "/other", "value": "not in the subtree"} in patch
    with pytest.raises(zpydb.KeyNotFoundError, match="as at"):
        db["other"].diff(then)


def test_a_snapshot_outlives_a_server_restart(zeo_server):
    """Killed server: reads of the past fail cleanly (bounded by wait_timeout), then work
    again on the same snapshot once the client has reconnected by itself."""
    import signal
    db = zpydb.connect(zeo_server.url, wait_timeout=2)
    db["d"] = {f"k{i:03d}": i for i in range(500)}     # several buckets: loaded on demand
    then = db.history(1)[0]["id"]
    db["d"]["k000"] = "later"
    reader = zpydb.connect(zeo_server.url, wait_timeout=2)   # its cache holds none of d
    old = reader.at(then)
    assert old["d"]["k000"] == 0                      # loads the buckets on that key's way
    zeo_server.stop(sig=signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(zpydb.DisconnectedError):
        old["d"]["k499"].value()                      # a bucket not loaded yet
    assert time.monotonic() - started < 30
    zeo_server.start()
    deadline = time.monotonic() + 30
    while True:                                       # the client reconnects (poll ~1 s)
        try:
            assert old["d"]["k499"] == 499
            break
        except zpydb.DisconnectedError:
            assert time.monotonic() < deadline
    assert old["d"].value() == {f"k{i:03d}": i for i in range(500)}
    assert [c["value"] for c in reader["d"]["k000"].history()] == ["later", 0]
    old.close()
    reader.close()
    db.close()
