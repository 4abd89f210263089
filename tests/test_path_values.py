"""A Path behaves as the value it refers to (issue 13 item 2).

The rule (paths.py): every operator of the value's type works on a Path through
one read, from either side, with the result Python gives for the plain value;
where Python raises, zpydb raises a zpydb error that is also the same builtin
(OperationError is a TypeError with Python's exception as its ``__cause__``).
``repr()`` shows the reference and never does I/O; ``hash()`` is refused.

The enumeration runs against ONE database per backend (file and ZEO), so the
thousands of cases cost reads, not servers.
"""

import io
import math
import operator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zpydb
from tests.conftest import BACKENDS, make_backend
from tests.helpers import last_note, transaction_count
from zpydb.shell import Shell

VALUES = {
    "int": 7, "negative": -3, "zero": 0, "float": 2.5, "bool": True, "big": 2 ** 70,
    "str": "abc", "empty": "", "bytes": b"ab", "tuple": (1, 2), "list": [3, 1, 2],
    "dict": {"a": 1, "b": 2}, "none": None,
}
#: The other operand, on either side.
OTHERS = [2, -1, 0, 1.5, True, "x", b"y", (9,), [4], {"c": 3}, None]

BINARY = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "@": operator.matmul,
    "/": operator.truediv, "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
    "divmod": divmod, "<<": operator.lshift, ">>": operator.rshift, "&": operator.and_,
    "^": operator.xor, "|": operator.or_, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
UNARY = {
    "-": operator.neg, "+": operator.pos, "~": operator.invert, "abs": abs, "round": round,
    "round1": lambda v: round(v, 1), "trunc": math.trunc, "floor": math.floor,
    "ceil": math.ceil, "int": int, "float": float, "complex": complex, "index": operator.index,
    "bool": bool, "str": str, "bytes": bytes, "len": len, "iter": lambda v: list(iter(v)),
    "reversed": lambda v: list(reversed(v)), "list": list, "sorted": sorted,
    "format": lambda v: format(v), "format05d": lambda v: f"{v:05d}",
    "format.2f": lambda v: f"{v:.2f}", "format>6": lambda v: f"{v:>6}",
    "formatx": lambda v: f"{v:x}",
}


def too_big(name, symbol, value, other):
    """Cases Python would take minutes or gigabytes for: left out of the enumeration."""
    ints = [x for x in (value, other) if isinstance(x, int)]
    return name == "big" and symbol in ("**", "<<") or (
        symbol in ("**", "<<", "*") and any(abs(x) > 10 ** 6 for x in ints))


@pytest.fixture(scope="module", params=[b for b in BACKENDS if b in ("file", "zeo")])
def vdb(request, tmp_path_factory):
    backend = make_backend(request.param, tmp_path_factory.mktemp(request.param), request)
    db = backend.connect()
    db["v"] = VALUES
    yield db
    backend.close_all()


def outcome(call):
    try:
        return "ok", call()
    except Exception as exc:  # noqa: BLE001 - Python's own verdict is what we compare with
        return "error", exc


def assert_same(path_call, plain_call, what, where="db['v']"):
    """``path_call()`` gives what ``plain_call()`` gives, or fails as it does."""
    kind, expected = outcome(plain_call)
    if kind == "ok":
        got = path_call()
        assert type(got) is type(expected) and got == expected, (what, got, expected)
        return
    with pytest.raises(zpydb.Error) as info:
        path_call()
    error = info.value
    cause = error.__cause__ if isinstance(error, zpydb.OperationError) else error
    assert isinstance(cause, type(expected)) or isinstance(error, type(expected)), \
        (what, repr(error), repr(expected))
    assert where in str(error), (what, str(error))


@pytest.mark.parametrize("symbol", list(BINARY))
@pytest.mark.parametrize("name", list(VALUES))
def test_binary_operators_from_both_sides(vdb, name, symbol):
    func, value, path = BINARY[symbol], VALUES[name], vdb["v"][name]
    for other in OTHERS:
        if too_big(name, symbol, value, other):
            continue
        assert_same(lambda: func(path, other), lambda: func(value, other),
                    f"db['v'][{name!r}] {symbol} {other!r}")
        if symbol == "%" and isinstance(other, (str, bytes)):
            continue  # "x" % path: str formatting takes a Path as its arguments (see below)
        assert_same(lambda: func(other, path), lambda: func(other, value),
                    f"{other!r} {symbol} db['v'][{name!r}]")


@pytest.mark.parametrize("name", list(VALUES))
def test_two_paths_read_both(vdb, name):
    for symbol, func in BINARY.items():
        for other_name, other in VALUES.items():
            if too_big(name, symbol, VALUES[name], other) or too_big(other_name, symbol, other, 0):
                continue
            assert_same(lambda: func(vdb["v"][name], vdb["v"][other_name]),
                        lambda: func(VALUES[name], other), f"{name} {symbol} {other_name}")


@pytest.mark.parametrize("op", list(UNARY))
@pytest.mark.parametrize("name", list(VALUES))
def test_unary_operators_and_conversions(vdb, name, op):
    if name == "big" and op == "bytes":
        pytest.skip("bytes(2 ** 70) asks for a zettabyte")
    func = UNARY[op]
    assert_same(lambda: func(vdb["v"][name]), lambda: func(VALUES[name]), f"{op}({name})")


@pytest.mark.parametrize("name", list(VALUES))
def test_membership(vdb, name):
    value = VALUES[name]
    for item in OTHERS + ["a", "b", "ab", 1, 3, b"a", 97]:
        if isinstance(value, dict):  # a key of another kind is simply absent (docs/usage.md)
            try:
                expected = item in value
            except TypeError:
                expected = False
            assert (item in vdb["v"][name]) is expected, item
            continue
        assert_same(lambda: item in vdb["v"][name], lambda: item in value, f"{item!r} in {name}")


@pytest.mark.parametrize("name", ["str", "empty", "bytes", "tuple", "list"])
def test_subscripts_of_sequences_are_paths_read_as_python_indexes(vdb, name):
    value = VALUES[name]
    for key in [0, 1, -1, 5, slice(1, None), slice(None, None, -1), slice(0, 5, 2), "k"]:
        sub = vdb["v"][name][key]
        assert isinstance(sub, zpydb.Path)
        if isinstance(value, list) and isinstance(key, slice):
            expected = outcome(lambda: value[key])[1]
            assert sub.value() == expected
            continue
        assert_same(sub.value, lambda: value[key], f"{name}[{key!r}]")


def test_methods_of_the_value_are_reads(vdb):
    v = vdb["v"]
    assert v["str"].upper() == "ABC" and v["str"].split("b") == ["a", "c"]
    assert v["str"].startswith("ab") and v["str"].replace("a", "z") == "zbc"
    assert v["str"].index("c") == 2 and v["str"].count("a", 1) == 0 and v["str"].find("q") == -1
    assert v["bytes"].decode() == "ab" and v["bytes"].hex() == "6162"
    assert v["tuple"].index(2) == 1 and v["tuple"].count(1) == 1
    assert v["int"].bit_length() == 3 and v["int"].real == 7 and v["float"].is_integer() is False
    assert v["dict"].copy() == {"a": 1, "b": 2} and v["list"].copy() == [3, 1, 2]
    with pytest.raises(AttributeError) as info:
        v["int"].upper()
    assert isinstance(info.value, zpydb.AttributeNotFoundError)
    assert str(info.value) == "db['v']['int']: an int has no attribute 'upper'"
    with pytest.raises(zpydb.AttributeNotFoundError, match="a dict has no attribute 'hisotry'"):
        vdb.hisotry()
    assert not hasattr(v["int"], "upper") and not hasattr(v["int"], "_private")
    with pytest.raises(zpydb.ValueNotFoundError):
        v["str"].index("z")


def test_string_formatting_takes_a_path_as_its_arguments(vdb):
    v = vdb["v"]
    assert "%s and %d" % (v["str"], v["int"]) == "abc and 7"
    assert "%(a)s+%(b)s" % v["dict"] == "1+2"     # a Path is a mapping: each key is read
    assert f"{v['int']:05d} {v['float']:.1f} {v['str']!r}" == "00007 2.5 <zpydb.Path db['v']['str']>"


def test_a_path_is_not_hashable_and_says_to_call_value(vdb):
    for call in (lambda: hash(vdb["v"]["int"]), lambda: {vdb["v"]["int"]},
                 lambda: {vdb["v"]["str"]: 1}, lambda: vdb["v"]["int"] in {7: "seven"}):
        with pytest.raises(TypeError, match=r"use db\['v'\]\['(int|str)'\]\.value\(\)"):
            call()
    assert {vdb["v"]["int"].value(): 1} == {7: 1}


def test_value_is_the_public_read_and_run_stays(vdb):
    assert vdb["v"]["list"].value() == vdb["v"]["list"]._run() == [3, 1, 2]
    assert vdb.value()["v"] == VALUES


def test_a_path_key_is_read_when_the_path_is_built(vdb):
    v = vdb["v"]
    assert v["list"][v["tuple"][0]].value() == 1             # [3, 1, 2][1]
    assert v["list"][v["zero"]:v["tuple"][1]].value() == [3, 1]
    assert v[v["dict"].keys()[0] * 0 + "str"][v["negative"]].value() == "a"


# -- repr: the reference, never I/O, never raising ---------------------------------

class NoIO:
    """An executor that fails any read or write: repr() must not need one."""

    def read(self, op):
        raise AssertionError("repr() read the database")

    write = read


def test_repr_shows_the_path_and_does_no_io(db):
    assert repr(zpydb.Path(NoIO(), ("a", 0, slice(1, None)))) == "<zpydb.Path db['a'][0][1:]>"
    assert repr(db["missing"]["deeper"]) == "<zpydb.Path db['missing']['deeper']>"
    assert repr(db).startswith("<zpydb.Database on ")
    before = transaction_count(db)
    db.close()
    assert repr(db["x"]) == "<zpydb.Path db['x']>" and repr(db).startswith("<zpydb.Database")
    assert str([db["x"]]) == "[<zpydb.Path db['x']>]"      # containers show references
    with pytest.raises(zpydb.Error):
        db["x"].value()
    assert before >= 1


def test_str_and_bool_read_the_value(db):
    db["n"] = 0
    db["s"] = "text"
    assert str(db["n"]) == "0" and not db["n"] and db["s"] and f"{db['s']}" == "text"
    with pytest.raises(zpydb.KeyNotFoundError):
        str(db["missing"])


# -- writes stay writes -------------------------------------------------------------

def test_every_augmented_operator_is_one_transaction(db):
    db["n"] = 6
    expected = 6
    for symbol, func in [("+", operator.add), ("-", operator.sub), ("*", operator.mul),
                         ("//", operator.floordiv), ("%", operator.mod), ("**", operator.pow),
                         ("<<", operator.lshift), (">>", operator.rshift),
                         ("&", operator.and_), ("^", operator.xor), ("|", operator.or_)]:
        before = transaction_count(db)
        operand = 3
        exec(f"db['n'] {symbol}= {operand}", {"db": db})
        expected = func(expected, operand)
        assert db["n"].value() == expected, symbol
        assert transaction_count(db) == before + 1
        assert last_note(db) == f"db['n'] {symbol}= {operand}"
    db["f"] = 1.0
    db["f"] /= 4
    assert db["f"].value() == 0.25
    before = transaction_count(db)
    with pytest.raises(zpydb.OperationError):
        db["f"] @= 2
    with pytest.raises(zpydb.OperationError):
        db["s"] = "abc"
        db["s"] -= "c"
    assert transaction_count(db) == before + 1  # only the assignment of db['s']


def test_a_variable_holding_a_path_is_a_reference(db):
    db["n"] = 1
    x = db["n"]
    db["n"] = 5
    assert x == 5                       # live: it shows the current value
    snapshot = x.value()
    x += 1                              # writes db['n'], atomically
    assert db["n"].value() == 6 and isinstance(x, zpydb.Path) and snapshot == 5


def test_str_values_are_read_only_sequences(db):
    db["s"] = "abc"
    before = transaction_count(db)
    with pytest.raises(zpydb.NotAContainerError, match=r"db\['s'\] is a str"):
        db["s"][0] = "x"
    with pytest.raises(zpydb.NotAContainerError):
        del db["s"][0]
    with pytest.raises(zpydb.NotAContainerError):
        db["s"].append("d")
    with pytest.raises(zpydb.NotAContainerError):
        db["s"][0] += "x"
    assert transaction_count(db) == before and db["s"] == "abc"
    db["s"] += "d"
    db["l"] = ["xy"]
    db["l"].append(db["s"][1:])        # a path of this database, copied in the same transaction
    assert db["l"].value() == ["xy", "bcd"] and db["l"][0][1] == "y"


def test_a_path_inside_a_stored_value_says_to_call_value(db):
    db["d"] = {"a": 1}
    assert {**db["d"]}["a"] == 1 and isinstance(dict(db["d"])["a"], zpydb.Path)  # references
    with pytest.raises(zpydb.UnstorableValueError, match=r"store db\['d'\]\['a'\]\.value\(\)"):
        db["x"] = [db["d"]["a"], 2]
    db["x"] = [db["d"]["a"].value(), 2]
    db["y"] = db["d"]                   # a path itself is copied
    assert db["x"] == [1, 2] and db["y"] == {"a": 1}


def test_paths_of_a_transaction_block_follow_the_same_rule(db):
    db["n"] = 4
    db["s"] = "ab"
    with db.transaction() as t:
        assert 10 - t["n"] == 6 and t["n"] / 2 == 2.0 and -t["n"] == -4
        assert t["s"].upper() == "AB" and t["s"][1] == "b" and repr(t["s"]) == "<zpydb.Path db['s']>"
        t["m"] = t["n"] ** 2
    assert db["m"] == 16


def test_the_shell_prints_values(fdb):
    fdb["s"] = "abc"
    fdb["n"] = 7
    out, err = io.StringIO(), io.StringIO()
    status = Shell(fdb, out=out, err=err).run_script(
        "db['s'][0]\ndb['s'].upper()\n2 ** db['n']\ndb['n']\n[db['n'], db['s']]\nrepr(db['n'])\n")
    assert status == 0 and err.getvalue() == ""
    assert out.getvalue().splitlines() == ["'a'", "'ABC'", "128", "7", "[7, 'abc']",
                                           "\"<zpydb.Path db['n']>\""]


# -- hypothesis: operators on numbers and text, drawn ------------------------------

NUMBER = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
SAFE = {k: v for k, v in BINARY.items() if k not in ("**", "<<")}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mine=NUMBER | st.text(max_size=4), theirs=NUMBER | st.text(max_size=4),
       symbol=st.sampled_from(sorted(SAFE)))
def test_drawn_operands_match_python(fdb, mine, theirs, symbol):
    fdb["x"] = mine
    func, path = SAFE[symbol], fdb["x"]
    assert_same(lambda: func(path, theirs), lambda: func(mine, theirs), "forward", "db['x']")
    if not (symbol == "%" and isinstance(theirs, str)):
        assert_same(lambda: func(theirs, path), lambda: func(theirs, mine), "reflected", "db['x']")
