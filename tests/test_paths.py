"""Lazy paths, reads and writes (paths.py, ops.py), on every backend."""

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# -- ``+=`` on a list: an in-place extend ------------------------------------------

def _operand(kind, items):
    """A fresh right-hand side of ``+=`` holding ``items`` (iterators are one-shot)."""
    return {"list": lambda: list(items), "tuple": lambda: tuple(items),
            "iterator": lambda: iter(list(items)), "generator": lambda: (x for x in items),
            "range": lambda: range(len(items)), "str": lambda: "".join(map(str, items))[:5],
            "dict": lambda: dict.fromkeys(items), "map": lambda: map(str, items)}[kind]()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.sampled_from([0, 3, 1020, 1024, 1500, 2048]),
       steps=st.lists(st.tuples(st.sampled_from(["list", "tuple", "iterator", "generator",
                                                  "range", "str", "dict", "map"]),
                                st.lists(st.integers(0, 99), max_size=600)),
                      min_size=1, max_size=4))
def test_iadd_on_a_list_is_pythons_list_iadd(fdb, size, steps):
    """Small lists, lists crossing the BigList threshold, BigLists across chunk ends."""
    model = list(range(size))
    fdb["l"] = model
    for kind, items in steps:
        before = transaction_count(fdb)
        target = fdb["l"]
        target += _operand(kind, items)
        model += _operand(kind, items)
        assert transaction_count(fdb) <= before + 1  # none for an empty operand
        assert len(fdb["l"]) == len(model)
    assert fdb["l"].value() == model
    assert list(reversed(fdb["l"])) == model[::-1]


@pytest.mark.parametrize("operand", [5, None, 2.5, True])
def test_iadd_of_a_non_iterable_is_a_type_error_and_writes_nothing(db, operand):
    db["l"] = [1, 2]
    db["big"] = list(range(2000))
    last = db._session.db.lastTransaction()
    for key in ("l", "big"):
        with pytest.raises(TypeError, match="not iterable") as info:
            db[key] += operand
        assert isinstance(info.value, zpydb.OperationError) and f"db['{key}']" in str(info.value)
    with pytest.raises(TypeError):
        python = [1, 2]
        python += operand
    assert db._session.db.lastTransaction() == last
    assert db["l"].value() == [1, 2] and len(db["big"]) == 2000


def test_iadd_of_an_iterator_that_fails_writes_nothing(db):
    db["l"] = [1, 2]
    last = db._session.db.lastTransaction()

    def failing():
        yield 3
        raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke"):  # raised as Python raises it
        db["l"] += failing()
    assert db._session.db.lastTransaction() == last and db["l"].value() == [1, 2]
    db["n"] = 1
    generator = (x for x in [1, 2])
    with pytest.raises(TypeError, match="'int' and 'generator'"):  # as 1 + generator
        db["n"] += generator
    assert list(generator) == [1, 2]  # not consumed by the refusal
    assert db["n"] == 1


def test_iadd_of_a_generator_survives_a_conflict_retry(backend):
    """The first attempt conflicts (another client replaces an item meanwhile);
    the retry appends the same items, read once from the generator."""
    db = backend.connect()
    db["l"] = ["a", "b"]
    other = backend.connect() if backend.name != "file" else None
    pulled = []

    def replace_first():
        if other is not None:
            other["l"][0] = "changed"
        else:  # one FileStorage per process: another thread's connection
            worker = threading.Thread(target=lambda: db["l"].__setitem__(0, "changed"))
            worker.start()
            worker.join(30)

    def items():
        for x in ("x", "y", "z"):
            pulled.append(x)
            if len(pulled) == 1:
                replace_first()  # committed inside our first attempt: it must conflict
            yield x

    db["l"] += items()
    assert pulled == ["x", "y", "z"]
    assert db["l"].value() == ["changed", "b", "x", "y", "z"]
    assert last_note(db).startswith("db['l'] += <generator")


def test_iadd_on_a_biglist_loads_only_its_end(fdb):
    fdb["big"] = list(range(200_000))  # 391 chunks of 512
    tm, conn = fdb._session.connection()
    conn.cacheMinimize()
    fdb["big"] += list(range(10))
    loaded = [obj for _, obj in conn._cache.lru_items()
              if type(obj).__name__ == "Chunk" and obj._p_changed is not None]
    assert len(loaded) <= 2, f"{len(loaded)} chunks loaded for += of 10 items"
    assert len(fdb["big"]) == 200_010 and fdb["big"][-1] == 9


def test_iadd_of_a_path_is_read_in_the_same_transaction(db):
    db["l"], db["m"] = [1], [2, 3]
    before = transaction_count(db)
    db["l"] += db["m"]
    assert db["l"].value() == [1, 2, 3] and transaction_count(db) == before + 1
    entry = db.history(1)[0]   # the statement's own transaction, with its note and kind
    assert entry["note"] == "db['l'] += db['m']" and entry["kind"] == "write"
    db["n"] = 1
    db["n"] += db["l"][2]
    assert db["n"] == 4 and last_note(db) == "db['n'] += db['l'][2]"
    db.undo()
    assert db["n"] == 1
    db.undo()
    db.undo()
    assert "n" not in db and db["l"].value() == [1]


def test_iadd_in_a_block_registers_the_list_record_only(backend):
    db, other = backend.connect(), backend.connect()
    db["big"] = list(range(5000))
    with db.transaction() as t:
        t["big"] += [1, 2]
        assert len(t._executor.read_set) <= 6    # path and the BigList header, not 10 chunks
    assert len(db["big"]) == 5002
    with pytest.raises(zpydb.ConflictError):    # += read the list: a block stays serializable
        with db.transaction() as t:
            t["big"] += ["mine"]
            other["big"].append("theirs")
    assert db["big"][-1] == "theirs" and len(db["big"]) == 5003


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
