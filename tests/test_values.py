"""Bad values and bad statements: every one is a zpydb error naming the path, or works.

Issue 11 item 10: deep nesting, cycles, huge ints, wrong arguments, slices with
step 0, mixed-type sorts, ``+=`` of mismatched types, lookups with keys of
another kind, objects whose ``__eq__``/``__hash__`` raise.  After each failed
statement the stored tree is unchanged.  The differential fuzzing test against
a plain dict/list model is in test_values_fuzz.py.
"""

import copy
import inspect
import io
import json
import os
import pprint

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

import zpydb
from tests.conftest import BACKENDS, make_backend
from tests.helpers import transaction_count
from zpydb import export, nodes
from zpydb.nodes import MAX_DEPTH


def nest_lists(levels, leaf=1):
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def nest_tuples(levels):
    value = 1
    for _ in range(levels):
        value = (value,)
    return value


def path_to(db, steps):
    for step in steps:
        db = db[step]
    return db


class Evil:
    """An object whose comparisons and hash raise."""

    def __eq__(self, other):
        raise RuntimeError("eq")

    def __lt__(self, other):
        raise RuntimeError("lt")

    __gt__ = __le__ = __ge__ = __lt__

    def __hash__(self):
        raise RuntimeError("hash")


@pytest.fixture
def filled(db):
    db["d"] = {"a": 1}
    db["l"] = [3, 1, 2]
    db["m"] = [1, "a"]
    db["n"] = 5
    db["t"] = {("a", 1): 1, ("b", "x"): 2, ("c", 1): 3}
    return db


def refuses(db, statement, error=zpydb.Error, match=None):
    """Run ``statement``; it must raise ``error`` (a zpydb error) and change nothing."""
    before, count = db._run(), transaction_count(db)
    with pytest.raises(error, match=match) as info:
        statement()
    assert isinstance(info.value, zpydb.Error)
    assert db._run() == before
    assert transaction_count(db) == count
    return info.value


# -- the statements of the issue ------------------------------------------------

@pytest.mark.parametrize("statement, error, match", [
    (lambda db: db["d"].pop(), zpydb.BadArgumentError, r"db\['d'\]: pop\(\) takes 1 to 2"),
    (lambda db: db["l"].insert("x", 1), zpydb.BadArgumentError, "integer index, not a str"),
    (lambda db: db["l"][::0]._run(), zpydb.BadArgumentError, r"db\['l'\]\[::0\]: bad slice"),
    (lambda db: db["l"].__delitem__(slice(None, None, 0)), zpydb.BadArgumentError, "bad slice"),
    (lambda db: db["l"].__setitem__(slice(None, None, 2), [1]), zpydb.BadArgumentError, "size"),
    (lambda db: db["m"].sort(), zpydb.OperationError, r"db\['m'\]: cannot sort"),
    (lambda db: db["l"].sort(key=lambda x: 1 / 0), zpydb.OperationError, "ZeroDivisionError"),
    (lambda db: db["l"].pop(0, 1), zpydb.BadArgumentError, "pop"),
    (lambda db: db["l"].pop("x"), zpydb.BadArgumentError, "integer index"),
    (lambda db: db["l"].extend(5), zpydb.BadArgumentError, "iterable"),
    (lambda db: db["d"].update(5), zpydb.BadArgumentError, "update"),
    (lambda db: db["l"].index(3, "x"), zpydb.BadArgumentError, "integer index"),
    (lambda db: db["l"].count(Evil()), zpydb.OperationError, "RuntimeError"),
    (lambda db: db["l"].remove(Evil()), zpydb.OperationError, "RuntimeError"),
    (lambda db: Evil() in db["l"], zpydb.OperationError, "RuntimeError"),
    (lambda db: db["l"] == Evil(), zpydb.OperationError, "RuntimeError"),
    (lambda db: db["n"] < "a", zpydb.OperationError, r"db\['n'\] < 'a'"),
    (lambda db: int(db["d"]), zpydb.OperationError, "a dict cannot be used as an int"),
    (lambda db: db["l"][2 ** 100]._run(), zpydb.BadIndexError, "out of range"),
    (lambda db: db["d"].__setitem__([1], 1), zpydb.UnstorableValueError, "dict keys"),
    (lambda db: db["d"].__setitem__(Evil(), 1), zpydb.UnstorableValueError, "dict keys"),
    (lambda db: db.__setitem__("x", {1, 2}), zpydb.UnstorableValueError, "type set"),
    (lambda db: db.__setitem__("x", [Evil()]), zpydb.UnstorableValueError, "type Evil"),
])
def test_bad_statements_are_zpydb_errors_and_change_nothing(filled, statement, error, match):
    refuses(filled, lambda: statement(filled), error, match)


def test_augmented_assignment_of_mismatched_types(filled):
    def add_str():
        filled["n"] += "x"
    error = refuses(filled, add_str, zpydb.OperationError, r"db\['n'\] \+= 'x'")
    assert error.path == "db['n']" and isinstance(error.__cause__, TypeError)


def test_lookups_with_keys_of_another_kind_find_nothing(filled):
    """('b', 2) meets ('b', 'x') inside the BTree (TypeError there), not at its ends."""
    with pytest.raises(zpydb.KeyNotFoundError, match=r"db\['t'\]\[\('b', 2\)\]: no such key"):
        filled["t"][("b", 2)]._run()
    assert ("b", 2) not in filled["t"]
    assert filled["t"].get(("b", 2), "none") == "none"
    assert filled["t"].pop(("b", 2), "none") == "none"
    refuses(filled, lambda: filled["t"].pop(("b", 2)), zpydb.KeyNotFoundError)
    refuses(filled, lambda: filled["t"].__delitem__(("b", 2)), zpydb.KeyNotFoundError)
    refuses(filled, lambda: filled["t"].__setitem__(("b", 2), 1), zpydb.UnorderableKeyError)
    for key in (1, None, [1], Evil(), (Evil(),)):
        assert key not in filled["d"] and filled["d"].get(key) is None
        with pytest.raises(zpydb.KeyNotFoundError):
            filled["d"][key]._run()


def test_subclass_keys_are_stored_as_builtin_types(fdb):
    class Key(str):
        def __lt__(self, other):
            raise RuntimeError("never called")

    fdb["d"] = {Key("a"): 1}
    fdb["d"][Key("b")] = 2
    assert fdb["d"][Key("a")]._run() == 1 and Key("b") in fdb["d"]
    assert [type(k) for k in fdb["d"].keys()] == [str, str]


# -- nesting ---------------------------------------------------------------------

def test_nesting_up_to_the_limit_stores_and_everything_reads_it(db):
    """The deepest value zpydb stores reads, prints, exports and imports back."""
    deep = nest_lists(MAX_DEPTH - 2, leaf=(1, ("x",)))  # tuples count as levels too
    db["v"] = nest_lists(MAX_DEPTH)
    db["w"] = deep
    assert db["v"]._run() == nest_lists(MAX_DEPTH) and db["w"]._run() == deep
    pprint.pformat(db._run())
    for indent in (None, 2):
        out = io.StringIO()
        export.export_json(db, (), out, indent=indent, progress=False)
    export.import_json(db, io.StringIO(out.getvalue()), progress=False)
    assert db["w"]._run() == deep


@pytest.mark.parametrize("value", [
    nest_lists(MAX_DEPTH + 1), nest_lists(495), nest_lists(100_000),
    {"k": nest_lists(MAX_DEPTH)}, nest_lists(MAX_DEPTH - 1, leaf=(1, (2,))),
    [nest_tuples(MAX_DEPTH)], {nest_tuples(MAX_DEPTH): 1},
    json.loads("[" * 500 + "]" * 500),  # JSONTestSuite i_structure_500_nested_arrays.json
])
def test_too_deep_values_are_refused_with_the_path(db, value):
    error = refuses(db, lambda: db.__setitem__("v", value), zpydb.UnstorableValueError)
    assert error.path.startswith("db['v']")
    assert f"at most {MAX_DEPTH} levels" in error.message


def test_a_dict_of_scalars_counts_towards_the_limit_too(db):
    """The short way of set_item (a dict of str keys and scalars) checks the depth
    as the long way does: a dict at level MAX_DEPTH is stored, one deeper is not."""
    db["d"] = {}
    steps = ["d"]
    for _ in range(MAX_DEPTH - 2):                     # dicts down to level MAX_DEPTH - 1
        path_to(db, steps)["k"] = {}
        steps.append("k")
    parent = path_to(db, steps)
    parent["x"] = {"a": 1, "b": "two"}                 # level MAX_DEPTH: fine
    assert parent["x"]._run() == {"a": 1, "b": "two"}
    error = refuses(db, lambda: parent["x"].__setitem__("y", {"a": 1}),
                    zpydb.UnstorableValueError, "levels below db")
    assert error.path == "db" + "".join(f"[{s!r}]" for s in steps) + "['x']['y']"
    parent["x"]["y"] = 1                               # a scalar there is fine


def test_the_limit_counts_from_db_for_every_kind_of_write(db):
    """Values written at a deep path: set, append, insert, extend, update, setdefault, slice, +=."""
    db["a"] = nest_lists(MAX_DEPTH - 2, leaf=[])      # innermost [] at level MAX_DEPTH - 1
    inner = path_to(db, ["a"] + [0] * (MAX_DEPTH - 2))
    inner.append([])                                   # a list at level MAX_DEPTH: fine
    deepest = inner[0]
    writes = [
        lambda: deepest.append([]), lambda: deepest.insert(0, {}), lambda: deepest.extend([()]),
        lambda: deepest.__setitem__(slice(0, 0), [[]]), lambda: inner.__setitem__(0, [[]]),
        lambda: inner.append([[]]),
    ]
    for write in writes:
        refuses(db, write, zpydb.UnstorableValueError, "levels below db")

    def augment():
        deepest_list = inner
        deepest_list += [[[]]]
    refuses(db, augment, zpydb.UnstorableValueError)
    db["d"] = nest_lists(MAX_DEPTH - 2, leaf={})
    deep_dict = path_to(db, ["d"] + [0] * (MAX_DEPTH - 2))
    deep_dict.update({"y": [1]})                       # a list at level MAX_DEPTH: fine
    for write in (lambda: deep_dict.update({"x": [[1]]}), lambda: deep_dict.setdefault("x", [{}])):
        refuses(db, write, zpydb.UnstorableValueError)
    deep_dict["x"] = 1                                  # scalars are fine at any level
    assert path_to(db, ["d"] + [0] * (MAX_DEPTH - 2))._run() == {"x": 1, "y": [1]}
    db["k"] = nest_lists(MAX_DEPTH - 2, leaf={})
    keyed = path_to(db, ["k"] + [0] * (MAX_DEPTH - 2))  # a dict at level MAX_DEPTH - 1
    refuses(db, lambda: keyed.__setitem__(((1,),), 1), zpydb.UnstorableValueError, "dict keys")
    keyed[(1,)] = 2                                     # a tuple key at the last level is fine
    assert keyed._run() == {(1,): 2}


def test_data_nested_deeper_by_other_code_still_reads(fdb):
    """to_plain/read have no recursion limit: data from before the limit can be read."""
    session = fdb._session
    tm, conn = session.open_private()
    tm.begin()
    conn.root()["zpydb"]["old"] = nodes.to_node([])
    node = conn.root()["zpydb"]["old"]
    for _ in range(3000):
        node.append(nodes.make_list_node([]))
        node = node[0]
    tm.commit()
    conn.close()
    value = fdb["old"]._run()
    depth = 0
    while value:
        value, depth = value[0], depth + 1
    assert depth == 3000
    with fdb.transaction() as t:  # blocks register everything read, without recursion
        assert len(t["old"]) == 1


# -- cycles and huge values ------------------------------------------------------

def test_cycles_are_refused_naming_the_path(db):
    loop = [1]
    loop.append(loop)
    error = refuses(db, lambda: db.__setitem__("c", loop), zpydb.UnstorableValueError, "itself")
    assert error.path == "db['c'][1]"
    mapping = {"a": {}}
    mapping["a"]["b"] = mapping
    refuses(db, lambda: db.__setitem__("c", mapping), zpydb.UnstorableValueError, "cycle")
    db["l"] = []
    refuses(db, lambda: db["l"].append(loop), zpydb.UnstorableValueError, r"db\['l'\]\[0\]\[1\]")
    shared = [1]
    db["ok"] = [shared, shared, {"x": shared}]  # the same list twice is not a cycle
    assert db["ok"]._run() == [[1], [1], {"x": [1]}]


def test_huge_ints_store_and_read(db):
    big = 2 ** 20000
    db["big"] = big
    db["l"] = [big]
    db["d"] = {big: "key"}
    assert db["big"]._run() == big and db["l"][0]._run() == big and db["d"][big]._run() == "key"
    assert db.history(1)[0]["note"].startswith("db['d'] = {<int of about 6021 digits>")
    with pytest.raises(zpydb.KeyNotFoundError, match="<int of about"):
        db["d"][big + 1]._run()
    assert nodes.short_repr(big) == "<int of about 6021 digits>"


def test_a_failing_user_mapping_is_an_unstorable_value(db):
    class Broken(dict):
        def __iter__(self):
            raise RuntimeError("no")

    refuses(db, lambda: db.__setitem__("x", {"a": Broken(a=1)}), zpydb.UnstorableValueError,
            r"db\['x'\]\['a'\]: reading the Broken")


# -- failed statements inside a block leave nothing behind ------------------------

def test_failed_statements_inside_a_block_leave_nothing(db):
    db["l"] = [3, 1, "a"]
    db["d"] = {"a": 1}
    loop = []
    loop.append(loop)
    with db.transaction() as t:
        t["l"].append(4)
        for statement in (lambda: t["l"].sort(), lambda: t["l"].insert("x", 0),
                          lambda: t["d"].update({"b": 2, 3: 4}), lambda: t["d"].pop(),
                          lambda: t.__setitem__("x", loop),
                          lambda: t["l"].append(nest_lists(MAX_DEPTH))):
            with pytest.raises(zpydb.Error):
                statement()
        assert t._run() == {"l": [3, 1, "a", 4], "d": {"a": 1}}
    assert db._run() == {"l": [3, 1, "a", 4], "d": {"a": 1}}


# -- differential fuzzing against a plain dict/list model ---------------------------
#
# The model is zpydb's specification applied to plain Python values: Python's own
# semantics, plus zpydb's rules (only dicts and lists are subscripted, list indexes
# are ints but not bools, a write through a slice is refused, stored values must
# be storable: see ``storable``).  Every statement runs on both; when the model
# fails, zpydb must raise a zpydb.Error and leave the tree unchanged, and when the
# model succeeds zpydb must return the same result.

class ModelError(Exception):
    """The model's verdict: zpydb must refuse this statement."""


def m_child(node, step, for_write=False):
    """``node[step]`` as zpydb reads it (a slice of a list is a copy; a str, bytes or
    tuple value is indexed as Python does, for reading only)."""
    if isinstance(node, dict):
        if not m_hashable(step) or isinstance(step, slice) or step not in node:
            raise ModelError("no such key")
        return node[step]
    if isinstance(node, list):
        if isinstance(step, slice):
            return node[step]
        if type(step) is not int:
            raise ModelError("list index")
        return node[step]  # IndexError
    if not for_write and isinstance(node, (str, bytes, tuple)):
        return node[step]  # IndexError, TypeError, ValueError: zpydb errors too
    raise ModelError("not a container")


def m_hashable(key):
    try:
        hash(key)
    except Exception:
        return False
    return True


def m_traverse(root, steps, for_write=False):
    node = root
    for step in steps:
        if for_write and isinstance(step, slice):
            raise ModelError("write through a slice")
        node = m_child(node, step, for_write)
    return node


def m_plain(value):
    """What zpydb stores for a value it accepts (a range is a list)."""
    if isinstance(value, range):
        return list(value)
    if isinstance(value, list):
        return [m_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: m_plain(v) for k, v in value.items()}
    return value


M_SCALARS = (str, bytes, int, float, bool, type(None))


def storable(value, level, parents=()):
    """Would zpydb store ``value`` at ``level`` subscripts below db?"""
    if type(value) in M_SCALARS:
        return True
    if not isinstance(value, (list, tuple, dict, range)) or level > MAX_DEPTH:
        return False
    if id(value) in parents:
        return False
    parents += (id(value),)
    if isinstance(value, tuple):
        return all(isinstance(v, (tuple,) + M_SCALARS) and storable(v, level + 1) for v in value)
    if isinstance(value, (list, range)):
        return all(storable(v, level + 1, parents) for v in value)
    keys = list(value)
    if not all(nodes.exact_key(k, MAX_DEPTH - level) is not None for k in keys):
        return False
    try:
        sorted(keys)
    except TypeError:
        return False
    return all(storable(v, level + 1, parents) for v in value.values())


def m_run(model, statement):
    """Apply ``statement`` to a copy of the model: (new model, result) or ModelError."""
    new = copy.deepcopy(model)
    try:
        result = statement.on_model(new)
    except ModelError:
        raise
    except Exception as exc:  # Python's own verdict (KeyError, IndexError, TypeError...)
        raise ModelError(repr(exc)) from exc
    if not storable(new, 0):
        raise ModelError("the tree would hold an unstorable value")
    return new, result


class Statement:
    """One statement: ``on_db(db)`` and ``on_model(model)`` do the same thing."""

    def __init__(self, steps, op, *args, **kwargs):
        self.steps, self.op, self.args, self.kwargs = list(steps), op, args, kwargs

    def __repr__(self):
        return f"Statement({self.steps!r}, {self.op!r}, {self.args!r}, {self.kwargs!r})"

    # zpydb
    def on_db(self, db):
        op, args = self.op, self.args
        if op in ("set", "del", "iadd"):
            parent = path_to(db, self.steps[:-1])
            key = self.steps[-1]
            if op == "set":
                parent[key] = args[0]
            elif op == "del":
                del parent[key]
            else:
                parent[key] += args[0]
            return None
        target = path_to(db, self.steps)
        if op == "read":
            return target._run()
        if op == "len":
            return len(target)
        if op == "in":
            return args[0] in target
        if op == "iter":
            return sorted(target) if isinstance(self._kind, dict) else list(target)
        result = getattr(target, op)(*args, **self.kwargs)
        return sorted(result) if op in ("keys", "items") else result

    # the model
    def on_model(self, model):
        op, args = self.op, self.args
        self._kind = None
        if op in ("set", "del", "iadd"):
            return self._write_model(model)
        target = m_traverse(model, self.steps, for_write=op in WRITERS)
        self._kind = target
        if op == "read":
            return m_plain(target)
        if op in ("len", "iter", "in") and not isinstance(target, (dict, list, str, bytes, tuple)):
            raise ModelError("not a container")
        if op == "len":
            return len(target)
        if op == "in":
            if isinstance(target, dict):
                return m_hashable(args[0]) and args[0] in target
            return args[0] in target
        if op == "iter":
            return sorted(target) if isinstance(target, dict) else list(target)
        return self._method_model(target, op, args)

    def _write_model(self, model):
        parent = m_traverse(model, self.steps[:-1], for_write=True)
        key, level = self.steps[-1], len(self.steps)
        if self.op == "del":
            if isinstance(key, slice):
                if not isinstance(parent, list):
                    raise ModelError("slice of a non-list")
                del parent[key]
            else:
                m_child(parent, key, for_write=True)
                del parent[key]
            return None
        if self.op == "iadd":
            if not isinstance(parent, (dict, list)) or isinstance(key, slice):
                raise ModelError("augmented assignment target")
            current = m_child(parent, key)
            if isinstance(current, list):
                items = list(self.args[0])
                if not all(storable(m_plain(v), level + 1) for v in items):
                    raise ModelError("unstorable item")
                current.extend(m_plain(items))
                return None
            value = current + self.args[0]
        else:
            value = self.args[0]
        value = self._checked(value, level - isinstance(key, slice))
        if isinstance(parent, dict):
            if isinstance(key, slice) or not m_hashable(key):
                raise ModelError("bad key")
            parent[key] = value
        elif isinstance(parent, list):
            if isinstance(key, slice):
                if not isinstance(value, list):
                    raise ModelError("slice assignment needs a list")
                parent[key] = value
            elif type(key) is not int:
                raise ModelError("list index")
            else:
                parent[key] = value
        else:
            raise ModelError("not a container")
        return None

    @staticmethod
    def _checked(value, level):
        if not storable(value, level):
            raise ModelError("unstorable value")
        return m_plain(value)

    def _method_model(self, target, op, args):
        level = len(self.steps)
        if isinstance(target, list) and op in LIST_METHODS:
            if op in ("append", "insert"):
                self._checked(args[-1], level + 1)
                args = args[:-1] + (m_plain(args[-1]),)
            indexes = {"insert": args[:1], "pop": args[:1], "index": args[1:]}.get(op, ())
            if any(type(index) is not int for index in indexes):
                raise ModelError("index argument")
            if op == "insert":  # zpydb clamps any int, as list.insert does short of C's range
                args = (max(-len(target) - 1, min(len(target), args[0])), args[1])
            if op == "extend":
                items = list(args[0])
                for item in items:
                    self._checked(item, level + 1)
                args = (m_plain(items),)
            if op == "sort":
                target[:] = sorted(target, **self.kwargs)  # fails before changing anything
                return None
            return getattr(target, op)(*args)
        if isinstance(target, dict) and op in DICT_METHODS:
            if op in ("get", "pop", "setdefault") and not 1 <= len(args) <= 2:
                raise ModelError("arguments")
            missing = op in ("get", "pop") and (not m_hashable(args[0]) or args[0] not in target)
            if missing and (op == "get" or len(args) > 1):
                return args[1] if len(args) > 1 else None  # the default itself, as given
            if op in ("pop", "setdefault") and not m_hashable(args[0]):
                raise ModelError("unhashable key")
            if op == "popitem":
                if not target:
                    raise ModelError("empty")
                key = max(target)
                return key, target.pop(key)
            if op == "update":
                incoming = dict(*args)
                for value in incoming.values():
                    self._checked(value, level + 1)
                target.update(m_plain(incoming))
                return None
            if op == "setdefault" and args[0] not in target:
                args = (args[0], self._checked(args[1] if len(args) > 1 else None, level + 1))
            if op == "values":  # zpydb's dicts are in key order
                return [m_plain(target[key]) for key in sorted(target)]
            result = getattr(target, op)(*args)
            return sorted(result) if op in ("keys", "items") else m_plain(result)
        if isinstance(target, (str, bytes, tuple)) and op in ("index", "count"):
            return getattr(target, op)(*args)  # read-only sequences (issue 13 item 2)
        raise ModelError(f"no method {op}")


LIST_METHODS = {"append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear",
                "index", "count"}
DICT_METHODS = {"update", "setdefault", "pop", "popitem", "clear", "get", "keys", "values",
                "items"}
WRITERS = {"append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear", "update",
           "setdefault", "popitem"}


# -- the statements hypothesis draws --------------------------------------------------

SCALAR = (st.none() | st.booleans() | st.integers(-5, 5) | st.just(2 ** 70)
          | st.floats(allow_nan=False, width=32) | st.text(max_size=3) | st.binary(max_size=2))
KEY = st.text(max_size=2) | st.integers(-3, 3) | st.tuples(st.integers(0, 2), st.text(max_size=1))
VALUE = st.recursive(  # storable, mostly: dicts of one kind of key, tuples of scalars
    SCALAR | st.tuples(SCALAR, SCALAR),
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=2), inner, max_size=3)
                   | st.dictionaries(st.integers(-3, 3), inner, max_size=3)
                   | st.dictionaries(st.tuples(st.integers(0, 2), st.text(max_size=1)), inner,
                                     max_size=2)),
    max_leaves=8)


def cyclic(kind):
    value = [1] if kind else {"k": 1}
    if kind:
        value.append([value])
    else:
        value["self"] = {"again": value}
    return value


ODD = st.one_of(  # values zpydb refuses (or that sit right at the nesting limit)
    st.builds(nest_lists, st.integers(MAX_DEPTH - 3, MAX_DEPTH + 2)),
    st.builds(cyclic, st.booleans()), st.builds(Evil), st.just(range(3)), st.just(object()),
    st.frozensets(st.integers(0, 3), max_size=2), st.dictionaries(KEY, SCALAR, max_size=3),
    st.tuples(VALUE, VALUE))
ANY_VALUE = st.one_of(*[VALUE] * 8, ODD)
SLICE = st.builds(slice, st.none() | st.integers(-4, 4), st.none() | st.integers(-4, 4),
                  st.none() | st.integers(-2, 2))
ODD_STEP = st.one_of(st.sampled_from(["a", "b", "x", ("b", 2), 2 ** 70, None, True, 7, -9]),
                     SLICE, st.builds(Evil), st.just([1]))
OPS = sorted(LIST_METHODS | DICT_METHODS | {"read", "len", "in", "iter"})


def existing_path(data, model):
    """Steps into the model, descending at random through the dicts and lists in it."""
    steps, node = [], model
    while data.draw(st.integers(0, 2)) < 2:
        inner = [step for step in (node if isinstance(node, dict) else range(len(node)))
                 if isinstance(node[step], (dict, list))]
        if not inner:
            break
        step = data.draw(st.sampled_from(inner))
        steps.append(step)
        node = node[step]
    if data.draw(st.integers(0, 4)) == 4 and node:  # now and then down to a scalar
        step = real_step(data, node)
        steps.append(step)
        node = node[step]
    return steps, node


def real_step(data, node):
    if isinstance(node, dict):
        return data.draw(st.sampled_from(list(node)))
    return data.draw(st.integers(-len(node), len(node) - 1))


def any_step(data, node, new=True):
    """A subscript for ``node``: mostly a real key or index (or a new key), sometimes anything."""
    choice = data.draw(st.integers(0, 4))  # hypothesis favours small draws: 0 is the usual case
    if choice < 4 and isinstance(node, (dict, list)) and node and (choice < 2 or not new):
        return real_step(data, node)
    if choice < 4 and isinstance(node, dict):
        kinds = {type(key) for key in node} or {str}
        return data.draw(st.integers(-3, 9) if int in kinds else st.sampled_from("abcdef"))
    return data.draw(st.one_of(st.sampled_from(["a", "b", "c"]), ODD_STEP))


def operand(data, current):
    """The right side of ``+=``: mostly one that fits the current value."""
    if data.draw(st.integers(0, 3)) < 3:
        for kind, strategy in ((bool, st.integers(-2, 2)), ((int, float), st.integers(-2, 2)),
                               (str, st.text(max_size=2)), (bytes, st.binary(max_size=2)),
                               (tuple, st.tuples(SCALAR)), (list, st.lists(ANY_VALUE, max_size=2))):
            if isinstance(current, kind):
                return data.draw(strategy)
    return data.draw(st.one_of(SCALAR, ANY_VALUE, st.lists(SCALAR, max_size=2)))


def method_args(data, op, node):
    """Arguments for ``op``: plausible ones, or (1 time in 4) anything at all."""
    if op in LIST_METHODS | DICT_METHODS and data.draw(st.integers(0, 3)) == 3:
        args = tuple(data.draw(st.lists(st.one_of(SCALAR, ANY_VALUE, ODD_STEP), max_size=3)))
        try:  # a call that does not fit the method's signature is Python's own TypeError
            inspect.signature(getattr(zpydb.Path, op)).bind(None, *args)
            return args
        except TypeError:
            pass
    item = st.sampled_from(node) if isinstance(node, list) and node else SCALAR
    key = st.sampled_from(list(node)) if isinstance(node, dict) and node else KEY
    index = st.one_of(st.integers(-4, 4), st.sampled_from([True, "x", 2 ** 70, None]))
    plausible = {
        "append": st.tuples(ANY_VALUE), "insert": st.tuples(index, ANY_VALUE),
        "extend": st.tuples(st.one_of(st.lists(ANY_VALUE, max_size=3), st.text(max_size=2),
                                      st.integers(), st.just(range(2)))),
        "pop": st.one_of(st.tuples(), st.tuples(index), st.tuples(key), st.tuples(key, SCALAR)),
        "remove": st.tuples(item | st.builds(Evil)), "count": st.tuples(item | st.builds(Evil)),
        "index": st.one_of(st.tuples(item), st.tuples(item, st.integers(-3, 3))),
        "in": st.tuples(item | key | ODD_STEP),
        "update": st.tuples(st.one_of(st.dictionaries(KEY, ANY_VALUE, max_size=2),
                                      st.lists(st.tuples(KEY, VALUE), max_size=2),
                                      st.integers())),
        "setdefault": st.one_of(st.tuples(key), st.tuples(key | ODD_STEP, ANY_VALUE)),
        "get": st.one_of(st.tuples(key | ODD_STEP), st.tuples(key, SCALAR)),
    }
    return data.draw(plausible.get(op, st.just(())))


def _has(node, step):
    try:
        m_child(node, step)
    except Exception:
        return False
    return True


class ValuesMachine(RuleBasedStateMachine):
    """zpydb and the model run the same statements; failures must change nothing."""

    url = None

    def __init__(self):
        super().__init__()
        self.db = zpydb.connect(self.url, wait_timeout=10)
        self.db.clear()
        self.model = {}
        self.locked = False

    def teardown(self):
        self.db.close()

    @initialize(extra=st.dictionaries(st.sampled_from("abcd"), VALUE, max_size=3))
    def start(self, extra):
        """A tree with a list, a dict and a number to work on, plus a few drawn keys."""
        for key, value in {"l": [3, 1, 2], "d": {"x": 1}, "n": 5, **extra}.items():
            self.run(Statement([key], "set", value))

    def run(self, statement):
        try:
            new, expected = m_run(self.model, statement)
        except ModelError as verdict:
            event(f"refused: {statement.op}")
            self.must_fail(statement, verdict)
            return
        event(f"applied: {statement.op}")
        result = statement.on_db(self.db)
        assert result is expected or result == expected, (statement, result, expected)
        self.model = new

    def must_fail(self, statement, verdict):
        last = self.db._session.db.lastTransaction()
        try:
            statement.on_db(self.db)
        except zpydb.Error:
            pass
        except BaseException as exc:
            raise AssertionError(f"{statement} raised a bare {type(exc).__name__}: {exc}") from exc
        else:
            raise AssertionError(f"zpydb accepted {statement}; the model refused: {verdict}")
        assert self.db._run() == self.model, statement
        if not self.locked:
            assert self.db._session.db.lastTransaction() == last, "a failed statement committed"

    @rule(data=st.data(), value=ANY_VALUE)
    def set_item(self, data, value):
        steps, node = existing_path(data, self.model)
        self.run(Statement(steps + [any_step(data, node)], "set", value))

    @rule(data=st.data())
    def delete(self, data):
        steps, node = existing_path(data, self.model)
        self.run(Statement(steps + [any_step(data, node, new=False)], "del"))

    @rule(data=st.data())
    def augment(self, data):
        steps, node = existing_path(data, self.model)
        step = any_step(data, node, new=False)
        current = node[step] if isinstance(node, (dict, list)) and _has(node, step) else None
        self.run(Statement(steps + [step], "iadd", operand(data, current)))

    @rule(data=st.data())
    def method(self, data):
        steps, node = existing_path(data, self.model)
        if data.draw(st.integers(0, 4)) == 4:
            steps.append(any_step(data, node))  # often a path that does not exist
        fitting = (LIST_METHODS if isinstance(node, list) else DICT_METHODS
                   if isinstance(node, dict) else set()) | {"read", "len", "in", "iter"}
        op = data.draw(st.sampled_from(sorted(fitting)) if data.draw(st.integers(0, 3)) < 3
                       else st.sampled_from(OPS))
        kwargs = {"reverse": data.draw(st.booleans())} if op == "sort" else {}
        if op == "sort" and data.draw(st.booleans()):
            kwargs["key"] = str
        self.run(Statement(steps, op, *method_args(data, op, node), **kwargs))

    @precondition(lambda self: not self.locked)
    @rule()
    def lock(self):
        self.db.lock()
        self.locked = True

    @precondition(lambda self: self.locked)
    @rule()
    def unlock(self):
        self.db.unlock()
        self.locked = False

    @precondition(lambda self: self.locked)
    @rule()
    def undo_inside_the_lock(self):
        with pytest.raises(zpydb.UndoError, match="block"):
            self.db.undo()

    @invariant()
    def same_tree(self):
        assert self.db._run() == self.model


@pytest.mark.parametrize("backend_name", [name for name in ("file", "zeo") if name in BACKENDS])
def test_statements_match_a_plain_model(backend_name, tmp_path, request):
    """A few seconds per backend; ``ZPYDB_FUZZ_EXAMPLES=2000`` hunts longer, and
    ``ZPYDB_FUZZ_NO_SHRINK=1`` reports a failure without minutes of shrinking."""
    backend = make_backend(backend_name, tmp_path, request)
    ValuesMachine.url = backend.url
    run_state_machine_as_test(ValuesMachine, settings=settings(
        max_examples=int(os.environ.get("ZPYDB_FUZZ_EXAMPLES", "60")), stateful_step_count=30,
        deadline=None, suppress_health_check=list(HealthCheck),
        phases=[p for p in Phase if p != Phase.shrink or not os.environ.get("ZPYDB_FUZZ_NO_SHRINK")]))
