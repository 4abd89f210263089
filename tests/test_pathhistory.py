"""path.history(n) (pathhistory.py): the changes of one value, on every backend.

The hypothesis property in test_timetravel.py checks random statements; these
check the cases that move records around under a path (bucket splits,
replaced parents, BigList chunks shifting, a list becoming a BigList), the
metadata it reports, and that the cost does not grow with writes elsewhere.
"""

import pytest

import zpydb
from zpydb.pathhistory import Walk, same
from zpydb.timetravel import latest_before


def values(changes):
    return [(c["value"], c["deleted"]) for c in changes]


def walk(db, *steps, n=100):
    walker = Walk(db._session, steps)
    return walker, walker.changes(latest_before(db._session), n)


def test_fields_of_a_change(db):
    db["cfg"] = {"port": 1}
    db["cfg"]["port"] = 2
    del db["cfg"]["port"]
    changes = db["cfg"]["port"].history()
    assert values(changes) == [(None, True), (2, False), (1, False)]
    log = db.history(3)
    assert [c["id"] for c in changes] == [e["id"] for e in log]
    assert [c["time"] for c in changes] == [e["time"] for e in log]
    assert [c["note"] for c in changes] == ["del db['cfg']['port']", "db['cfg']['port'] = 2",
                                            "db['cfg'] = {'port': 1}"]
    assert all(c["user"] == log[0]["user"] and c["user"] for c in changes)
    for change in changes[1:]:
        assert db.at(change["id"])["cfg"]["port"] == change["value"]
    assert "port" not in db.at(changes[0]["id"])["cfg"]
    assert db["cfg"]["port"].history(1) == changes[:1]
    assert db["cfg"]["port"].history(0) == []
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(zpydb.BadArgumentError, match="history"):
            db["cfg"]["port"].history(bad)


def test_a_path_that_never_existed_has_no_history(db):
    db["x"] = 1
    assert db["nothing"].history() == []
    assert db["x"]["deeper"].history() == []


def test_the_same_value_written_again_is_not_a_change_but_another_type_is(db):
    db["x"] = 1
    db["x"] = 1
    db["x"] = 1.0
    db["x"] = True
    db["x"] = [1]
    db["x"] = [1]
    db["x"] = (1,)
    assert values(db["x"].history()) == [((1,), False), ([1], False), (True, False),
                                        (1.0, False), (1, False)]
    assert [type(c["value"]) for c in db["x"].history(4)] == [tuple, list, bool, float]


def test_bucket_splits_under_a_key(db):
    """Keys inserted around 'k050' split the buckets: the key moves to other records."""
    db["d"] = {"k050": 0}
    expected = [0]
    for round_ in range(1, 5):
        with db.transaction() as t:
            for i in range(60):
                t["d"][f"k{round_}{i:03d}"] = i       # many keys around it: buckets split
        db["d"]["k050"] = round_
        expected.append(round_)
        db["d"][f"x{round_}"] = "after"             # a neighbour, in its own transaction
    assert len(db["d"]) > 200                      # an OOBTree of several buckets now
    assert values(db["d"]["k050"].history()) == [(v, False) for v in reversed(expected)]


def test_replaced_parents_and_recreated_paths(db):
    db["a"] = {"b": {"c": 1}}
    db["a"]["b"]["c"] = 2
    db["a"] = {"b": {"c": 2}}           # new records, the same value: not a change of c
    db["a"]["b"] = {"c": 3}             # a new parent with a new value
    db["a"] = 5                         # c is gone: its parent is not a dict
    db["a"] = {"b": {"c": 3}}           # back
    del db["a"]
    db["a"] = {"b": {"c": 4}}
    assert values(db["a"]["b"]["c"].history()) == [
        (4, False), (None, True), (3, False), (None, True), (3, False), (2, False), (1, False)]
    assert len(db["a"]["b"]["c"].history(3)) == 3


def test_biglist_items_move_between_chunks(db):
    db["l"] = list(range(3000))            # a BigList: chunks of 512
    db["l"][600] = "x"
    db["l"].insert(0, "first")             # every item shifts: l[600] is now 'x''s left neighbour
    for i in range(5):
        db["l"].append(i)                  # the last chunk and the length: not l[600]
    db["l"].pop(0)                         # shifts back: 'x' again
    db["l"][-1] = "last"
    assert values(db["l"][600].history()) == [("x", False), (599, False), ("x", False),
                                             (600, False)]
    assert values(db["l"][-1].history(2)) == [("last", False), (4, False)]
    assert values(db["l"][2999:3001].history(1)) == [([2999, 0], False)]


def test_a_list_that_grows_into_a_biglist(db):
    db["l"] = list(range(1020))
    for i in range(10):
        db["l"].append(i)                  # becomes a BigList on the way: new records
    db["l"][3] = "three"
    assert values(db["l"][3].history()) == [("three", False), (3, False)]
    assert values(db["l"][1025].history()) == [(5, False)]


def test_counters_and_strings(db):
    db["n"] = 0
    for _ in range(3):
        db["n"] += 1                       # a Counter record: += changes only it
    db["s"] = "abc"
    db["s"] = "xbc"
    assert values(db["n"].history()) == [(3, False), (2, False), (1, False), (0, False)]
    assert values(db["s"][0].history()) == [("x", False), ("a", False)]
    assert values(db["s"][1].history()) == [("b", False)]


def test_a_whole_subtree_changes_with_anything_below_it(db):
    db["cfg"] = {"a": [1, {"deep": 1}]}
    db["cfg"]["a"][1]["deep"] = 2
    db["cfg"]["b"] = 1
    db["other"] = 1
    assert values(db["cfg"].history()) == [({"a": [1, {"deep": 2}], "b": 1}, False),
                                          ({"a": [1, {"deep": 2}]}, False),
                                          ({"a": [1, {"deep": 1}]}, False)]
    assert len(db.at(db.history(1)[0]["id"]).history(10)) == 4


def test_blocks_undo_and_redo_are_changes_too(db):
    db["p"] = 1
    with db.transaction() as t:
        t["p"] = 2
        t["q"] = "beside"
    db.undo()
    db.redo()
    db["q"] = "only q"
    db.undo()                             # undoes only q: p is untouched
    changes = db["p"].history()
    assert values(changes) == [(2, False), (1, False), (2, False), (1, False)]
    assert [c["note"] for c in changes] == ["redo: db['p'] = 2; db['q'] = 'beside'",
                                            "undo: db['p'] = 2; db['q'] = 'beside'",
                                            "db['p'] = 2; db['q'] = 'beside'", "db['p'] = 1"]


def test_writes_elsewhere_cost_nothing_and_neighbours_only_their_metadata(db):
    """The walk reads the past only at the path's own changes; a neighbour in the
    same bucket (here the data root's only one) is passed over on its metadata."""
    db["p"], db["other"] = 0, {}
    for change in range(1, 4):
        for i in range(40):
            db["other"][i % 7] = i          # inside another dict: not on p's path at all
            db[f"q{i % 5}"] = i             # beside 'p' in the data root: on its path
        db["p"] = change
    walker, changes = walk(db, "p")
    assert values(changes) == [(3, False), (2, False), (1, False), (0, False)]
    assert walker.probes <= 2 * len(changes) + 3
    assert walker.skipped >= 3 * 40


def test_raw_commits_without_metadata_are_read_not_trusted(db):
    """A transaction that records no paths (another program's) is read in the past."""
    db["p"], db["q"] = 1, 1
    tm, conn = db._session.open_private()
    tm.begin()
    conn.root()["zpydb"]["p"] = 2          # a raw ZODB commit: no zpydb metadata
    tm.commit()
    tm.begin()
    conn.root()["zpydb"]["q"] = 2          # raw, and not a change of p
    tm.commit()
    conn.close()
    db["q"] = 3
    walker, changes = walk(db, "p")
    assert values(changes) == [(2, False), (1, False)]
    assert changes[0]["note"] == "" and changes[0]["user"] == ""
    assert walker.skipped >= 1            # db['q'] = 3 says what it wrote


def test_a_big_block_is_recorded_coarsely_and_still_right(db):
    db["d"] = {}
    db["p"] = 0
    with db.transaction() as t:
        for i in range(300):               # more paths than a transaction records
            t["d"][i] = i
    with db.transaction() as t:
        for i in range(150):
            t[f"k{i:03d}"] = i             # more top-level keys than it records: everything
        t["p"] = 1
    assert values(db["p"].history()) == [(1, False), (0, False)]
    assert values(db["d"][7].history()) == [(7, False)]


def test_the_history_of_a_snapshot_ends_at_it(db):
    for i in range(4):
        db["x"] = i
    then = db.history(4)[2]["id"]          # after x = 1
    assert values(db.at(then)["x"].history()) == [(1, False), (0, False)]


def test_files_have_a_history(db):
    db["f"] = zpydb.File(b"one", name="a.txt")
    db["f"] = zpydb.File(b"two", name="a.txt")
    changes = db["f"].history()
    assert [c["value"].read() for c in changes] == [b"two", b"one"]


def test_same_compares_strictly_and_without_recursion():
    assert same({"a": [1, (2, "x")]}, {"a": [1, (2, "x")]})
    assert not same(1, 1.0) and not same(1, True) and not same([1], (1,))
    assert same(float("nan"), float("nan")) and not same({"a": 1}, {"b": 1})
    deep = current = []
    for _ in range(5000):
        current.append([])
        current = current[0]
    assert same(deep, deep) and not same(deep, [])


def test_the_root_of_a_block_lists_the_log_like_db(db):
    db["x"] = 1
    log = db.history(1)
    with db.transaction() as t:
        assert t.history(1) == log       # the committed log (db.history() is refused in here)
        assert [c["value"] for c in t["x"].history()] == [1]
