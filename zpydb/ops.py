"""What one statement does to the stored tree, inside a transaction it is given.

Every read and every write of zpydb goes through this module: :func:`traverse`
walks a path of subscripts from the data root, :func:`read` copies a value out
as plain Python, :func:`set_item`/:func:`del_item` store and delete, and
:func:`call_reader`/:func:`call_writer` call a method on the node adapters
(:class:`ListNode`, :class:`DictNode`, :class:`SequenceNode` for str, bytes
and tuple values, :class:`Node`: one real method each, with its own argument
checks), and :func:`read_attribute` takes any other public attribute of the
value (``db['s'].upper``) from a plain copy.  A str, bytes or tuple value is
indexed for reading (``db['s'][0]``) but never written into.  The proxies in
``paths.py`` build the path and the operation; the executor (transactions.py)
supplies the transaction.  Keeping the node-level work here means autocommit
statements and statements inside ``db.transaction()`` blocks behave
identically.

Every operation gets a *read tracker* (:class:`Reads`) from its executor and
tells it every persistent object a *read* looks at: the bucket that holds each
key on the way down, and everything in the value read.  An autocommit
statement's tracker is :data:`UNTRACKED`, which does nothing; a transaction
block's registers each object with ``connection.readCurrent``
(transactions.py), so a concurrent change to anything the block read fails its
commit.  Writes register nothing (a blind write, like an autocommit statement,
relies on ZODB's store-time conflict check, and BTrees merge concurrent changes
to different keys).
"""

import abc
import functools
import itertools
import operator

from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from ZODB.POSException import POSError

from . import merging, nodes
from .bigdict import BigDict, descending_items, needs_wrapping
from .biglist import BIG_LIST_THRESHOLD, BigList
from .errors import (AttributeNotFoundError, BadArgumentError, BadIndexError, Error, KeyNotFoundError,
                     NotAContainerError, OperationError, UnorderableKeyError, ValueNotFoundError)

#: Stored values that are read-only sequences: ``db['s'][0]`` reads a character,
#: ``len``/``in``/iteration/``index``/``count`` work on them (:class:`SequenceNode`),
#: nothing writes into them.
SEQUENCE_VALUES = (str, bytes, tuple)


def format_path(steps):
    """``('l', 4)`` -> ``"db['l'][4]"``: the Python expression of a path."""
    parts = ["db"]
    for step in steps:
        kind = type(step)
        # every write notes its path: a short str or int key is its own repr
        if (kind is str and len(step) <= _SHORT_KEY) or (kind is int and -_BIG < step < _BIG):
            parts.append(f"[{step!r}]")
        else:
            parts.append(f"[{_format_step(step)}]")
    return "".join(parts)


#: Keys up to this long are shown whole (their repr is at most 4x + 2 <= 100 characters,
#: :func:`_format_step`'s limit); ints below _BIG have a repr of at most 19 digits.
_SHORT_KEY, _BIG = 24, 10 ** 18


def _format_step(step):
    if isinstance(step, slice):
        parts = ["" if x is None else nodes.short_repr(x, 40) for x in (step.start, step.stop)]
        text = ":".join(parts)
        return text + (f":{nodes.short_repr(step.step, 40)}" if step.step is not None else "")
    return nodes.short_repr(step, 100)


# -- read tracking ---------------------------------------------------------

class Reads(abc.ABC):
    """The read tracker: what an operation read, told to its executor.

    A subclass says what registering one persistent object means
    (:meth:`register`); this class knows which objects a read looked at.
    """

    #: True: also told the containers a *write* walks through (session.PathCheck);
    #: a block's tracker is not (its transaction began up to date).
    paths_of_writes = False

    @abc.abstractmethod
    def register(self, obj):
        """``obj`` (a persistent object) was read."""

    def at(self, node, key=None):
        """The part of ``node`` that holds ``key`` was read (all of it when None)."""
        if isinstance(node, BigDict):
            self.register(node)  # it changes on clear(), which starts a new tree
            if key is None:
                self.register(node.length)
            node = node.tree
        if isinstance(node, OOBTree):
            for part in bucket_path(node, key):
                self.register(part)
        elif isinstance(node, BigList):
            self.register(node)
            for chunk in node._chunks.values():
                self.register(chunk)
        elif hasattr(node, "_p_jar"):
            self.register(node)

    def size(self, node):
        """``len(node)`` was read: its count, not its items (a BigDict's Length,
        a BigList's header; a plain tree counts by reading all its buckets)."""
        if isinstance(node, BigDict):
            self.register(node)
            self.register(node.length)
        elif isinstance(node, OOBTree):
            self.at(node)
        elif hasattr(node, "_p_jar"):  # a list record, a BigList header, a Counter
            self.register(node)

    def whole(self, node):
        """``node`` and everything below it were read (a whole value)."""
        if merging.is_counter(node):  # a number in a record of its own (merging.py)
            self.register(node)
            return
        if not nodes.is_container(node):
            return
        stack = [node]  # not recursive: data stored before the depth limit may nest deeper
        while stack:
            node = stack.pop()
            if merging.is_counter(node):
                self.register(node)
            elif nodes.is_container(node):
                self.at(node)
                stack.extend(node.values() if nodes.is_dict_node(node) else node)


class _Untracked(Reads):
    """Autocommit's tracker (and every write's traversal): reads need no tracking."""

    def register(self, obj):
        pass

    def at(self, node, key=None):
        pass

    def size(self, node):
        pass

    def whole(self, node):
        pass


UNTRACKED = _Untracked()


# -- walking ---------------------------------------------------------------

def traverse(root, steps, reads=UNTRACKED, for_write=False):
    """The node at ``steps`` below ``root``; errors name the failing path.

    Every statement walks its path here, so the common steps -- a str or int
    key of a dict, an int index of a list that is there -- are taken inline
    (:func:`_step`); anything else (a slice, a str value, a missing key, a
    key of the wrong kind) goes through :func:`child`, which has the rules and
    the errors.  Both tell ``reads`` the same objects.
    """
    node = root
    if for_write and not reads.paths_of_writes:
        reads = UNTRACKED
    tracked = reads is not UNTRACKED
    for depth, step in enumerate(steps):
        value = _step(node, step)
        if value is nodes.MISSING:
            if for_write and isinstance(step, slice):
                raise NotAContainerError(format_path(steps[:depth + 1]),
                                         "cannot change data through a slice; index the list "
                                         "itself")
            value = child(node, step, steps[:depth + 1], reads, for_write)
        elif tracked:
            reads.at(node, step)
        node = value
    return node


_DICT_NODES, _LIST_NODES = nodes.DICT_NODES, nodes.LIST_NODES


def _step(node, step):
    """``node[step]`` for a str/int key of a dict or an int index of a list that
    exists; :data:`nodes.MISSING` for everything else (:func:`child` decides).

    Exact ``str``/``int`` only: they are their own stored key (``exact_key``),
    and a bool, a subclass or a float takes the full path.
    """
    kind = type(step)
    if kind is str or kind is int:
        if isinstance(node, _DICT_NODES):
            try:
                return node.get(step, nodes.MISSING)
            except TypeError:  # a key of another kind than the dict's keys
                return nodes.MISSING
        if kind is int and isinstance(node, _LIST_NODES):
            try:
                return node[step]
            except IndexError:
                return nodes.MISSING
    return nodes.MISSING


def child(node, step, steps, reads=UNTRACKED, for_write=False):
    """``node[step]`` with zpydb's errors; ``steps`` is the path of the child.

    A str, bytes or tuple value is indexed (and sliced) as Python does, for
    reading only: ``for_write`` treats it as the scalar it is.  It holds no
    persistent objects (it lives inside its parent's record, which ``reads``
    was told about one level up), so there is nothing more to track.
    """
    if nodes.is_dict_node(node):
        value = nodes.MISSING if isinstance(step, slice) else nodes.find(node, step)
        if value is nodes.MISSING:
            raise KeyNotFoundError(format_path(steps), "no such key")
        reads.at(node, nodes.exact_key(step))
    elif nodes.is_list_node(node):
        value = _list_child(node, step, steps)
        reads.at(node, step)
    elif not for_write and isinstance(node, SEQUENCE_VALUES):
        value = _sequence_child(node, step, steps)
    else:
        raise NotAContainerError(format_path(steps),
                                 f"{format_path(steps[:-1])} is {nodes.describe_type(node)}, "
                                 f"not a dict or list")
    return value


def _list_child(node, step, steps):
    if isinstance(step, slice):
        _check_slice(node, step, format_path(steps))
        return PersistentList(node[step])
    if not isinstance(step, int) or isinstance(step, bool):
        raise NotAContainerError(format_path(steps),
                                 f"list indices must be integers or slices, not "
                                 f"{type(step).__name__}")
    try:
        return node[step]
    except IndexError:
        raise BadIndexError(format_path(steps), _out_of_range(step, node)) from None


def _sequence_child(value, step, steps):
    """``'abc'[0]``, ``b'ab'[1:]``, ``(1, 2)[-1]``: Python's own indexing, zpydb's errors."""
    path = format_path(steps)
    try:
        return value[step]
    except IndexError:
        raise BadIndexError(path, f"index {nodes.short_repr(step, 40)} out of range for "
                                  f"{nodes.describe_type(value)} of {len(value)} items") from None
    except ValueError as exc:  # a slice step of 0
        raise BadArgumentError(path, f"bad slice: {exc}") from None
    except TypeError:
        raise NotAContainerError(path, f"{nodes.type_name(value)} indices must be integers or "
                                       f"slices, not {type(step).__name__}") from None


def _out_of_range(index, lst):
    return f"index {nodes.short_repr(index, 40)} out of range for a list of {len(lst)} items"


def _check_index(lst, index, path):
    if not isinstance(index, int) or isinstance(index, bool):
        raise NotAContainerError(path, f"list indices must be integers, not {type(index).__name__}")
    if not -len(lst) <= index < len(lst):
        raise BadIndexError(f"{path}[{nodes.short_repr(index, 40)}]", _out_of_range(index, lst))


def _check_slice(lst, step, path):
    """A slice Python would refuse (step 0, non-integer bounds) is a BadArgumentError."""
    try:
        step.indices(len(lst))
    except (TypeError, ValueError) as exc:
        raise BadArgumentError(path, f"bad slice: {exc}") from None


def bucket_path(tree, key=None):
    """The tree nodes and bucket(s) that hold ``key`` (all of them when None).

    ``readCurrent`` on the tree object alone would miss changes inside its
    buckets, which are records of their own once the tree grows.
    """
    parts = [tree]
    state = tree.__getstate__()
    if not state or len(state) < 2 or not state[0]:
        return parts  # empty, or a single bucket stored inline in the tree
    children = state[0][0::2]
    separators = state[0][1::2]
    if key is not None:
        index = sum(1 for sep in separators if not key < sep)
        children = children[index:index + 1]
    for kid in children:
        if isinstance(kid, OOBTree):
            parts.extend(bucket_path(kid, key))
        else:
            parts.append(kid)
    return parts


# -- reading ---------------------------------------------------------------

def read(root, steps, reads=UNTRACKED):
    node = traverse(root, steps, reads)
    reads.whole(node)
    return nodes.to_plain(node)


#: Items per read when a value is iterated (``for x in db['l']``, ``db['d'].items()``):
#: each batch is one read of one snapshot (transactions.py ``iterate``), so memory
#: holds one batch, not the whole value.
BATCH_SIZE = 1000
#: A batch that found everything in memory is followed by batches this many times
#: larger (transactions.py ``iterate``): they load nothing, so they hold no more
#: memory, and each batch's fixed cost (its transaction) is spread over more items.
WARM_BATCH_FACTOR = 10

#: What an iteration yields (:func:`read_batch`): the items (or keys), or a dict's
#: keys, values or (key, value) pairs.
ITERATIONS = ("iter", "keys", "values", "items")


def read_batch(root, steps, kind, position, size, reads=UNTRACKED, backwards=False):
    """One batch of iterating the value at ``steps``: ``(plain items, next position)``.

    ``kind`` is one of :data:`ITERATIONS` (``keys``/``values``/``items`` only
    for a dict: NotAContainerError otherwise); ``position`` is None for the
    first batch, else the position the previous batch returned; the next
    position is None at the end.  ``size``: at most this many items (None: all).
    A list's position is an index, a dict's the last key read (the next batch
    starts after it): every batch must read the same snapshot, or items would be
    skipped or repeated.  ``reads`` is told what each batch looked at (the
    chunks, buckets and values of this batch), not the whole value.
    ``backwards``: from the end (``reversed()``); a list's position is then
    where the next batch ends, a dict's the last (smallest) key read.
    """
    node = traverse(root, steps, reads)
    adapter = adapt(node, format_path(steps), len(steps))
    adapter.method(kind, READ)  # keys() of a list: NotAContainerError, before any item
    return adapter.batch(kind, position, size, reads, backwards)


def _list_span(node, start, stop, reads):
    """Items ``start:stop`` of a stored list, loading (and tracking) only their chunks."""
    if not isinstance(node, BigList):
        reads.at(node)
        return _items_of(node)[start:stop]
    reads.register(node)
    if stop <= start:
        return []
    width = node._chunk_size
    items = []
    offset = (start // width) * width  # where the first chunk starts
    for chunk in node._chunks.values(min=start // width, max=(stop - 1) // width):
        reads.register(chunk)
        items += _items_of(chunk)[max(0, start - offset):stop - offset]
        offset += width
    return items


def _items_of(lst):
    """The plain list inside a PersistentList (``UserList.data``): iterating the
    PersistentList itself calls ``__getitem__`` once per item, in Python."""
    return lst.data if isinstance(lst, PersistentList) else lst


def _plain_item(value, reads):
    reads.whole(value)
    return nodes.to_plain(value)


def _plain_items(values, reads):
    """Plain copies of ``values`` (a new list of stored items), telling ``reads``.

    Iteration's hot path: a batch of scalars (immutable, already plain) is
    returned as it is, checked by one pass of ``type`` in C.
    """
    if reads is UNTRACKED and _SCALAR_TYPES.issuperset(map(type, values)):
        return values
    return [_plain_item(x, reads) for x in values]


def read_attribute(root, steps, name, reads=UNTRACKED):
    """``db['s'].upper``: a public attribute of the value, taken from a plain copy.

    A dict or list is not copied (nor tracked whole) for a name that dicts or
    lists do not have (``db.hisotry()`` does not read the whole database to
    say so).
    """
    node = traverse(root, steps, reads)
    path = format_path(steps)
    kind = dict if nodes.is_dict_node(node) else list if nodes.is_list_node(node) else None
    if kind is not None and not hasattr(kind, name):
        raise AttributeNotFoundError(path, f"{nodes.describe_type(node)} has no attribute {name!r}")
    reads.whole(node)
    value = nodes.to_plain(node)
    try:
        return getattr(value, name)
    except AttributeError:
        raise AttributeNotFoundError(
            path, f"{nodes.describe_type(value)} has no attribute {name!r}") from None


def contains(node, item, path):
    if nodes.is_dict_node(node):
        return nodes.find(node, item) is not nodes.MISSING
    _require_container(node, path)
    return any(compare_equal(nodes.to_plain(x), item, path) for x in node)


#: Exceptions that are already zpydb's or ZODB's own: never rewrapped.
PASS_THROUGH = (Error, POSError)


def compare_equal(stored, item, path):
    """``stored == item``; an ``__eq__`` of the caller's object that raises is an OperationError."""
    try:
        return bool(stored == item)
    except PASS_THROUGH:
        raise
    except Exception as exc:
        raise OperationError(path, f"comparing {nodes.short_repr(item, 60)} with an item "
                                   f"raised {_exc_text(exc)}") from exc


def _exc_text(exc):
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails too
        return type(exc).__name__


def apply_operator(symbol, func, left, right, path, shown=None):
    """``func(left, right)`` for ``<path> <symbol> <right>``, failing as a zpydb error.

    Values that do not mix (``1 + 'x'``, ``[] < 1``), a division by zero, or
    an operand's own method that raises become an OperationError naming the
    path, with the original exception as its ``__cause__``; errors that are
    already zpydb's or ZODB's pass through.  ``shown``: the expression for the
    message when it is not ``path symbol right``.
    """
    try:
        return func(left, right)
    except PASS_THROUGH:
        raise
    except Exception as exc:
        shown = shown or f"{path} {symbol} {nodes.short_repr(right, 60)}"
        raise OperationError(path, f"cannot compute {shown} ({nodes.describe_type(left)} and "
                                   f"{nodes.describe_type(right)}): {_exc_text(exc)}") from exc


def apply_unary(shown, func, value, path):
    """``func(value)`` for a unary operation (``-db['n']``, ``abs(db['n'])``, ``format``...),
    failing as an OperationError naming the path, as :func:`apply_operator` does."""
    try:
        return func(value)
    except PASS_THROUGH:
        raise
    except Exception as exc:
        raise OperationError(path, f"cannot compute {shown} ({nodes.describe_type(value)}): "
                                   f"{_exc_text(exc)}") from exc


def convert(value, kind, func, path):
    """``func(value)`` (``int(db['n'])``...); a value that does not convert is an OperationError."""
    try:
        return func(value)
    except PASS_THROUGH:
        raise
    except Exception as exc:
        raise OperationError(path, f"{nodes.describe_type(value)} cannot be used as {kind}: "
                                   f"{_exc_text(exc)}") from exc


def _int_arg(value, name, path):
    """An index argument (``insert``, ``pop``, ``index`` bounds) as an int, or BadArgumentError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArgumentError(path, f"{name}() needs an integer index, not "
                                     f"{nodes.describe_type(value)}")
    return value


def _require_container(node, path):
    if not nodes.is_container(node):
        raise NotAContainerError(path, f"{nodes.describe_type(node)} has no items")


# -- writing ---------------------------------------------------------------

def set_item(root, steps, value, reads=UNTRACKED):
    """``db[...][key] = value``: convert deeply (depth counted from db), then store.

    A scalar, or a dict of str keys and scalars (a bulk load's record), stored
    under a str or int key of a dict -- most writes -- takes the short way:
    nothing can fail to convert, the key is its own stored form, and no path
    is formatted unless a message needs it.
    """
    # a key of db itself (a bulk load's) has no path to walk
    parent = root if len(steps) == 1 else traverse(root, steps[:-1], reads, for_write=True)
    key = steps[-1]
    kind = type(key)
    if (kind is str or kind is int) and isinstance(parent, _DICT_NODES):
        node = value if type(value) in _SCALAR_TYPES else _plain_record(value, len(steps))
        if node is not _LONG_WAY:
            try:
                parent[key] = node
            except TypeError:  # a key of another kind than the dict's: the long way says so
                pass
            else:
                if type(parent) is OOBTree:  # only a plain tree is ever wrapped
                    _wrap_if_big(root, steps[:-1], parent)
                return
    path = format_path(steps)
    sliced = isinstance(key, slice)
    node = nodes.to_node(value, path, len(steps) - sliced)  # a slice's items sit at len(steps)
    if nodes.is_dict_node(parent):
        if sliced:
            raise NotAContainerError(path, "dicts cannot be sliced")
        if kind is not str:
            key = nodes.check_key_type(key, format_path(steps[:-1]), len(steps) - 1)
        _store_key(parent, key, node, path)
        _wrap_if_big(root, steps[:-1], parent)
    elif nodes.is_list_node(parent):
        _store_index(parent, key, node, steps)
        _promote_if_big(root, steps[:-1], parent)
    else:
        raise NotAContainerError(path, f"{format_path(steps[:-1])} is "
                                       f"{nodes.describe_type(parent)}, not a dict or list")


_SCALAR_TYPES = frozenset(nodes.SCALARS)
_LONG_WAY = object()


def _plain_record(value, level):
    """The stored form of a dict of str keys and scalars at a level the depth limit
    allows (it cannot fail to convert), or :data:`_LONG_WAY`: :func:`nodes.to_node`
    converts the rest, with the path its errors name."""
    node = nodes.plain_dict_node(value) if level <= nodes.MAX_DEPTH else None
    return _LONG_WAY if node is None else node


_first, _second = operator.itemgetter(0), operator.itemgetter(1)


def _store_key(tree, key, node, path):
    try:
        tree[key] = node
    except TypeError:
        other = next(iter(tree.keys()), key)
        raise UnorderableKeyError(path, nodes.unorderable_message(key, other)) from None


def _store_index(lst, index, node, steps):
    path = format_path(steps)
    if isinstance(index, slice):
        if not nodes.is_list_node(node):
            raise NotAContainerError(path, "slice assignment needs a list or range")
        _check_slice(lst, index, path)
        try:
            lst[index] = list(node)  # fails before changing anything
        except ValueError as exc:  # an extended slice of another length
            raise BadArgumentError(path, str(exc)) from None
        return
    _check_index(lst, index, format_path(steps[:-1]))
    lst[index] = node


def del_item(root, steps, reads=UNTRACKED):
    parent = traverse(root, steps[:-1], reads, for_write=True)
    key, path = steps[-1], format_path(steps)
    if not isinstance(key, slice):
        child(parent, key, steps, for_write=True)
        if nodes.is_dict_node(parent):
            key = nodes.exact_key(key)
    elif not nodes.is_list_node(parent):
        raise NotAContainerError(path, "only lists can be sliced")
    else:
        _check_slice(parent, key, path)
    del parent[key]
    if nodes.is_dict_node(parent):
        _wrap_if_big(root, steps[:-1], parent)


# -- node adapters: the methods a statement may call -------------------------

#: Readers that depend on a value's size only: a block registers its count, not its items.
SIZE_READERS = ("len", "bool")


def call_reader(root, steps, name, args, kwargs, reads=UNTRACKED):
    """A read method (``get``, ``keys``, ``index``, ``len``...): plain results, no writes."""
    node = traverse(root, steps, reads)
    if name in SIZE_READERS:
        reads.size(node)
    else:
        reads.whole(node)
    adapter = adapt(node, format_path(steps), len(steps))
    return adapter.method(name, READ)(adapter, *args, **kwargs)


def call_writer(root, steps, name, args, kwargs, reads=UNTRACKED):
    """A mutating method of a list or dict, applied to the stored node.

    Each checks its arguments and converts every new value before it changes
    anything, so a statement that fails inside a block leaves nothing behind.
    """
    node = traverse(root, steps, reads, for_write=True)
    adapter = adapt(node, format_path(steps), len(steps))
    result = adapter.method(name, WRITE)(adapter, *args, **kwargs)
    adapter.finished(root, steps)
    return result


def adapt(node, path, level):
    """The adapter of a stored node: :class:`DictNode`, :class:`ListNode`,
    :class:`SequenceNode` (a str, bytes or tuple value) or :class:`Node`.

    ``level``: how deep the node sits below db (its new items sit one deeper).
    """
    if nodes.is_dict_node(node):
        return DictNode(node, path, level)
    if nodes.is_list_node(node):
        return ListNode(node, path, level)
    if isinstance(node, SEQUENCE_VALUES):
        return SequenceNode(node, path, level)
    return Node(node, path, level)


READ, WRITE = "read", "write"


def _method(kind, low, high):
    """Mark an adapter method as a reader or a writer of ``low`` to ``high`` arguments.

    The number of positional arguments is checked before anything is read or
    changed, and a wrong one is a BadArgumentError (not Python's TypeError).
    """
    def mark(func):
        name = func.__name__

        @functools.wraps(func)
        def method(self, *args, **kwargs):
            if not low <= len(args) <= high:
                wanted = (f"{low}" if low == high else f"{low} to {high}") + " argument"
                wanted += "" if high == 1 else "s"
                raise BadArgumentError(self.path, f"{name}() takes {wanted}, not {len(args)}")
            return func(self, *args, **kwargs)
        method.kind = kind
        return method
    return mark


def reader(low, high=None):
    return _method(READ, low, low if high is None else high)


def writer(low, high=None):
    return _method(WRITE, low, low if high is None else high)


class Node:
    """A stored node as a statement sees it: a scalar has no methods but these.

    Subclasses add a node kind's methods, each marked ``@reader`` or
    ``@writer`` with the arguments it takes; :meth:`method` finds them by name.
    """

    __slots__ = ("node", "path", "level")

    def __init__(self, node, path, level):
        self.node, self.path, self.level = node, path, level

    def method(self, name, kind):
        """The ``kind`` (READ or WRITE) method ``name``; NotAContainerError if there is none."""
        method = getattr(type(self), name, None)
        if getattr(method, "kind", None) != kind:
            raise NotAContainerError(
                self.path, f"{nodes.describe_type(self.node)} has no method {name}()")
        return method

    def finished(self, root, steps):
        """After a writer succeeded (a list may become a BigList)."""

    @reader(0)
    def len(self):
        _require_container(self.node, self.path)
        return len(self.node)

    @reader(1)
    def contains(self, item):
        return contains(self.node, item, self.path)

    @reader(0)
    def iter(self):
        _require_container(self.node, self.path)
        node = self.node
        return [nodes.to_plain(x) for x in (node.keys() if nodes.is_dict_node(node) else node)]

    def batch(self, kind, position, size, reads, backwards=False):
        """:func:`read_batch` of a value that lives in its parent's record: all at once."""
        items = self.iter()
        return (items[::-1] if backwards else items), None

    @reader(0)
    def bool(self):
        """``bool`` of the value; a dict or list is not copied for it (``if db['l']:``)."""
        if nodes.is_container(self.node):
            return len(self.node) > 0
        return apply_unary(f"bool({self.path})", bool, nodes.to_plain(self.node), self.path)


class SequenceNode(Node):
    """A str, bytes or tuple value: read-only, with the sequence readers.

    ``len``, ``in``, iteration, ``index`` and ``count`` as Python does them;
    Python checks the arguments (``str.count`` takes bounds, ``tuple.count``
    does not), and its errors become zpydb's.  No writers: nothing writes into
    these values (assign the whole value instead).
    """

    __slots__ = ()

    @reader(0)
    def len(self):
        return len(self.node)

    @reader(0)
    def iter(self):
        return list(self.node)

    @reader(1)
    def contains(self, item):
        return self._call("in", lambda: item in self.node, item)

    @reader(0, 3)
    def index(self, *args):
        return self._call("index()", lambda: self.node.index(*args), *args)

    @reader(0, 3)
    def count(self, *args):
        return self._call("count()", lambda: self.node.count(*args), *args)

    def _call(self, what, func, *args):
        value, path = self.node, self.path
        try:
            return func()
        except PASS_THROUGH:
            raise
        except ValueError:
            raise ValueNotFoundError(path, f"{nodes.short_repr(args[0], 60)} is not in "
                                           f"{nodes.describe_type(value)}") from None
        except TypeError as exc:
            raise BadArgumentError(path, f"{what} on {nodes.describe_type(value)}: {exc}") from None


class ListNode(Node):
    """A stored list (PersistentList or BigList) and list's methods."""

    __slots__ = ()

    def finished(self, root, steps):
        _promote_if_big(root, steps, self.node)

    def batch(self, kind, position, size, reads, backwards=False):
        """Items ``position:position+size`` (a BigList loads only their chunks);
        backwards, items ``position-size:position`` last first."""
        node = self.node
        if backwards:
            stop = len(node) if position is None else min(position, len(node))
            start = 0 if size is None else max(0, stop - size)
            items = _plain_items(_list_span(node, start, stop, reads), reads)
            items.reverse()  # a new list either way (_list_span copies)
            return items, (start if start > 0 else None)
        start = position or 0
        stop = len(node) if size is None else min(len(node), start + size)
        items = _plain_items(_list_span(node, start, stop, reads), reads)
        return items, (stop if stop < len(node) else None)

    # -- readers: ``count``/``index`` compare plain copies, with compare_equal's errors
    def _matches(self, name, item, bounds):
        start, stop = ([_int_arg(a, name, self.path) for a in bounds] + [None, None])[:2]
        window = range(len(self.node))[start:stop]
        return (i for i, x in itertools.islice(enumerate(self.node), window.start, window.stop)
                if compare_equal(nodes.to_plain(x), item, self.path))

    @reader(1, 3)
    def index(self, item, *bounds):
        index = next(self._matches("index", item, bounds), None)
        if index is None:
            raise ValueNotFoundError(self.path, f"{nodes.short_repr(item, 60)} is not in the list")
        return index

    @reader(1)
    def count(self, item):
        return sum(1 for _ in self._matches("count", item, ()))

    # -- writers
    def _new(self, value, position):
        return nodes.to_node(value, f"{self.path}[{position}]", self.level + 1)

    @writer(1)
    def append(self, value):
        self.node.append(self._new(value, len(self.node)))

    @writer(1)
    def extend(self, values):
        n = len(self.node)
        items = iterable_arg(values, "extend", self.path)
        self.node.extend([self._new(x, n + i) for i, x in enumerate(items)])

    @writer(2)
    def insert(self, index, value):
        n = len(self.node)
        index = _int_arg(index, "insert", self.path)
        position = max(0, index + n) if index < 0 else min(index, n)  # as list.insert clamps
        self.node.insert(position, self._new(value, position))

    @writer(0, 1)
    def pop(self, *index):
        index = _int_arg(index[0], "pop", self.path) if index else -1
        if not len(self.node):
            raise BadIndexError(self.path, "pop from an empty list")
        _check_index(self.node, index, self.path)
        return nodes.to_plain(self.node.pop(index))

    @writer(1)
    def remove(self, value):
        del self.node[self.index(value)]

    @writer(0)
    def sort(self, key=None, reverse=False):
        """list.sort on a plain copy; nothing changes unless every item could be compared."""
        node, path = self.node, self.path
        if key is not None and not callable(key):
            raise BadArgumentError(path, f"sort(key=...) needs a function, not "
                                         f"{nodes.describe_type(key)}")
        if not isinstance(reverse, int):
            raise BadArgumentError(path, f"sort(reverse=...) needs True or False, not "
                                         f"{nodes.describe_type(reverse)}")
        plain = [nodes.to_plain(x) for x in node]
        try:
            order = sorted(range(len(plain)),
                           key=(lambda i: key(plain[i])) if key else plain.__getitem__,
                           reverse=bool(reverse))
        except PASS_THROUGH:
            raise
        except Exception as exc:  # items of mixed types, or the key function failed
            raise OperationError(path, f"cannot sort the list: {_exc_text(exc)}") from exc
        items = list(node)
        node[:] = [items[i] for i in order]

    @writer(0)
    def reverse(self):
        self.node.reverse()

    @writer(0)
    def clear(self):
        del self.node[:]


class DictNode(Node):
    """A stored dict (an OOBTree) and dict's methods."""

    __slots__ = ()

    # -- readers
    @reader(1, 2)
    def get(self, key, default=None):
        value = nodes.find(self.node, key)
        return default if value is nodes.MISSING else nodes.to_plain(value)

    @reader(0)
    def keys(self):
        return list(self.node.keys())

    @reader(0)
    def values(self):
        return [nodes.to_plain(v) for v in self.node.values()]

    @reader(0)
    def items(self):
        return [(k, nodes.to_plain(v)) for k, v in self.node.items()]

    def batch(self, kind, position, size, reads, backwards=False):
        """Up to ``size`` keys after ``position`` (the last key read), in key order
        (backwards: before it, largest first)."""
        tree = self.node
        if backwards:
            found = descending_items(tree, *([] if position is None else [position[0]]))
        elif position is None:
            found = tree.items()
        else:
            found = tree.items(min=position[0], excludemin=True)
        # not found[:n]: a BTree items slice counts (loads) every bucket to the end
        taken = list(itertools.islice(found, None if size is None else size + 1))
        more = size is not None and len(taken) > size
        del taken[size if more else len(taken):]
        if reads is not UNTRACKED:
            if not taken:  # the bucket where a new key would appear was read too
                reads.at(tree, None if position is None else position[0])
            for key, _ in taken:
                reads.at(tree, key)
        if kind == "keys" or kind == "iter":  # stored keys are exact builtins: plain already
            items = list(map(_first, taken))
        elif (kind == "items" and reads is UNTRACKED
              and _SCALAR_TYPES.issuperset(map(type, map(_second, taken)))):
            items = taken  # new (key, scalar) tuples: plain already
        else:
            values = _plain_items(list(map(_second, taken)), reads)
            items = values if kind == "values" else list(zip(map(_first, taken), values))
        return items, ((taken[-1][0],) if more else None)

    # -- writers
    @writer(0, 1)
    def update(self, other=(), **kwargs):
        _update(self.node, mapping_arg(other, self.path), kwargs, self.path, self.level)

    @writer(1, 2)
    def setdefault(self, key, default=None):
        tree, path = self.node, self.path
        value = nodes.find(tree, key)
        if value is nodes.MISSING:
            key = nodes.check_key_type(key, path, self.level)
            key_path = f"{path}[{nodes.short_repr(key)}]"
            value = nodes.to_node(default, key_path, self.level + 1)
            _store_key(tree, key, value, key_path)
        return nodes.to_plain(value)

    @writer(1, 2)
    def pop(self, key, *default):
        tree = self.node
        if nodes.find(tree, key) is not nodes.MISSING:
            return nodes.to_plain(tree.pop(nodes.exact_key(key)))
        if default:
            return default[0]
        raise KeyNotFoundError(f"{self.path}[{nodes.short_repr(key)}]", "no such key")

    @writer(0)
    def popitem(self):
        tree = self.node
        if not tree.keys():
            raise KeyNotFoundError(self.path, "popitem(): the dict is empty")
        key = tree.maxKey() if isinstance(tree, (OOBTree, BigDict)) else list(tree.keys())[-1]
        return key, nodes.to_plain(tree.pop(key))

    @writer(0)
    def clear(self):
        self.node.clear()

    def finished(self, root, steps):
        _wrap_if_big(root, steps, self.node)


# -- arguments and helpers of the writers ----------------------------------

def iterable_arg(value, name, path):
    if isinstance(value, (list, tuple, range)):
        return value
    try:
        return list(value)
    except Exception as exc:
        raise BadArgumentError(path, f"{name}() needs an iterable (a list, tuple, range...), "
                                     f"not {nodes.describe_type(value)}") from exc


def mapping_arg(value, path):
    try:
        return dict(value)
    except Exception as exc:
        raise BadArgumentError(path, f"update() needs a dict or (key, value) pairs, not "
                                     f"{nodes.short_repr(value, 60)} ({_exc_text(exc)})") from exc


def _update(tree, incoming, kwargs, path, level):
    """dict.update, all or nothing: keys already stored are put back on failure."""
    incoming.update(kwargs)
    keys = [nodes.check_key_type(key, path, level) for key in incoming]
    converted = {key: nodes.to_node(value, f"{path}[{nodes.short_repr(key)}]", level + 1)
                 for key, value in zip(keys, incoming.values())}
    stored = []  # (key, old value or MISSING) of every key written so far
    try:
        for key, node in converted.items():
            old = nodes.find(tree, key)
            _store_key(tree, key, node, f"{path}[{nodes.short_repr(key)}]")
            stored.append((key, old))
    except BaseException:
        for key, old in reversed(stored):
            if old is nodes.MISSING:
                del tree[key]
            else:
                tree[key] = old
        raise


def augment(root, steps, symbol, func, other, reads=UNTRACKED):
    """``p op= other`` as one read-modify-write, in the transaction it is given.

    ``+=``/``-=`` of a number on a number does not rewrite the number in its
    parent: it adds to a :class:`~zpydb.merging.Counter` record (made on the
    first increment), whose conflict resolution adds concurrent deltas, so
    any number of clients can increment one key without a single conflict.
    ``+=`` on a list is ``extend``, in place, as Python's ``list.__iadd__``:
    it costs the k items appended, not the n already stored, and concurrent
    extends merge.  Everything else reads the value, computes, and stores
    the result.  ``other`` may be a :class:`Drained` iterator.
    """
    path = format_path(steps)
    if not steps:
        raise NotAContainerError("db", f"cannot use {symbol}= on the root")
    node = traverse(root, steps, reads)
    if symbol == "+" and nodes.is_list_node(node):
        reads.size(node)  # the list's own record: its items do not change the result
        # call_writer walks the path again for writing: ``db['l'][:] += x`` is
        # refused (the read walk above gave a copy of the slice, not the list)
        return call_writer(root, steps, "extend", [_extension(other, path)], {}, reads)
    if isinstance(other, Drained):
        other = other.source  # as Python: ``n += iterator`` fails naming the iterator's type
    if _is_delta(symbol, node, other):
        reads.at(node)  # a block that increments has read the number
        return _add_to_counter(root, steps, node, other if symbol == "+" else -other)
    reads.whole(node)
    current = nodes.to_plain(node)
    result = _operate(func, symbol, current, other, path)
    if merging.is_counter(node) and _is_number(result):
        node.set(result)  # never merges with a concurrent increment
        return None
    return set_item(root, steps, result, reads)


class Drained:
    """An iterator on the right of ``+=``, read at most once.

    A statement may run several times (conflict retries), and an iterator
    can be read only once: its items are kept for every attempt.  It is read
    only if the target is a list (``n += iterator`` fails without consuming
    it, naming its type, as in Python).
    """

    __slots__ = ("source", "_items")

    def __init__(self, source):
        self.source = source
        self._items = None

    def items(self):
        if self._items is None:
            self._items = list(self.source)
        return self._items


def _extension(other, path):
    """The items ``list += other`` appends: any iterable, as Python's list accepts."""
    if isinstance(other, Drained):
        return other.items()
    if isinstance(other, (list, tuple, range)):
        return other
    return _operate(lambda _, value: list(value), "+", None, other, path)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_delta(symbol, node, other):
    current = node.value if merging.is_counter(node) else node
    return symbol in "+-" and _is_number(current) and _is_number(other)


def _add_to_counter(root, steps, node, delta):
    if merging.is_counter(node):
        node.add(delta)
        return None
    parent = traverse(root, steps[:-1], for_write=True)
    parent[steps[-1]] = merging.Counter(node + delta)  # one write to the parent, once
    return None


def _operate(func, symbol, current, other, path):
    """``func(current, other)``; a failure is a zpydb error naming the path."""
    try:
        return func(current, other)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise OperationError(path, f"cannot compute {path} {symbol}= {_safe_repr(other)}: "
                                   f"{exc}") from exc


def _safe_repr(value, limit=80):
    try:
        text = repr(value)
    except Exception:  # an int past sys.get_int_max_str_digits(), a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _wrap_if_big(root, steps, node):
    """Swap a plain OOBTree that spans several buckets for a BigDict (bigdict.py).

    Runs after every write into a dict, in the same transaction: the write
    that splits a one-bucket tree, or the first write into a big dict stored
    by format 1, gives it its Length.  The data root is replaced in ZODB's
    root mapping.  A tree that is not reachable for writing (a read-only
    database has no jar) stays as it is: its ``len()`` counts, correctly.
    """
    if not needs_wrapping(node):
        return
    if steps:
        parent = traverse(root, steps[:-1], for_write=True)
        key = steps[-1]
        parent[nodes.exact_key(key) if nodes.is_dict_node(parent) else key] = BigDict(node)
    elif node is root and node._p_jar is not None:
        node._p_jar.root()[nodes.DATA_KEY] = BigDict(node)


def _promote_if_big(root, steps, node):
    """Swap a PersistentList that grew past the threshold for a BigList."""
    if isinstance(node, PersistentList) and len(node) > BIG_LIST_THRESHOLD:
        if not steps:
            return
        parent = traverse(root, steps[:-1])
        parent[steps[-1]] = BigList(node)
        merging.retire(node)  # a concurrent append to it conflicts instead of vanishing
