"""Lazy paths, reads and writes (paths.py, ops.py), on every backend."""

import pytest

import zpydb
from tests.helpers import last_note, transaction_count


def test_paths_are_lazy_and_do_no_io(db, monkeypatch):
    db["a"] = [{"b": 1}]
    before = transaction_count(db)
    calls = []
    session = db._session
    for name in ("read", "write"):
        real = getattr(session, name)
        monkeypatch.setattr(session, name,
                            lambda *args, _name=name, _real=real: calls.append(_name)
                            or _real(*args))
    path = db["a"][0]["b"]
    missing = db["x"][0]["y"]       # nothing exists there: building it must not fail
    assert path._expr() == "db['a'][0]['b']" and missing._expr() == "db['x'][0]['y']"
    assert calls == []              # no read, no write: building a path is not I/O
    assert path._run() == 1 and calls == ["read"]   # (the spy does see I/O)
    assert transaction_count(db) == before
    db.close()
    path = db["still"]["lazy"]      # even on a closed database
    assert isinstance(path, zpydb.Path)


def test_run_returns_plain_copies(db):
    db["d"] = {"k": [1, {"x": (1, 2)}], "b": b"\x00"}
    value = db["d"]._run()
    assert value == {"k": [1, {"x": (1, 2)}], "b": b"\x00"}
    assert type(value) is dict and type(value["k"]) is list and type(value["k"][1]) is dict
    value["k"].append(99)
    value["new"] = 1
    assert db["d"]._run() == {"k": [1, {"x": (1, 2)}], "b": b"\x00"}


def test_scalars_round_trip(db):
    for value in [0, -5, 2**70, 1.5, True, False, None, "", "é", b"bytes", (1, "a", (2.5,))]:
        db["v"] = value
        got = db["v"]._run()
        assert got == value and type(got) is type(value)


def test_slices_and_negative_indexes(db):
    db["l"] = range(10)
    assert db["l"][-1]._run() == 9
    assert db["l"][2:5]._run() == [2, 3, 4]
    assert db["l"][::-3]._run() == [9, 6, 3, 0]
    assert db["l"][1:4][0]._run() == 1
    db["l"][-2] = "minus two"
    db["l"][0:3] = ["a"]
    assert db["l"]._run() == ["a", 3, 4, 5, 6, 7, "minus two", 9]
    del db["l"][1:3]
    del db["l"][-1]
    assert db["l"]._run() == ["a", 5, 6, 7, "minus two"]


def test_list_methods(db):
    db["l"] = [3, 1, 2]
    db["l"].append([4])
    db["l"][3].append(5)
    db["l"].extend(range(2))
    db["l"].insert(0, "first")
    assert db["l"]._run() == ["first", 3, 1, 2, [4, 5], 0, 1]
    assert db["l"].pop() == 1
    assert db["l"].pop(0) == "first"
    db["l"].remove([4, 5])
    db["l"].sort()
    assert db["l"]._run() == [0, 1, 2, 3]
    db["l"].sort(reverse=True)
    db["l"].reverse()
    assert db["l"]._run() == [0, 1, 2, 3]
    assert db["l"].index(2) == 2 and db["l"].count(3) == 1
    db["l"].sort(key=lambda v: -v)
    assert db["l"]._run() == [3, 2, 1, 0]
    db["l"].clear()
    assert db["l"]._run() == []


def test_dict_methods(db):
    db["d"] = {"a": 1}
    db["d"].update({"b": 2}, c=3)
    assert db["d"].setdefault("a", 100) == 1
    assert db["d"].setdefault("z", [1]) == [1]
    assert db["d"].get("a") == 1 and db["d"].get("nope", "dflt") == "dflt"
    assert db["d"].get(5) is None          # a key of another type is simply absent
    assert sorted(db["d"].keys()) == ["a", "b", "c", "z"]
    assert sorted(db["d"].values(), key=repr) == sorted([1, 2, 3, [1]], key=repr)
    assert dict(db["d"].items()) == {"a": 1, "b": 2, "c": 3, "z": [1]}
    assert db["d"].pop("b") == 2 and db["d"].pop("b", None) is None
    assert db["d"].popitem() == ("z", [1])   # the largest key: BTrees are ordered
    db["d"].clear()
    assert db["d"]._run() == {}


def test_read_protocols(db):
    db["d"] = {"a": 1, "b": 2}
    db["l"] = [1, [2]]
    assert len(db["d"]) == 2 and len(db["l"]) == 2 and len(db) == 2
    assert "a" in db["d"] and "q" not in db["d"] and 1 not in db["d"]
    assert [2] in db["l"] and 3 not in db["l"]
    assert sorted(db["d"]) == ["a", "b"] and list(db["l"]) == [1, [2]]
    assert db["d"] == {"a": 1, "b": 2} and db["l"] != [1]
    assert db["l"][0] + 1 == 2 and bool(db["l"])
    assert str(db["d"]) == "{'a': 1, 'b': 2}"          # str() reads, like int()
    assert repr(db["d"]) == "<zpydb.Path db['d']>"     # repr() is the reference: no I/O


def test_reads_never_write_a_transaction(db):
    db["d"] = {"a": [1, 2, 3]}
    before = transaction_count(db)
    db["d"]._run(); len(db["d"]); "a" in db["d"]; list(db["d"])  # noqa: E702
    db["d"].get("a"); db["d"].keys(); db["d"].values(); db["d"].items()  # noqa: E702
    db["d"]["a"].index(2); db["d"]["a"].count(1); db["d"] == {}; repr(db)  # noqa: E702
    assert transaction_count(db) == before


def test_each_write_is_one_transaction_with_a_readable_note(db):
    before = transaction_count(db)
    db["l"] = range(10)
    db["l"][4] = ["a", "b", "c"]
    assert last_note(db) == "db['l'][4] = ['a', 'b', 'c']"
    db["l"][4].append("d")
    assert last_note(db) == "db['l'][4].append('d')"
    del db["l"][0]
    assert last_note(db) == "del db['l'][0]"
    assert transaction_count(db) == before + 3 + 0 + 1 - 0
    entry = db.history(1)[0]
    assert entry["user"] and entry["kind"] == "write"


def test_augmented_assignment_is_one_transaction(db):
    db["n"] = 1
    before = transaction_count(db)
    db["n"] += 41
    assert db["n"]._run() == 42
    assert transaction_count(db) == before + 1
    assert last_note(db) == "db['n'] += 41"
    db["s"] = "ab"
    db["s"] += "c"
    db["l"] = [1]
    db["l"] += [2, 3]
    db["n"] -= 2
    db["n"] *= 2
    assert (db["s"]._run(), db["l"]._run(), db["n"]._run()) == ("abc", [1, 2, 3], 80)


def test_path_value_is_copied_in_the_same_transaction(db):
    db["a"] = {"x": [1, 2]}
    db["b"] = db["a"]
    db["a"]["x"].append(3)
    assert db["b"]._run() == {"x": [1, 2]}


def test_missing_key_error_names_the_path(db):
    db["a"] = {"b": {"c": 1}}
    with pytest.raises(KeyError) as info:
        db["a"]["b"]["nope"]._run()
    assert isinstance(info.value, zpydb.KeyNotFoundError)
    assert info.value.path == "db['a']['b']['nope']"
    assert "db['a']['b']['nope']" in str(info.value)
    with pytest.raises(zpydb.KeyNotFoundError):
        db["a"][3]._run()                   # int key on a str-keyed dict: absent, no TypeError
    with pytest.raises(zpydb.KeyNotFoundError):
        del db["a"]["zzz"]


def test_bad_index_and_scalar_errors(db):
    db["l"] = [1, 2]
    db["s"] = 5
    with pytest.raises(IndexError) as info:
        db["l"][5]._run()
    assert isinstance(info.value, zpydb.BadIndexError) and "db['l'][5]" in str(info.value)
    with pytest.raises(zpydb.BadIndexError):
        db["l"][2] = 0
    with pytest.raises(TypeError) as info:
        db["s"]["x"]._run()
    assert isinstance(info.value, zpydb.NotAContainerError) and "db['s']" in str(info.value)
    with pytest.raises(zpydb.NotAContainerError):
        db["l"].update({})
    with pytest.raises(zpydb.NotAContainerError):
        db["l"]["key"]._run()
    with pytest.raises(ValueError):
        db["l"].remove(99)


def test_failed_writes_leave_nothing_behind(db):
    db["d"] = {"a": 1}
    before = transaction_count(db)
    with pytest.raises(TypeError):
        db["x"] = {"ok": 1, "bad": object()}
    with pytest.raises(zpydb.UnstorableValueError) as info:
        db["d"]["f"] = [1, {2, 3}]
    assert info.value.path == "db['d']['f'][1]"
    with pytest.raises(zpydb.UnorderableKeyError):
        db["d"].update({"b": 2, 3: "c"})     # mixed keys: nothing of the update lands
    with pytest.raises(zpydb.UnorderableKeyError):
        db["d"][7] = "int key next to str keys"
    assert db._run() == {"d": {"a": 1}}
    assert transaction_count(db) == before


def test_unorderable_keys_in_a_new_dict(db):
    with pytest.raises(zpydb.UnorderableKeyError) as info:
        db["m"] = {"a": 1, 2: "b"}
    assert "'a'" in str(info.value) and "2" in str(info.value) and "db['m']" in str(info.value)
    assert "m" not in db


def test_tuple_keys_as_in_pyzdb_locks(db):
    db["locks"] = {}
    db["locks"][("l", 4)] = True
    db["locks"][("l", 5)] = False
    assert db["locks"][("l", 4)]._run() is True
    assert ("l", 5) in db["locks"] and ("m", 1) not in db["locks"]
    del db["locks"][("l", 4)]
    assert db["locks"]._run() == {("l", 5): False}


def test_numeric_keys(db):
    db["ints"] = {1: "a", 2.5: "b", 3: "c"}
    assert db["ints"][2.5]._run() == "b" and db["ints"].keys() == [1, 2.5, 3]


def test_writes_through_a_slice_are_refused(db):
    db["l"] = [[1], [2]]
    with pytest.raises(zpydb.NotAContainerError):
        db["l"][0:1][0].append(3)
    assert db["l"]._run() == [[1], [2]]


def test_second_client_sees_writes_immediately(backend):
    first, second = backend.connect(), backend.connect()
    first["x"] = 1
    assert second["x"]._run() == 1
    second["x"] += 1
    assert first["x"]._run() == 2


def _server_pings(db, statement):
    """How many sync round trips (ZEO ``ping``) ``statement()`` made to the server."""
    storage = db._session.db.storage
    real, names = storage._call, []
    storage._call = lambda name, *args, **kwargs: names.append(name) or real(name, *args, **kwargs)
    try:
        statement()
    finally:
        storage._call = real
    return names.count("ping")


def test_local_read_option_is_accepted(backend):
    local = backend.connect(fresh_reads=False)
    local["x"] = 5
    assert local["x"]._run() == 5
    if backend.name != "zeo":
        return  # only ZEO has server_sync; elsewhere the option is accepted and has no effect
    fresh = backend.connect()
    assert fresh["x"]._run() == 5
    # fresh reads ask the server before each statement; local reads use the cache alone
    assert _server_pings(fresh, lambda: fresh["x"]._run()) >= 1
    assert _server_pings(local, lambda: local["x"]._run()) == 0
    assert local["x"]._run() == 5


def test_a_cached_read_loads_nothing(db):
    db["l"] = list(range(10))
    db["d"] = {"k": {"deep": [1, 2]}}
    assert db["l"][3]._run() == 3 and db["d"]["k"]["deep"][1]._run() == 2
    _tm, conn = db._session.connection(replica=True)
    conn.getTransferCounts(clear=True)
    for _ in range(5):
        assert db["l"][3]._run() == 3
        assert db["d"]["k"]["deep"][1]._run() == 2
    loads, stores = conn.getTransferCounts()
    assert (loads, stores) == (0, 0)


def test_a_path_of_another_database_is_copied_as_a_value(db, tmp_path):
    with zpydb.connect(str(tmp_path / "other.fs")) as other:
        other["src"] = {"a": [1]}
        db["copy"] = other["src"]
        db["list"] = []
        db["list"].append(other["src"]["a"])
    assert db["copy"]._run() == {"a": [1]} and db["list"]._run() == [[1]]


def test_messages_name_types_with_the_right_article(db):
    """Issue 11 item 15: "db['x'] is a int" -> "is an int"; None is "None"."""
    db["n"] = 5
    db["z"] = None
    db["s"] = "text"
    with pytest.raises(zpydb.NotAContainerError, match=r"db\['n'\] is an int, not a dict"):
        db["n"]["x"]._run()
    with pytest.raises(zpydb.NotAContainerError, match=r"db\['z'\] is None, not a dict"):
        db["z"][0]._run()
    with pytest.raises(zpydb.NotAContainerError, match="an int has no method append"):
        db["n"].append(1)
    with pytest.raises(zpydb.NotAContainerError, match="an int has no items"):
        len(db["n"])
    assert len(db["s"]) == 4                # a str value has a length (issue 13 item 2)
