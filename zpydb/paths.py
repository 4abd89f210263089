"""Lazy path proxies: Python subscript syntax mapped onto reads and writes.

``db['a'][0]['b']`` builds a :class:`Path` (a tuple of subscripts) and does no
I/O.  What you do with it decides the transaction:

* ``._run()``, ``repr``, iteration, ``len``, ``in``, ``==``, ``get`` / ``keys`` /
  ``values`` / ``items`` / ``index`` / ``count``: one read transaction, plain
  values back, nothing written;
* ``p[k] = v``, ``del p[k]``, ``append`` / ``extend`` / ``insert`` / ``pop`` /
  ``remove`` / ``sort`` / ``reverse`` / ``clear`` / ``update`` / ``setdefault`` /
  ``popitem``: one durable transaction each, noted like the statement;
* ``p += x`` (and the other augmented operators): read, compute and write in
  ONE transaction, so concurrent increments are never lost.

A Path runs its operations through an *executor* (transactions.py's
``Autocommit`` and ``Block``): ``read(op)`` and ``write(op, note)``, where
``op(root, reads)`` is an ops.py call and ``reads`` the executor's read
tracker, so the same proxy code serves both.
"""

import operator

from . import nodes, ops

_MISSING = object()


class Path:
    """A lazy reference to one place in the database."""

    __slots__ = ("_executor", "_steps")
    __hash__ = None  # == compares values, so paths are not hashable

    def __init__(self, executor, steps=()):
        object.__setattr__(self, "_executor", executor)
        object.__setattr__(self, "_steps", tuple(steps))

    # -- building paths (no I/O) ------------------------------------------
    def __getitem__(self, key):
        return Path(self._executor, self._steps + (key,))

    def _expr(self):
        """The path as Python source, e.g. ``db['l'][4]``."""
        return ops.format_path(self._steps)

    # -- reading ----------------------------------------------------------
    def _run(self):
        """The current committed value here, as a plain Python copy."""
        return self._executor.read(lambda root, reads: ops.read(root, self._steps, reads))

    def _reader(self, name, *args, **kwargs):
        return self._executor.read(
            lambda root, reads: ops.call_reader(root, self._steps, name, args, kwargs, reads))

    def get(self, key, default=None):
        return self._reader("get", key, default)

    def keys(self):
        return self._reader("keys")

    def values(self):
        return self._reader("values")

    def items(self):
        return self._reader("items")

    def index(self, value, *args):
        return self._reader("index", value, *args)

    def count(self, value):
        return self._reader("count", value)

    def __len__(self):
        return self._reader("len")

    def __contains__(self, item):
        return self._reader("contains", item)

    def __iter__(self):
        return iter(self._reader("iter"))

    def __eq__(self, other):
        return self._compute("==", operator.eq, other)

    def __ne__(self, other):
        return not self == other

    def __bool__(self):
        return bool(self._run())

    def __repr__(self):
        return repr(self._run())

    def __str__(self):
        return str(self._run())

    def _ipython_key_completions_(self):
        """Keys for tab completion (IPython and the zpydb shell)."""
        try:
            value = self._reader("keys")
        except Exception:
            return []
        return [k for k in value if isinstance(k, (str, int))]

    # -- writing ----------------------------------------------------------
    def __setitem__(self, key, value):
        if isinstance(value, _Applied) and value._steps == self._steps + (key,):
            return  # the augmented assignment already wrote it, atomically
        steps = self._steps + (key,)
        note = f"{ops.format_path(steps)} = {_short_repr(value)}"
        value = _own_or_plain(value, self._executor)
        self._executor.write(
            lambda root, reads: ops.set_item(root, steps, _resolve(value, root), reads), note)

    def __delitem__(self, key):
        steps = self._steps + (key,)
        self._executor.write(lambda root, reads: ops.del_item(root, steps, reads),
                             f"del {ops.format_path(steps)}")

    def _writer(self, name, *args, **kwargs):
        shown = ", ".join([_short_repr(a) for a in args] +
                          [f"{k}={_short_repr(v)}" for k, v in kwargs.items()])
        note = f"{self._expr()}.{name}({shown})"
        args = [_own_or_plain(a, self._executor) for a in args]
        return self._executor.write(
            lambda root, reads: ops.call_writer(
                root, self._steps, name, [_resolve(a, root) for a in args], kwargs, reads),
            note)

    def append(self, value):
        return self._writer("append", value)

    def extend(self, values):
        if not isinstance(values, Path):  # a generator is read once, before the note
            values = ops.iterable_arg(values, "extend", self._expr())
        return self._writer("extend", values)

    def insert(self, index, value):
        return self._writer("insert", index, value)

    def pop(self, *args):
        return self._writer("pop", *args)

    def remove(self, value):
        return self._writer("remove", value)

    def sort(self, *, key=None, reverse=False):
        kwargs = {"reverse": reverse} if key is None else {"key": key, "reverse": reverse}
        return self._writer("sort", **kwargs)

    def reverse(self):
        return self._writer("reverse")

    def clear(self):
        return self._writer("clear")

    def update(self, other=(), **kwargs):
        other = other._run() if isinstance(other, Path) else other
        return self._writer("update", ops.mapping_arg(other, self._expr()), **kwargs)

    def setdefault(self, key, default=None):
        return self._writer("setdefault", key, default)

    def popitem(self):
        return self._writer("popitem")

    # -- augmented assignment: one atomic read-modify-write ----------------
    def _augment(self, symbol, func, other):
        steps = self._steps
        note = f"{self._expr()} {symbol}= {_short_repr(other)}"

        def apply(root, reads):
            return ops.augment(root, steps, symbol, func, _plain(other), reads)

        self._executor.write(apply, note)
        return _Applied(self._executor, steps)

    def __iadd__(self, other):
        return self._augment("+", operator.add, other)

    def __isub__(self, other):
        return self._augment("-", operator.sub, other)

    def __imul__(self, other):
        return self._augment("*", operator.mul, other)

    def __itruediv__(self, other):
        return self._augment("/", operator.truediv, other)

    def __ifloordiv__(self, other):
        return self._augment("//", operator.floordiv, other)

    def __imod__(self, other):
        return self._augment("%", operator.mod, other)

    def __ipow__(self, other):
        return self._augment("**", operator.pow, other)

    def __ior__(self, other):
        return self._augment("|", operator.or_, other)

    def __iand__(self, other):
        return self._augment("&", operator.and_, other)

    # -- plain arithmetic reads the value ----------------------------------
    def _compute(self, symbol, func, other, shown=None):
        """``func(value here, other)``; values that do not mix fail as an OperationError."""
        return ops.apply_operator(symbol, func, self._run(), _plain(other), self._expr(), shown)

    def __add__(self, other):
        return self._compute("+", operator.add, other)

    def __radd__(self, other):
        return self._compute("+", lambda mine, theirs: theirs + mine, other,
                             f"{nodes.short_repr(_plain(other), 60)} + {self._expr()}")

    def __sub__(self, other):
        return self._compute("-", operator.sub, other)

    def __mul__(self, other):
        return self._compute("*", operator.mul, other)

    def __lt__(self, other):
        return self._compute("<", operator.lt, other)

    def __le__(self, other):
        return self._compute("<=", operator.le, other)

    def __gt__(self, other):
        return self._compute(">", operator.gt, other)

    def __ge__(self, other):
        return self._compute(">=", operator.ge, other)

    def _convert(self, kind, func):
        return ops.convert(self._run(), kind, func, self._expr())

    def __int__(self):
        return self._convert("an int", int)

    def __float__(self):
        return self._convert("a float", float)

    def __index__(self):
        return self._convert("an index", operator.index)


class _Applied(Path):
    """What ``p += x`` leaves behind: the same path, marked as already written."""

    __slots__ = ()


def _plain(value):
    return value._run() if isinstance(value, Path) else value


def _own_or_plain(value, executor):
    """A Path of another database (or transaction) is read now, as a plain value."""
    if isinstance(value, Path) and value._executor is not executor:
        return value._run()
    return value


def _resolve(value, root):
    """A Path of this database used as a value is copied inside the same transaction."""
    if isinstance(value, Path):
        return ops.read(root, value._steps)
    return value


def _short_repr(value, limit=120):
    """For notes: a Path as its expression, anything else as a repr that never fails."""
    return value._expr() if isinstance(value, Path) else nodes.short_repr(value, limit)
