"""Paths: references to places in the database, with Python syntax for reads and writes.

``db['a'][0]['b']`` builds a :class:`Path` (a tuple of subscripts) and does no
I/O, like a ``pathlib.Path`` or a Firebase reference.  ONE rule decides what
the rest does: **a Path behaves as the value it refers to, read when it is
used; an operation that changes data writes it.**

* ``.value()`` (``._run()`` for pyzdb code): one read transaction, a plain copy;
* every operator of the value's type reads the value, from either side:
  ``+ - * @ / // % ** divmod << >> & ^ |`` and their reflected forms, unary
  ``- + ~``, ``abs round math.trunc/floor/ceil``, comparisons, ``int float
  complex bytes str format`` and ``operator.index``, ``bool len iter reversed
  in``; a failure is an OperationError (a TypeError) naming the path;
  ``iter`` and ``reversed`` read in batches, ``len`` and ``bool`` read a
  dict's or list's count, not its items;
* read methods: ``get keys values items index count`` of dicts and lists (and
  ``index``/``count`` of str, bytes and tuples), and any other public attribute
  of the value (``db['s'].upper()``, ``db['n'].bit_length()``): a read, then the
  attribute of the plain copy;
* ``p[k] = v``, ``del p[k]``, ``append`` / ``extend`` / ``insert`` / ``pop`` /
  ``remove`` / ``sort`` / ``reverse`` / ``clear`` / ``update`` / ``setdefault`` /
  ``popitem``: one durable transaction each, noted like the statement;
* ``p += x`` (and every other augmented operator): read, compute and write in
  ONE transaction, so concurrent increments are never lost.

Not values: ``repr(p)`` shows the path (``<zpydb.Path db['a']>``) without any
I/O and never raises; ``hash(p)`` raises TypeError (the value behind a path can
change, so no hash can match ``==``), and ``isinstance``, ``is``, ``json``,
``copy`` and ``pickle`` see the reference: use ``p.value()`` there.

A Path runs its operations through an *executor* (transactions.py's
``Autocommit`` and ``Block``): ``read(op)`` and ``write(op, note, wrote)``
(``wrote``: the path it writes to, written.py), where
``op(root, reads)`` is an ops.py call and ``reads`` the executor's read
tracker, so the same proxy code serves both; ``note()`` makes the statement's
text for the transaction note (only when it is kept: a long block keeps the
first few hundred characters).
"""

import math
import operator
from collections.abc import Iterator

from . import nodes, ops

_MISSING = object()
_new_path = object.__new__

#: Writer methods that are *blind writes* (session.Session.write): what they do
#: to the target does not depend on what it holds, so only their path must be
#: current.  ``p[k] = v`` and ``p op= x`` are blind too (``op=`` reads the
#: value it replaces, which the conflict check covers, or the value's own
#: records, which it registers); ``del``, ``pop``, ``remove``, ``setdefault``,
#: ``popitem``, ``clear``... decide from the target's content and are not.
BLIND_WRITERS = frozenset({"append", "extend", "update"})


def _binary(symbol, func, name):
    """``path <symbol> other`` and ``other <symbol> path``: both read the value."""

    def forward(self, other):
        return self._compute(symbol, func, other)

    def reflected(self, other):
        return self._compute(symbol, lambda mine, theirs: func(theirs, mine), other,
                             f"{_short_repr(other, 60)} {symbol} {self._expr()}")

    forward.__name__, reflected.__name__ = f"__{name}__", f"__r{name}__"
    forward.__doc__ = f"``value {symbol} other`` (reads the value)."
    reflected.__doc__ = f"``other {symbol} value`` (reads the value)."
    return forward, reflected


def _unary(symbol, func, name):
    def method(self):
        return self._apply(symbol, func)

    method.__name__ = f"__{name}__"
    method.__doc__ = f"``{symbol}`` of the value (reads it)."
    return method


class Path:
    """A reference to one place in the database; used as a value, it reads that value.

    See the module docstring for the rule.  ``value()`` reads a plain copy;
    ``repr()`` never does I/O.
    """

    __slots__ = ("_executor", "_steps")

    def __init__(self, executor, steps=()):
        object.__setattr__(self, "_executor", executor)
        object.__setattr__(self, "_steps", tuple(steps))

    # -- building paths (no I/O) ------------------------------------------
    def __getitem__(self, key):
        """A Path one level down; ``db['s'][0]`` is a Path too (reading it indexes the str).

        A Path used as the key (``db['l'][db['i']]``) is read here, once.
        """
        kind = type(key)
        if kind is not str and kind is not int:  # the common keys need no look
            key = _key(key)
        path = _new_path(Path)  # not Path(...): __init__'s generic set-up costs more
        path._executor = self._executor
        path._steps = self._steps + (key,)
        return path

    def _expr(self):
        """The path as Python source, e.g. ``db['l'][4]``."""
        return ops.format_path(self._steps)

    def __repr__(self):
        """``<zpydb.Path db['a'][0]>``: the path only, no I/O, never raises."""
        try:
            return f"<zpydb.Path {self._expr()}>"
        except Exception:  # pragma: no cover - format_path never raises today
            return "<zpydb.Path>"

    def __hash__(self):
        expr = self._expr()
        raise TypeError(f"unhashable: {expr} is a reference whose value can change, so it has "
                        f"no hash consistent with ==; use {expr}.value() (a plain copy) as a "
                        f"dict key or set member")

    # -- reading ----------------------------------------------------------
    def value(self):
        """The current committed value here, as a plain Python copy (one read)."""
        return self._executor.read(lambda root, reads: ops.read(root, self._steps, reads))

    _run = value  # pyzdb's name

    def _reader(self, name, *args, **kwargs):
        return self._executor.read(
            lambda root, reads: ops.call_reader(root, self._steps, name, args, kwargs, reads))

    def __getattr__(self, name):
        """Any other public attribute is the value's (``db['s'].upper()``): a read.

        Private and dunder names never read (debuggers, IPython and ``copy``
        probe them), so ``hasattr(p, '_x')`` is simply False.
        """
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self._executor.read(
            lambda root, reads: ops.read_attribute(root, self._steps, name, reads))

    def get(self, key, default=None):
        return self._reader("get", key, default)

    def keys(self):
        """A :class:`Listing` of the keys (its first batch is read now)."""
        return Listing(self, "keys")

    def values(self):
        """A :class:`Listing` of the values (its first batch is read now)."""
        return Listing(self, "values")

    def items(self):
        """A :class:`Listing` of the (key, value) pairs (its first batch is read now)."""
        return Listing(self, "items")

    def index(self, value, *args):
        return self._reader("index", value, *args)

    def count(self, value, *args):
        return self._reader("count", value, *args)

    def __len__(self):
        return self._reader("len")

    def watch(self, since=None, timeout=None):
        """An iterator of the committed changes under this path, in commit order.

        Each change is a dict: id, time, user, note, kind, deleted, value (the
        new value, a plain copy) and patch (JSON Patch relative to this path).
        ``since=id``: start after that change (else now); ``timeout``: end the
        iteration after that many idle seconds.  See zpydb/feed.py.
        """
        from . import feed  # the feed needs the session layer; paths stay light
        return feed.watch(self._executor, self._steps, since=since, timeout=timeout)

    def __contains__(self, item):
        return self._reader("contains", _plain(item))

    def __iter__(self):
        """The items (a dict's keys), read in batches of one snapshot taken now."""
        return self._iterate("iter")

    def _iterate(self, kind, backwards=False):
        steps = self._steps
        return self._executor.iterate(
            lambda root, reads, position, size: ops.read_batch(root, steps, kind, position,
                                                               size, reads, backwards))

    def __reversed__(self):
        """The items (a dict's keys) last first, in batches of one snapshot taken now."""
        return self._iterate("iter", backwards=True)

    def _ipython_key_completions_(self):
        """Keys for tab completion (IPython and the zpydb shell)."""
        try:
            value = self._reader("keys")
        except Exception:
            return []
        return [k for k in value if isinstance(k, (str, int))]

    # -- the past (pathhistory.py, timetravel.py) ---------------------------
    def history(self, n=10):
        """The last ``n`` changes of the value here, newest first.

        Dicts of ``id``, ``time``, ``user``, ``note``, ``value`` (a plain copy of
        the value after the change) and ``deleted`` (the path did not exist
        after it).  Costs grow with ``n`` and the changes of the records on
        this path, not with the database's history (pathhistory.py).  At the
        root (``db``, a block's ``t``) it is the log, as ``db.history(n)``.
        """
        if not self._steps:
            from .undo import history
            return history(self._executor.session, n)
        from .pathhistory import path_history
        return path_history(self._executor, self._steps, n)

    def diff(self, a, b=None):
        """The JSON Patch (RFC 6902) from the value here as at ``a`` to it as at ``b``
        (default: now), pointers relative to this path; see ``db.at`` for ``when``."""
        from .timetravel import diff
        return diff(self._executor, self._steps, a, b)

    # -- writing ----------------------------------------------------------
    def __setitem__(self, key, value):
        if type(key) is not str and type(key) is not int:
            key = _key(key)
        steps = self._steps + (key,)
        if isinstance(value, Path):
            self._set_path(steps, value)
            return
        # a plain value (a bulk load runs this per item): no Path to resolve
        self._executor.write(
            lambda root, reads: ops.set_item(root, steps, value, reads),
            lambda: f"{ops.format_path(steps)} = {_short_repr(value)}", steps, blind=True)

    def _set_path(self, steps, value):
        """``p[k] = other_path``: a copy of its value, read in the same transaction."""
        if isinstance(value, _Applied) and value._steps == steps:
            return  # the augmented assignment already wrote it, atomically
        shown = value
        note = lambda: f"{ops.format_path(steps)} = {_short_repr(shown)}"  # noqa: E731
        value = _own_or_plain(value, self._executor)
        self._executor.write(
            lambda root, reads: ops.set_item(root, steps, _resolve(value, root), reads), note,
            steps, blind=not isinstance(value, Path))

    def __delitem__(self, key):
        steps = self._steps + (_key(key),)
        # Deleting a list item shifts every item after it: such a del writes the
        # whole list as far as path histories are concerned (written.py).
        wrote = self._steps if isinstance(steps[-1], int) else steps
        self._executor.write(lambda root, reads: ops.del_item(root, steps, reads),
                             lambda: f"del {ops.format_path(steps)}", wrote)

    def _writer(self, name, *args, **kwargs):
        shown = args

        def note():
            listed = ", ".join([_short_repr(a) for a in shown] +
                               [f"{k}={_short_repr(v)}" for k, v in kwargs.items()])
            return f"{self._expr()}.{name}({listed})"

        args = [_own_or_plain(a, self._executor) for a in args]
        return self._executor.write(
            lambda root, reads: ops.call_writer(
                root, self._steps, name, [_resolve(a, root) for a in args], kwargs, reads),
            note, self._steps,
            blind=name in BLIND_WRITERS and not any(isinstance(a, Path) for a in args))

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
        other = other.value() if isinstance(other, Path) else other
        return self._writer("update", ops.mapping_arg(other, self._expr()), **kwargs)

    def setdefault(self, key, default=None):
        return self._writer("setdefault", key, default)

    def popitem(self):
        return self._writer("popitem")

    # -- augmented assignment: one atomic read-modify-write ----------------
    def _augment(self, symbol, func, other):
        steps = self._steps
        shown = other
        note = lambda: f"{self._expr()} {symbol}= {_short_repr(shown)}"  # noqa: E731
        other = _own_or_plain(other, self._executor)
        if isinstance(other, Iterator):  # read once, kept for a retried attempt
            other = ops.Drained(other)

        def apply(root, reads):  # a path of this database is read inside the transaction
            return ops.augment(root, steps, symbol, func, _resolve(other, root), reads)

        self._executor.write(apply, note, steps, blind=not isinstance(other, Path))
        return _Applied(self._executor, steps)

    def __iadd__(self, other):
        return self._augment("+", operator.add, other)

    def __isub__(self, other):
        return self._augment("-", operator.sub, other)

    def __imul__(self, other):
        return self._augment("*", operator.mul, other)

    def __imatmul__(self, other):
        return self._augment("@", operator.matmul, other)

    def __itruediv__(self, other):
        return self._augment("/", operator.truediv, other)

    def __ifloordiv__(self, other):
        return self._augment("//", operator.floordiv, other)

    def __imod__(self, other):
        return self._augment("%", operator.mod, other)

    def __ipow__(self, other):
        return self._augment("**", operator.pow, other)

    def __ilshift__(self, other):
        return self._augment("<<", operator.lshift, other)

    def __irshift__(self, other):
        return self._augment(">>", operator.rshift, other)

    def __iand__(self, other):
        return self._augment("&", operator.and_, other)

    def __ixor__(self, other):
        return self._augment("^", operator.xor, other)

    def __ior__(self, other):
        return self._augment("|", operator.or_, other)

    # -- every other operator reads the value -------------------------------
    def _compute(self, symbol, func, other, shown=None):
        """``func(value here, other)``; values that do not mix fail as an OperationError."""
        return ops.apply_operator(symbol, func, self.value(), _plain(other), self._expr(), shown)

    def _apply(self, symbol, func):
        """``func(value here)``; a value that cannot do it fails as an OperationError."""
        expr = self._expr()
        shown = f"{symbol}{expr}" if len(symbol) == 1 else f"{symbol}({expr})"
        return ops.apply_unary(shown, func, self.value(), expr)

    __add__, __radd__ = _binary("+", operator.add, "add")
    __sub__, __rsub__ = _binary("-", operator.sub, "sub")
    __mul__, __rmul__ = _binary("*", operator.mul, "mul")
    __matmul__, __rmatmul__ = _binary("@", operator.matmul, "matmul")
    __truediv__, __rtruediv__ = _binary("/", operator.truediv, "truediv")
    __floordiv__, __rfloordiv__ = _binary("//", operator.floordiv, "floordiv")
    __mod__, __rmod__ = _binary("%", operator.mod, "mod")
    __divmod__, __rdivmod__ = _binary("divmod", divmod, "divmod")
    __lshift__, __rlshift__ = _binary("<<", operator.lshift, "lshift")
    __rshift__, __rrshift__ = _binary(">>", operator.rshift, "rshift")
    __and__, __rand__ = _binary("&", operator.and_, "and")
    __xor__, __rxor__ = _binary("^", operator.xor, "xor")
    __or__, __ror__ = _binary("|", operator.or_, "or")
    _pow, __rpow__ = _binary("**", operator.pow, "pow")

    def __pow__(self, other, modulo=None):
        if modulo is None:
            return self._pow(other)
        return self._compute("**", lambda mine, theirs: pow(mine, theirs, _plain(modulo)), other,
                             f"pow({self._expr()}, {_short_repr(other, 60)}, "
                             f"{_short_repr(modulo, 60)})")

    # Comparisons: Python reflects them itself (``5 < p`` calls ``p > 5``).
    __eq__ = _binary("==", operator.eq, "eq")[0]
    __ne__ = _binary("!=", operator.ne, "ne")[0]
    __lt__ = _binary("<", operator.lt, "lt")[0]
    __le__ = _binary("<=", operator.le, "le")[0]
    __gt__ = _binary(">", operator.gt, "gt")[0]
    __ge__ = _binary(">=", operator.ge, "ge")[0]

    __neg__ = _unary("-", operator.neg, "neg")
    __pos__ = _unary("+", operator.pos, "pos")
    __invert__ = _unary("~", operator.invert, "invert")
    __abs__ = _unary("abs", abs, "abs")
    __trunc__ = _unary("math.trunc", math.trunc, "trunc")
    __floor__ = _unary("math.floor", math.floor, "floor")
    __ceil__ = _unary("math.ceil", math.ceil, "ceil")
    def _convert(self, kind, func):
        return ops.convert(self.value(), kind, func, self._expr())

    def __int__(self):
        return self._convert("an int", int)

    def __float__(self):
        return self._convert("a float", float)

    def __index__(self):
        return self._convert("an index", operator.index)

    __complex__ = _unary("complex", complex, "complex")
    __bytes__ = _unary("bytes", bytes, "bytes")
    __str__ = _unary("str", str, "str")

    def __bool__(self):
        """``bool`` of the value; a dict or list is not copied for it."""
        return self._reader("bool")

    def __round__(self, ndigits=None):
        if ndigits is None:
            return self._apply("round", round)
        return self._apply("round", lambda value: round(value, _plain(ndigits)))

    def __format__(self, spec):
        return self._apply("format", lambda value: format(value, spec))


class Listing:
    """``db['d'].keys()``, ``values()``, ``items()``: a view, like a dict's, read in batches.

    Iterating it reads ``ops.BATCH_SIZE`` items at a time, every batch from the
    snapshot of the first (see ``Path.__iter__``), so a million keys are never
    in memory at once.  ``len()`` and ``in`` (of keys) read without copying;
    ``==``, indexing, ``+`` and ``repr`` read a list first and behave as that
    list does (what ``keys()`` returned before), so ``list(d.keys())``,
    ``len(d.keys())``, ``sorted(d.keys())`` and ``d.keys() == ['a', 'b']`` work
    as in pyzdb.  ``keys()`` reads the first batch (a missing key, or ``keys()`` of
a list, raises there, as when it returned a list); a first iteration goes on
from that snapshot, later ones take a new one.
    """

    __slots__ = ("_path", "_kind", "_started")

    def __init__(self, path, kind):
        self._path, self._kind = path, kind
        # the first batch is read now: errors surface at the call, as they did
        self._started = path._iterate(kind)

    def __iter__(self):
        started, self._started = self._started, None
        return started if started is not None else self._path._iterate(self._kind)

    def __reversed__(self):
        """Largest key first, in batches of one snapshot taken now."""
        return self._path._iterate(self._kind, backwards=True)

    def __len__(self):
        return len(self._path)

    def __bool__(self):
        return len(self) > 0

    def __contains__(self, item):
        if self._kind == "keys":
            return self._path.__contains__(item)
        item = _plain(item)
        return any(ops.compare_equal(x, item, self._path._expr()) for x in self)

    def __eq__(self, other):
        return list(self) == (list(other) if isinstance(other, Listing) else other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __getitem__(self, index):
        return list(self)[index]

    def __add__(self, other):
        return list(self) + other

    def __radd__(self, other):
        return other + list(self)

    def __repr__(self):
        """The list it reads (the shell prints it); never raises."""
        try:
            return repr(list(self))
        except Exception:
            return f"<zpydb {self._kind}() of {self._path._expr()}>"


class _Applied(Path):
    """What ``p += x`` leaves behind: the same path, marked as already written."""

    __slots__ = ()


def _plain(value):
    return value.value() if isinstance(value, Path) else value


def _key(key):
    """A subscript as stored in a path: a Path (also as a slice bound) is read now."""
    if isinstance(key, Path):
        return key.value()
    if isinstance(key, slice) and any(isinstance(x, Path) for x in (key.start, key.stop, key.step)):
        return slice(_plain(key.start), _plain(key.stop), _plain(key.step))
    return key


def _own_or_plain(value, executor):
    """A Path of another database (or transaction) is read now, as a plain value."""
    if isinstance(value, Path) and value._executor is not executor:
        return value.value()
    return value


def _resolve(value, root):
    """A Path of this database used as a value is copied inside the same transaction."""
    if isinstance(value, Path):
        return ops.read(root, value._steps)
    return value


def _short_repr(value, limit=120):
    """For notes: a Path as its expression, anything else as a repr that never fails."""
    return value._expr() if isinstance(value, Path) else nodes.short_repr(value, limit)
