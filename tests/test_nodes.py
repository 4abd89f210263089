"""Plain <-> persistent conversion (nodes.py) and the BigList node (biglist.py)."""

import random

import pytest
from BTrees.OOBTree import OOBTree
from hypothesis import given, settings
from hypothesis import strategies as st
from persistent.list import PersistentList

import zpydb
from zpydb import nodes
from zpydb.biglist import BIG_LIST_THRESHOLD, CHUNK_SIZE, BigList


def test_dicts_become_oobtrees_and_lists_persistent_lists():
    node = nodes.to_node({"a": [1, {"b": range(3)}], "t": (1, ("x",))})
    assert isinstance(node, OOBTree)
    assert isinstance(node["a"], PersistentList) and isinstance(node["a"][1], OOBTree)
    assert list(node["a"][1]["b"]) == [0, 1, 2]
    assert node["t"] == (1, ("x",))
    assert nodes.to_plain(node) == {"a": [1, {"b": [0, 1, 2]}], "t": (1, ("x",))}


def test_big_lists_become_chunked():
    node = nodes.to_node(list(range(BIG_LIST_THRESHOLD + 1)))
    assert isinstance(node, BigList) and len(node) == BIG_LIST_THRESHOLD + 1
    assert isinstance(nodes.to_node(list(range(10))), PersistentList)


@pytest.mark.parametrize("value", [object(), {1, 2}, frozenset(), 1j, print])
def test_unstorable_values_name_the_path(value):
    with pytest.raises(zpydb.UnstorableValueError) as info:
        nodes.to_node({"ok": [1, value]}, "db['x']")
    assert info.value.path == "db['x']['ok'][1]"
    assert isinstance(info.value, TypeError)


def test_tuples_hold_only_scalars():
    with pytest.raises(zpydb.UnstorableValueError, match="tuple"):
        nodes.to_node((1, [2]), "db['t']")


@pytest.mark.parametrize("keys", [["a", 1], ["a", b"b"], [("l", 4), ("l", "x")], [1, (1,)]])
def test_unorderable_keys_are_refused(keys):
    with pytest.raises(zpydb.UnorderableKeyError):
        nodes.to_node(dict.fromkeys(keys, 0), "db['m']")


@pytest.mark.parametrize("key", [None, object(), (1, frozenset())])
def test_unsupported_key_types(key):
    with pytest.raises(zpydb.UnstorableValueError):
        nodes.to_node({key: 1}, "db")


def test_key_fits():
    tree = nodes.to_node({"a": 1, "b": 2})
    assert nodes.key_fits(tree, "zz") and not nodes.key_fits(tree, 1)
    assert nodes.key_fits(OOBTree(), 1)


def test_biglist_promotion_through_appends(fdb):
    fdb["l"] = list(range(BIG_LIST_THRESHOLD))
    fdb["l"].append("one more")
    tm, conn = fdb._session.connection()
    tm.begin()
    assert isinstance(conn.root()["zpydb"]["l"], BigList)
    tm.abort()
    assert fdb["l"][-1]._run() == "one more" and len(fdb["l"]) == BIG_LIST_THRESHOLD + 1
    fdb.undo()                                   # the promotion is one undoable change
    assert len(fdb["l"]) == BIG_LIST_THRESHOLD


def test_biglist_append_writes_one_chunk(fdb):
    fdb["l"] = list(range(5 * CHUNK_SIZE + 3))
    storage_size = fdb._session.db.storage.getSize()
    fdb["l"].append(1)
    grew = fdb._session.db.storage.getSize() - storage_size
    assert grew < 8 * CHUNK_SIZE                 # one chunk, not the whole list


OPS = st.lists(st.tuples(st.sampled_from(["append", "pop", "insert", "set", "del", "slice",
                                          "popi", "sort", "reverse", "extend"]),
                         st.integers(-3000, 3000)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, 3 * CHUNK_SIZE), ops=OPS)
def test_biglist_behaves_like_a_list(start, ops):
    ref = list(range(start))
    big = BigList(ref)
    for op, n in ops:
        if op == "append":
            ref.append(n), big.append(n)
        elif op == "extend":
            ref.extend(range(n % 700)), big.extend(range(n % 700))
        elif op == "insert":
            ref.insert(n, n), big.insert(n, n)
        elif op == "sort":
            ref.sort(reverse=n % 2 == 0), big.sort(reverse=n % 2 == 0)
        elif op == "reverse":
            ref.reverse(), big.reverse()
        elif op == "slice":
            ref[n % 50:n % 50 + 20] = [n]
            big[n % 50:n % 50 + 20] = [n]
        elif ref:
            i = n % len(ref)
            if op == "pop":
                assert ref.pop() == big.pop()
            elif op == "popi":
                assert ref.pop(i) == big.pop(i)
            elif op == "set":
                ref[i] = -n
                big[i] = -n
            elif op == "del":
                del ref[i]
                del big[i]
        assert len(big) == len(ref)
    assert list(big) == ref
    if ref:
        assert big[-1] == ref[-1] and big[::7] == ref[::7]
    with pytest.raises(IndexError):
        big[len(ref)]


def test_biglist_random_reads():
    items = [random.random() for _ in range(3 * CHUNK_SIZE)]
    big = BigList(items)
    for _ in range(200):
        i = random.randrange(-len(items), len(items))
        assert big[i] == items[i]


def test_find_treats_keys_of_another_kind_as_absent():
    tree = nodes.to_node({("a", 1): 1, ("b", "x"): 2, ("c", 1): 3})
    assert nodes.find(tree, ("b", "x")) == 2
    assert nodes.find(tree, ("b", 2)) is nodes.MISSING    # TypeError inside the tree
    assert nodes.find(tree, [1], None) is None             # never storable: not compared
    assert not nodes.key_fits(tree, ("b", 2)) and nodes.key_fits(tree, ("z", 1))


def test_exact_key_and_short_repr():
    class S(str):
        pass

    key = nodes.exact_key((S("a"), (1, True)))
    assert key == ("a", (1, True)) and type(key[0]) is str
    assert nodes.exact_key([1]) is None and nodes.exact_key((None,)) is None
    assert nodes.exact_key((((1,),),), room=2) is None
    assert nodes.short_repr(2 ** 20000) == "<int of about 6021 digits>"
    assert nodes.short_repr("x" * 500, 10) == "'xxxxxx..."
    assert nodes.describe_type(1) == "an int" and nodes.describe_type(None) == "None"


def test_to_plain_without_recursion_matches():
    value = {"a": [1, (2, (3,)), {"b": [4, None]}], "c": ()}
    node = nodes.to_node(value)
    assert nodes._to_plain_deep(node) == nodes.to_plain(node) == value
    assert type(nodes._to_plain_deep(node)["a"][1][1]) is tuple


def test_short_repr_never_runs_a_subclass_repr():
    class Hostile(int):
        def __repr__(self):
            raise RuntimeError("ran")

    assert nodes.short_repr(Hostile(3)) == "3" and nodes.short_repr(True) == "True"
    assert nodes.short_repr(Hostile(2 ** 20000)) == "<int of about 6021 digits>"


class _Key(str):
    """A str subclass key: not a plain record, so the long way converts it."""


SCALAR_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                          st.text(max_size=5), st.binary(max_size=5))
RECORD_KEYS = st.one_of(st.text(max_size=4), st.text(max_size=4).map(_Key), st.integers(0, 9))


@given(record=st.dictionaries(
    RECORD_KEYS, st.one_of(SCALAR_VALUES, st.lists(SCALAR_VALUES, max_size=2)), max_size=40))
@settings(max_examples=300, deadline=None)
def test_the_short_way_for_plain_records_stores_what_the_long_way_stores(record):
    """``plain_dict_node`` takes exactly the dicts of exact str keys and scalar values,
    and stores them as to_node always did; every other dict is left to the long way."""
    simple = all(type(k) is str for k in record) and \
        all(type(v) in nodes.SCALARS for v in record.values())
    node = nodes.plain_dict_node(record)
    assert (node is not None) == simple
    try:
        converted = nodes.to_node(record, "db['r']")
    except zpydb.UnorderableKeyError:  # str and int keys mixed: never the short way
        assert not simple
        return
    plain = nodes.to_plain(converted)
    if all(isinstance(k, str) for k in record):
        assert plain == {str(k): v for k, v in record.items()}
    else:
        assert plain == record
    assert all(type(k) in (str, int) for k in plain)
    if simple:
        assert nodes.to_plain(node) == plain
        assert type(node) is type(converted) and len(node) == len(record)
