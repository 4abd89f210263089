"""written.py: what a transaction records it wrote, and when that rules a path out.

The property that matters: ``may_change`` never says False for a write that
did change the value at the path (that would hide a change from a history).
Checked against plain dicts and lists, with Python's own indexing.
"""

import copy
import pickle

from hypothesis import event, given, settings
from hypothesis import strategies as st

from zpydb import written
from zpydb.safety import plain_loads

KEYS = st.one_of(st.sampled_from(["a", "b"]), st.integers(-3, 3))
TREES = st.recursive(st.integers(0, 3),
                     lambda inner: st.one_of(st.lists(inner, max_size=4),
                                             st.dictionaries(st.sampled_from(["a", "b"]), inner,
                                                             max_size=3)),
                     max_leaves=10)
SENTINEL = object()


def value_at(tree, steps):
    node = tree
    for step in steps:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return "absent"
    return node


def write(tree, steps, how):
    """Change the tree at ``steps`` the way a statement on that path would; False if it cannot."""
    try:
        if how == "set":
            if not steps:
                return False
            parent = value_at(tree, steps[:-1])
            if isinstance(parent, dict) and isinstance(steps[-1], str):
                parent[steps[-1]] = SENTINEL
            elif isinstance(parent, list) and isinstance(steps[-1], int):
                parent[steps[-1]] = SENTINEL      # IndexError: no such statement
            else:
                return False
            return True
        node = value_at(tree, steps)             # a method called on the container
        if isinstance(node, list):
            node.insert(0, SENTINEL) if how == "insert" else node.append(SENTINEL)
            return True
        if isinstance(node, dict) and node:
            node.pop(sorted(node)[0])
            return True
        return False
    except IndexError:
        return False


def some_path(data, tree):
    """A path into ``tree``: mostly existing steps (with negative indexes), now and then not."""
    steps, node = [], tree
    while data.draw(st.integers(0, 3)) and isinstance(node, (dict, list)):
        if node and data.draw(st.integers(0, 4)):
            step = data.draw(st.sampled_from(sorted(node)) if isinstance(node, dict)
                             else st.integers(-len(node), len(node) - 1))
        else:
            step = data.draw(KEYS)
        steps.append(step)
        node = value_at(node, (step,))
    return tuple(steps)


@settings(max_examples=1000, deadline=None)
@given(TREES, st.sampled_from(["set", "insert", "append", "pop"]), st.data())
def test_a_write_that_changes_a_path_is_never_ruled_out(tree, how, data):
    tree = {"root": tree}
    path, wrote = some_path(data, tree), some_path(data, tree)
    before = copy.deepcopy(value_at(tree, path))
    if not write(tree, wrote, how):
        return
    after = value_at(tree, path)
    recorded = pickle.loads(pickle.dumps(written.encode([wrote]), 3))
    over_zeo = tuple(tuple(p) for p in recorded)   # msgpack hands back tuples
    if before != after or (after is SENTINEL) != (before is SENTINEL):
        event("the write changed the path")
        assert written.may_change(recorded, path), (tree, path, wrote, how)
        assert written.may_change(over_zeo, path)


def test_writes_elsewhere_are_ruled_out():
    assert not written.may_change([["a", "b"]], ("a", "c"))
    assert not written.may_change([["x"]], ("a",))
    assert not written.may_change([["l", 4]], ("l", 5))
    assert not written.may_change([["d", ("t", 1)]], ("d", ("t", 2)))
    assert not written.may_change((("d", ("t", 1)),), ("d", ["t", 2]))


def test_what_may_be_the_same_place_is_not_ruled_out():
    assert written.may_change([["a"]], ("a", "b", "c"))           # a parent replaced
    assert written.may_change([["a", "b", "c"]], ("a",))          # inside the value
    assert written.may_change([["l", -1]], ("l", 4))              # -1 is some index
    assert written.may_change([["l", 4]], ("l", -2))
    assert written.may_change([["d", 1]], ("d", 1.0))             # one dict key
    assert written.may_change([["d", 1]], ("d", True))
    assert written.may_change([["l"]], ("l", slice(0, 2)))
    assert written.may_change([["d", ("t", 1)]], ("d", ["t", 1]))
    assert written.may_change([[]], ("anything",))                # the root
    assert written.may_change(None, ("a",))                       # nothing recorded
    assert written.may_change("garbage", ("a",))
    assert written.may_change([["x"], "garbage"], ("a",))


def test_what_is_recorded_is_plain_small_data():
    class Key(str):
        pass
    recorded = written.encode([("a", b"bytes", "c"), ("b", Key("k"), 1), ("c", "x" * 500),
                               ("d", ("t", 1), slice(1, 2)), ("a", b"other")])
    assert recorded == [["a"], ["b"], ["c"], ["d", ("t", 1)]]
    assert plain_loads(pickle.dumps(recorded, 3)) == recorded     # no class in it


def test_many_paths_become_their_first_steps_then_nothing():
    many = [("d", i) for i in range(500)]
    assert written.encode(many) == [["d"]]
    assert written.encode([(f"k{i}", 1) for i in range(written.MAX_PATHS)]) is not None
    assert written.encode([(f"k{i}", 1) for i in range(written.MAX_PATHS + 1)]) is None


def test_what_is_recorded_crosses_zeos_msgpack():
    """ZEO sends the transaction's extension as msgpack: an int beyond 64 bits or a str
    with a lone surrogate (both fine as zpydb keys) made tpc_begin fail to encode and
    the write end as a disconnect.  Such a step ends its path (a shorter path covers
    more), and everything recorded packs."""
    import msgpack
    recorded = written.encode([("d", 2 ** 70, "x"), ("e", "\ud800", 1), ("f", -2 ** 63),
                               ("g", 2 ** 64 - 1), ("h", (1, 2 ** 64)), ("i", "é", 2 ** 63)])
    assert recorded == [["d"], ["e"], ["f", -2 ** 63], ["g", 2 ** 64 - 1], ["h"],
                        ["i", "é", 2 ** 63]]
    assert msgpack.unpackb(msgpack.packb(recorded), strict_map_key=False) == recorded


def test_writes_under_keys_msgpack_cannot_carry_work_over_zeo(zeo_server):
    import zpydb
    db = zpydb.connect(zeo_server.url, wait_timeout=10)
    try:
        for number, key in enumerate((2 ** 70, -2 ** 70, "\ud800", (1, 2 ** 70))):
            name = f"d{number}"  # keys of one dict must be comparable
            db[name] = {}
            db[name][key] = [key]
            assert db[name][key].value() == [key]
            assert db[name][key].history(1)[0]["note"].startswith(f"db['{name}']")
    finally:
        db.close()
