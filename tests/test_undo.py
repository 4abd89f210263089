"""Undo/redo from ZODB's transaction log (undo.py), on every backend."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zpydb
from tests.helpers import transaction_count


def test_undo_walks_back_and_redo_forward(db):
    db["x"] = 1
    db["x"] = 2
    db["x"] = 3
    db.undo()
    assert db["x"]._run() == 2
    db.undo()
    assert db["x"]._run() == 1
    db.redo()
    assert db["x"]._run() == 2
    db.redo()
    assert db["x"]._run() == 3
    with pytest.raises(zpydb.UndoError, match="nothing to redo"):
        db.redo()


def test_new_write_ends_the_redo_chain(db):
    db["x"] = 1
    db["x"] = 2
    db.undo()
    db["y"] = "new"
    with pytest.raises(zpydb.UndoError):
        db.redo()
    assert db._run() == {"x": 1, "y": "new"}


def test_undo_of_a_redo_and_redo_again(db):
    db["x"] = 1
    db.undo()
    db.redo()
    db.undo()
    assert "x" not in db
    db.redo()
    assert db["x"]._run() == 1


def test_nothing_to_undo(db):
    with pytest.raises(zpydb.UndoError, match="nothing to undo"):
        db.undo()
    db["a"] = 1
    db.undo()
    before = transaction_count(db)
    with pytest.raises(zpydb.UndoError):
        db.undo()
    assert transaction_count(db) == before


def test_undo_is_shared_by_every_client_and_survives_reopen(backend):
    first = backend.connect()
    first["x"] = "from first"
    second = backend.connect()
    second.undo()                         # undoes first's change
    assert "x" not in first
    second.close()
    first.close()
    third = backend.connect()
    third.redo()
    assert third["x"]._run() == "from first"


def test_undo_blocked_by_a_later_change_changes_nothing(db):
    db["l"] = [1]
    db["l"].append(2)
    # A raw ZODB commit (not made through zpydb) touches the same list, so
    # undoing zpydb's append would lose it: ZODB refuses.
    session = db._session
    tm, conn = session.open_private()
    tm.begin()
    conn.root()["zpydb"]["l"].append(3)
    tm.commit()
    conn.close()
    before = transaction_count(db)
    with pytest.raises(zpydb.UndoError, match="later change"):
        db.undo()
    assert db["l"]._run() == [1, 2, 3]
    assert transaction_count(db) == before


def test_history(db):
    db["a"] = 1
    db["a"] += 1
    db.undo()
    entries = db.history(3)
    assert [e["note"] for e in entries] == ["undo: db['a'] += 1", "db['a'] += 1", "db['a'] = 1"]
    assert [e["kind"] for e in entries] == ["undo", "write", "write"]
    assert all(e["user"] for e in entries)
    assert entries[0]["time"] >= entries[1]["time"]


def test_transaction_block_is_one_undo_step(db):
    with db.transaction() as t:
        t["a"] = 1
        t["b"] = 2
    db.undo()
    assert db._run() == {}


def test_memory_storage_has_no_undo():
    with zpydb.connect("memory://") as db:
        db["x"] = 1
        with pytest.raises(zpydb.UndoError, match="no undo"):
            db.undo()
        assert db["x"]._run() == 1


def test_save_is_a_harmless_no_op(backend):
    """pyzdb's write-then-save() scripts: save() writes nothing, changes nothing, closes nothing."""
    db = backend.connect()
    db["x"] = 1
    before = transaction_count(db)
    assert db.save() is None
    assert transaction_count(db) == before          # no transaction of its own
    assert db._run() == {"x": 1}
    db["y"] = 2                                     # the database is still open
    with db.transaction() as t:                     # inside a block: the block goes on
        t["z"] = 3
        assert db.save() is None
        t["w"] = 4
    db.lock()                                       # pyzdb: lock(), changes, save(), unlock()
    db["v"] = 5
    assert db.save() is None
    db.unlock()
    assert transaction_count(db) == before + 3
    db.close()
    again = backend.connect()                       # every statement was durable already
    assert again._run() == {"v": 5, "w": 4, "x": 1, "y": 2, "z": 3}


def test_packing_trims_the_undo_history(backend):
    """Backend fact: a pack to 'now' drops the history undo walks (every backend here)."""
    import time
    db = backend.connect()
    db["x"] = 1
    db["x"] = 2
    assert len(db.history(10)) == 2
    time.sleep(0.01)
    db._session.db.pack(time.time())
    assert db["x"]._run() == 2                    # current data survives the pack
    with pytest.raises(zpydb.UndoError):
        db.undo()                                 # ...but the changes cannot be undone
    assert db["x"]._run() == 2


# -- issue 11 item 3: undo/redo/history inside an open block are refused ----------

def test_undo_inside_lock_is_refused_and_the_block_still_commits(db):
    """The issue's case: lock(); write; undo() undid an EARLIER change, and unlock() failed."""
    db["earlier"] = "kept"
    db.lock()
    db["a"] = 1
    before = transaction_count(db)
    for call in (db.undo, db.redo, db.history):
        with pytest.raises(zpydb.UndoError, match="while a db.lock"):
            call()
    assert transaction_count(db) == before
    db.unlock()
    assert db._run() == {"earlier": "kept", "a": 1}
    db.undo()                                     # after the block: undoes the block
    assert db._run() == {"earlier": "kept"}


def test_undo_inside_transaction_and_atomic_is_refused(db):
    db["x"] = 0
    with db.transaction() as t:
        t["x"] = 1
        with pytest.raises(zpydb.UndoError, match="block"):
            db.undo()
        with pytest.raises(zpydb.UndoError, match="block"):
            db.history()
    assert db["x"]._run() == 1

    def body(t):
        t["x"] += 1
        with pytest.raises(zpydb.UndoError, match="block"):
            db.redo()
    db.atomic(body)
    assert db["x"]._run() == 2
    assert [e["note"] for e in db.history(2)] == ["db['x'] += 1", "db['x'] = 1"]
    with pytest.raises(RuntimeError):             # a block that ended by an exception
        with db.transaction() as t:
            t["x"] = 99
            raise RuntimeError
    db.undo()                                     # no block open any more
    assert db["x"]._run() == 1


def test_a_block_in_another_thread_does_not_refuse_undo(db):
    import threading
    db["x"] = 1
    db["x"] = 2
    db.lock()
    result = []
    worker = threading.Thread(target=lambda: result.append(db.undo()))
    worker.start()
    worker.join()
    db.unlock()
    assert result == [None] and db["x"]._run() == 1


# -- issue 11 item 15: history(n) and the notes of redo ----------------------------

def test_history_of_zero_is_empty_and_negative_is_refused(db):
    db["a"] = 1
    assert db.history(0) == []
    assert len(db.history(1)) == 1
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(zpydb.BadArgumentError, match="history"):
            db.history(bad)


def test_redo_and_undo_notes_name_the_original_change(db):
    db["l"] = range(10)
    db.undo()
    db.redo()
    db.undo()
    db.redo()
    notes = [e["note"] for e in db.history(5)]
    assert notes == ["redo: db['l'] = range(0, 10)", "undo: db['l'] = range(0, 10)",
                     "redo: db['l'] = range(0, 10)", "undo: db['l'] = range(0, 10)",
                     "db['l'] = range(0, 10)"]


def test_note_and_user_of_blocks_undo_and_redo(fdb):
    """``note=``/``user=`` (zpydb web records "PUT /x.json" and the token's name)."""
    import getpass
    with fdb.transaction(note="PUT /a.json", user="ann") as t:
        t["a"] = 1
        t["b"] = 2
    assert fdb.history(1)[0] == dict(fdb.history(1)[0], note="PUT /a.json", user="ann")
    fdb.atomic(lambda t: t.__setitem__("c", 3), note="PATCH /.json", user="bob")
    assert (fdb.history(1)[0]["note"], fdb.history(1)[0]["user"]) == ("PATCH /.json", "bob")
    fdb.undo(user="carol")
    entry = fdb.history(1)[0]
    assert (entry["note"], entry["user"], entry["kind"]) == ("undo: PATCH /.json", "carol", "undo")
    assert "c" not in fdb
    fdb.redo(user="dave")
    assert (fdb.history(1)[0]["user"], fdb["c"].value()) == ("dave", 3)
    fdb["d"] = 4  # without: the statement and the OS user, as before
    assert fdb.history(1)[0]["note"] == "db['d'] = 4"
    assert fdb.history(1)[0]["user"] in (getpass.getuser(), "unknown")
    for bad in (1, b"x"):
        with pytest.raises(zpydb.BadArgumentError):
            fdb.transaction(note=bad)
        with pytest.raises(zpydb.BadArgumentError):
            fdb.atomic(lambda t: None, user=bad)
        with pytest.raises(zpydb.BadArgumentError):
            fdb.undo(user=bad)
    assert fdb["d"].value() == 4 and len(fdb.history(10)) == 5


# -- issue 14: history ids and undo(id) ----------------------------------------------

def test_history_entries_carry_the_transaction_id(db):
    db["x"] = 1
    db["x"] = 2
    entries = db.history(2)
    assert all(len(e["id"]) == 16 and int(e["id"], 16) for e in entries)
    assert entries[0]["id"] > entries[1]["id"]
    assert db.at(entries[1]["id"])["x"] == 1 and db.at(entries[0]["id"])["x"] == 2


def test_undo_of_one_earlier_change_and_redo_of_it(db):
    # each change in a dict of its own: undoing one touches no record a later one wrote
    # (RelStorage refuses even that; FileStorage and ZEO merge bucket changes too)
    db["a"], db["b"], db["c"] = {}, {}, {}
    db["a"]["v"] = 1
    db["b"]["v"] = 1
    first = db.history(1)[0]["id"]           # db['b']['v'] = 1
    db["c"]["v"] = 1
    db["a"]["v"] = 2
    db.undo(first)                           # only b's change goes
    assert db.value() == {"a": {"v": 2}, "b": {}, "c": {"v": 1}}
    assert db.history(1)[0]["note"] == "undo: db['b']['v'] = 1"
    db.redo()                                # re-applies what undo(id) took away
    assert db.value() == {"a": {"v": 2}, "b": {"v": 1}, "c": {"v": 1}}
    db.undo()                                # the newest change still in effect: the redo
    db.undo()                                # then db['a']['v'] = 2
    assert db.value() == {"a": {"v": 1}, "b": {}, "c": {"v": 1}}


def test_undo_of_a_change_that_later_changes_depend_on_is_refused(db):
    db["x"] = 1
    target = db.history(1)[0]["id"]
    db["x"] = 2
    before = transaction_count(db)
    with pytest.raises(zpydb.UndoError, match="later change"):
        db.undo(target)
    assert db["x"] == 2 and transaction_count(db) == before


def test_undo_of_an_undone_change_follows_what_became_of_it(db):
    db["keep"] = 0
    db["x"] = 1
    change = db.history(1)[0]
    db.undo()
    count = transaction_count(db)
    with pytest.raises(zpydb.UndoError, match="already undone"):
        db.undo(change["id"])
    assert transaction_count(db) == count
    undo_entry = db.history(1)[0]
    db.redo()                                # the change is in effect again, through the redo
    db.undo(change)                          # a history entry works as well as its id
    assert "x" not in db and db.history(1)[0]["note"] == "undo: db['x'] = 1"
    db.undo(undo_entry["id"])                # undoing an undo brings the change back: a redo
    assert db["x"] == 1 and db.history(1)[0]["kind"] == "redo"
    with pytest.raises(zpydb.UndoError, match="already redone"):
        db.undo(undo_entry["id"])


def test_undo_of_what_is_not_a_change_is_refused(db):
    init = None
    for entry in db._session.db.undoInfo(0, 100):
        if entry.get("zpydb") == "init":
            from zpydb.undo import tid_of
            init = tid_of(entry).hex()
    assert init is not None
    with pytest.raises(zpydb.UndoError, match="not a change"):
        db.undo(init)
    with pytest.raises(zpydb.UndoError, match="no change"):
        db.undo("0" * 16)
    for bad in ("xyz", 12, b"\x00" * 8, {"id": 3}):
        with pytest.raises(zpydb.BadArgumentError, match="undo"):
            db.undo(bad)
    db["x"] = 1
    db.lock()
    with pytest.raises(zpydb.UndoError, match="while a db.lock"):
        db.undo(db.history(1)[0]["id"])
    db.unlock()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_undo_by_id_against_a_model(db, data):
    """undo(id) either puts back, as they were before that change, the keys the change
    changed (and redo() takes them forward again), or refuses, changing nothing."""
    db["_"] = 0
    with db.transaction() as t:
        for key in list(db.keys()):
            del t[key]
    log = []                          # (id, kind, {key: (before, after)}) of each change
    after = {}                        # id -> the whole tree right after that change
    for _ in range(data.draw(st.integers(2, 8))):
        state = db.value()
        kind = data.draw(st.sampled_from(["write", "write", "write", "undo", "redo", "undo(id)"]))
        if kind == "write":
            db[data.draw(st.sampled_from("abc"))] = data.draw(st.integers(0, 3))
        elif kind in ("undo", "redo"):
            try:
                getattr(db, kind)()
            except zpydb.UndoError:
                continue
        elif log:
            target_id, target_kind, effect = data.draw(st.sampled_from(log))
            later = log[[entry[0] for entry in log].index(target_id) + 1:]
            count = transaction_count(db)
            try:
                db.undo(target_id)
            except zpydb.UndoError:
                assert db.value() == state and transaction_count(db) == count
                continue
            # a later write that changed one of its keys would have been lost: ZODB refuses,
            # unless the record is back to exactly what the change wrote (FileStorage then
            # undoes it: "maybe it is pointing at the same data we are")
            assert all(kind != "write" or not set(changed) & set(effect)
                       for _, kind, changed in later) or \
                any(kind != "write" for _, kind, _ in later) or state == after[target_id]
            expected = dict(state)
            for key, (before, _) in effect.items():
                if before is None:
                    expected.pop(key, None)
                else:
                    expected[key] = before
            assert db.value() == expected
            made = db.history(1)[0]["kind"]   # undo; or redo when the target was an undo
            assert made == ("redo" if target_kind == "undo" else "undo")
            back, forth = (db.redo, db.undo) if made == "undo" else (db.undo, db.redo)
            back()                            # redo() re-applies it (undo() takes a redo back)
            assert db.value() == state
            forth()
            assert db.value() == expected
        else:
            continue
        new = db.value()
        effect = {k: (state.get(k), new.get(k)) for k in set(state) | set(new)
                  if state.get(k) != new.get(k)}
        newest = db.history(1)[0]
        log.append((newest["id"], newest["kind"], effect))
        after[newest["id"]] = new
