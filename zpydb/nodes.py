"""Conversion between plain Python values and persistent nodes.

The tree a user sees is plain dicts, lists and scalars.  What ZODB stores is:

* dict  -> ``OOBTree``: a balanced tree of buckets, so a write touches one
  bucket (a few dozen keys) however large the dict grows, and concurrent writes
  to different keys are merged by BTrees' conflict resolution; past one bucket
  a :class:`~zpydb.bigdict.BigDict` (the tree plus a ``BTrees.Length``, so
  ``len()`` reads one record);
* list, range -> ``PersistentList``, or past :data:`BIG_LIST_THRESHOLD` items a
  :class:`~zpydb.biglist.BigList` (a counted tree of chunks) so appends stay cheap;
* str, bytes, int, float, bool, None, tuple -> stored as they are (immutable,
  pickled inside their parent's record).  A subclass instance (an IntEnum, a
  namedtuple, a str subclass) is stored as its exact base type, copied without
  running its methods: no class of yours is ever stored (docs/security.md).

Every write converts deeply (:func:`to_node`) and every read copies deeply
(:func:`to_plain`), so no persistent object ever reaches the caller: mutating a
value you read never changes the database.

Dict keys must be mutually orderable (an OOBTree compares keys to place them):
all strings, all numbers, all bytes, or all tuples that compare element by
element.  A new dict with mixed keys, or a key that cannot be ordered against an
existing dict's keys, raises :class:`~zpydb.errors.UnorderableKeyError` before
anything is committed; a lookup with a key of another type simply finds nothing.

Values nest at most :data:`MAX_DEPTH` levels below ``db`` and never contain
themselves: :func:`to_node` refuses both with an UnstorableValueError naming
the path, so what is stored can always be read, printed and exported.
"""

import operator
import reprlib
from collections.abc import Mapping

from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping

from .bigdict import BigDict, spans_buckets
from .biglist import BIG_LIST_THRESHOLD, BigList
from . import safety
from .errors import UnorderableKeyError, UnstorableValueError
from .merging import AppendList, Counter

SCALARS = (str, bytes, int, float, bool, type(None))
_PLAIN = frozenset(SCALARS)  # exact types a copy can share (immutable)
_second = operator.itemgetter(1)

#: At most this many dicts, lists and tuples (and tuple keys) inside one another,
#: counted from db: ``db['a'] = [[1]]`` puts lists at levels 1 and 2.  Every
#: write checks it, so nothing is stored that reading, printing (pprint),
#: JSON export or ZODB's pickling cannot handle; each of those recurses a few
#: Python frames per level, and 100 levels leave most of the default recursion
#: limit (1000) to the caller.
MAX_DEPTH = 100
KEY_TYPES = (str, bytes, int, float, bool, tuple)
DICT_NODES = (OOBTree, BigDict, PersistentMapping)
#: The key of ZODB's root mapping that holds db's own dict (the data root).
DATA_KEY = "zpydb"
LIST_NODES = (PersistentList, BigList)

#: Types a value may have; extended by zpydb.files for File values.
extra_storable = {}


def register_value_type(plain_type, to_node_func, node_type, to_plain_func):
    """Let another module (zpydb.files) teach the converter one more value type."""
    extra_storable[plain_type] = to_node_func
    extra_storable[node_type] = None
    _plain_converters[node_type] = to_plain_func


_plain_converters = {}


def is_dict_node(node):
    return isinstance(node, DICT_NODES)


def is_list_node(node):
    return isinstance(node, LIST_NODES)


def is_container(node):
    return is_dict_node(node) or is_list_node(node)


def to_node(value, path="db", level=1, parents=()):
    """Convert a plain value into what zpydb stores, checking every type and key.

    ``path`` names where the value is going, for the error message; ``level``
    is how many subscripts below ``db`` it will sit (``db['a']`` is 1), so
    that the nesting limit (:data:`MAX_DEPTH`) holds for values written at
    deep paths too; ``parents`` are the ids of the containers around it being
    converted (a value that contains itself is refused, not recursed into).
    Raises a TypeError subclass, having built nothing persistent that could
    be committed.
    """
    if type(value) in SCALARS:
        return value
    if isinstance(value, SCALARS):  # a subclass (IntEnum...): stored as its base value
        return safety.exact_scalar(value, path)
    if type(value) is dict:  # before the Mapping ABC check, which costs more than the rest
        return _dict_node(value, path, level, _enter(value, path, level, parents))
    if isinstance(value, Mapping):
        return _dict_node(value, path, level, _enter(value, path, level, parents))
    if isinstance(value, (list, range)) or _is_sequence_view(value):
        parents = _enter(value, path, level, parents)
        items = [item if type(item) in SCALARS  # the common case, without a path string
                 else to_node(item, f"{path}[{index}]", level + 1, parents)
                 for index, item in _items(value, path)]
        return make_list_node(items)
    if isinstance(value, tuple):
        _enter(value, path, level, ())
        return tuple(_tuple_item(item, f"{path}[{index}]", level + 1)
                     for index, item in enumerate(safety.exact_tuple(value, path)))
    converter = _extra_converter(value)
    if converter is not None:
        return converter(value)
    if type(value).__module__ == "zpydb.paths":  # a Path inside a list/dict/tuple
        raise UnstorableValueError(
            path, f"{value._expr()} inside a value is a reference, not a value: store "
                  f"{value._expr()}.value() (assigning a path itself, db[...] = "
                  f"{value._expr()}, copies it)")
    raise UnstorableValueError(
        path, f"cannot store a value of type {type(value).__name__}; zpydb stores dict, "
              f"list, range, tuple, str, bytes, int, float, bool, None and zpydb.File")


def make_list_node(items):
    """A PersistentList for ordinary lists, a BigList past the threshold."""
    if len(items) > BIG_LIST_THRESHOLD:
        return BigList(items)
    return AppendList(items)  # concurrent appends merge (merging.py)


def _is_sequence_view(value):
    return type(value).__name__ in ("dict_keys", "dict_values")


def _extra_converter(value):
    for plain_type, converter in extra_storable.items():
        if converter is not None and isinstance(value, plain_type):
            return converter
    return None


def _enter(value, path, level, parents):
    """Refuse a container nested past MAX_DEPTH or inside itself; else its parents + it."""
    if level > MAX_DEPTH:
        raise UnstorableValueError(
            path, f"nested too deeply: zpydb stores dicts, lists and tuples at most "
                  f"{MAX_DEPTH} levels below db, and this one would be at level {level}")
    if id(value) in parents:
        raise UnstorableValueError(
            path, f"the value contains itself (this {type(value).__name__} is one of its "
                  f"own items, a cycle); zpydb stores trees, so store a copy or a key")
    return parents + (id(value),)


def _items(value, path):
    """``enumerate(value)``; a user container that fails to iterate is an UnstorableValueError."""
    if type(value) in (list, range):
        return enumerate(value)  # builtins: lazily, nothing can fail
    try:
        return list(enumerate(value))
    except Exception as exc:
        raise UnstorableValueError(
            path, f"reading the {type(value).__name__} to store it raised "
                  f"{type(exc).__name__}: {exc}") from exc


def _tuple_item(item, path, level):
    if type(item) in SCALARS:
        return item
    if isinstance(item, SCALARS):
        return to_node(item, path)
    if isinstance(item, tuple):
        _enter(item, path, level, ())
        return tuple(_tuple_item(x, f"{path}[{i}]", level + 1)
                     for i, x in enumerate(safety.exact_tuple(item, path)))
    raise UnstorableValueError(
        path, f"a tuple may hold only scalars and tuples, not {type(item).__name__} "
              f"(use a list for nested data)")


def _dict_node(mapping, path, level, parents):
    node = plain_dict_node(mapping)
    if node is not None:
        return node
    pairs = _pairs(mapping, path)
    keys = [key if type(key) is str else check_key_type(key, path, level) for key, _ in pairs]
    check_keys_orderable(keys, path)
    values = [value if type(value) in _PLAIN
              else to_node(value, f"{path}[{short_repr(key)}]", level + 1, parents)
              for key, (_, value) in zip(keys, pairs)]
    # inserted in C, in order (a later equal key wins)
    return make_dict_node(OOBTree(list(zip(keys, values))))


def plain_dict_node(mapping):
    """The node of a builtin dict whose keys are all exact str and values all exact
    scalars (a bulk load's records), or None for any other value.

    Such a dict needs none of :func:`_dict_node`'s checks: str keys always order
    against each other, scalars convert to themselves, and it can neither nest
    (its depth is its caller's to check) nor contain itself.  So the tree is
    built from the dict in C, and an error naming a path is never needed.
    """
    if type(mapping) is not dict:
        return None
    for key, value in mapping.items():
        if type(key) is not str or type(value) not in _PLAIN:
            return None
    tree = OOBTree(mapping)
    # fewer keys than a bucket holds: one bucket, no need to ask the tree
    return tree if len(mapping) < _BUCKET_SIZE else make_dict_node(tree)


#: Keys one OOBTree bucket holds before it splits (BTrees' ``max_leaf_size``).
_BUCKET_SIZE = OOBTree.max_leaf_size


def make_dict_node(tree):
    """The OOBTree itself while it is one bucket, a BigDict (with its count) past that."""
    return BigDict(tree) if spans_buckets(tree) else tree


def _pairs(mapping, path):
    """``list(mapping.items())``; a failing user mapping is an UnstorableValueError."""
    if type(mapping) is dict:
        return list(mapping.items())  # a builtin dict: nothing can fail
    try:
        return [(key, mapping[key]) for key in mapping]
    except Exception as exc:
        raise UnstorableValueError(
            path, f"reading the {type(mapping).__name__} to store it raised "
                  f"{type(exc).__name__}: {exc}") from exc


def check_key_type(key, path, level=0):
    """The key as stored (exact builtin types), or UnstorableValueError.

    ``path``/``level``: the dict that gets the key.  Tuple keys count towards
    the nesting limit from the dict's level, as values do.
    """
    exact = exact_key(key, MAX_DEPTH - level)
    if exact is None:
        raise UnstorableValueError(
            f"{path}[{short_repr(key, 60)}]",
            f"dict keys must be str, bytes, int, float, bool or tuples of those (nested at "
            f"most {MAX_DEPTH} levels below db), not {describe_type(key)}")
    return exact


#: str/bytes/int/float subclasses become the builtin type (their own methods never run).
_EXACT_COPY = ((bool, bool), (str, str.__str__), (bytes, bytes.__bytes__),
               (int, int.__int__), (float, float.__float__))


def exact_key(key, room=None):
    """``key`` made of exact builtin types, or None when it cannot be a dict key.

    ``room``: how many levels of tuples it may nest (None: MAX_DEPTH).  Used for
    lookups too: a key that could never have been stored is simply not there,
    and no user-defined comparison ever runs inside a BTree.
    """
    room = MAX_DEPTH if room is None else room
    kind = type(key)
    if kind is str or kind is int or kind is bytes or kind is float or kind is bool:
        return key
    if isinstance(key, tuple):
        if room < 1:
            return None
        parts = [exact_key(part, room - 1) for part in key]
        return None if any(part is None for part in parts) else tuple(parts)
    for base, copy in _EXACT_COPY:
        if isinstance(key, base):
            return copy(key)
    return None


def check_keys_orderable(keys, path):
    """Raise UnorderableKeyError unless ``keys`` can be sorted (an OOBTree must)."""
    try:
        sorted(keys)
    except TypeError:
        first, other = _incomparable_pair(keys)
        raise UnorderableKeyError(path, unorderable_message(first, other)) from None


def unorderable_message(key, other):
    return (f"keys {short_repr(key, 60)} and {short_repr(other, 60)} cannot be ordered against each other; the keys "
            f"of one dict must be all str, all numbers, all bytes or all comparable tuples")


def _incomparable_pair(keys):
    for i, first in enumerate(keys):
        for other in keys[i + 1:]:
            try:
                first < other and other < first  # noqa: B015 - comparing for TypeError
            except TypeError:
                return first, other
    return keys[0], keys[-1]


#: What :func:`find` returns for a key that is not there.
MISSING = object()


def find(tree, key, default=MISSING):
    """``tree[key]``, or ``default`` when the key is not there.

    Not there includes keys that could never have been stored (see
    :func:`exact_key`) and keys of another kind: a BTree raises TypeError for
    ``1`` in a str-keyed dict, and for ``('b', 2)`` only when it meets a key
    like ``('b', 'x')`` deep inside, so no check of the ends can tell.
    """
    exact = exact_key(key)
    if exact is None:
        return default
    try:
        return tree.get(exact, default)
    except TypeError:
        return default


def key_fits(tree, key):
    """True when ``key`` can be looked up in ``tree`` (it may still be absent)."""
    exact = exact_key(key)
    if exact is None:
        return False
    try:
        tree.get(exact)
    except TypeError:
        return False
    return True


def to_plain(node, depth=0):
    """A deep plain copy of a stored value: dicts, lists, tuples and scalars.

    Recursive for speed; past MAX_DEPTH levels (only data stored before zpydb
    limited nesting, or by other code) it goes on without recursion, so any
    stored value can be read.
    """
    if isinstance(node, SCALARS):
        return node
    if depth > MAX_DEPTH:
        return _to_plain_deep(node)
    depth += 1
    if is_dict_node(node):
        pairs = list(node.items())
        if _PLAIN.issuperset(map(type, map(_second, pairs))):  # scalars: in C
            return dict(pairs)
        return {key: to_plain(value, depth) for key, value in pairs}
    if is_list_node(node):
        # a PersistentList's own iteration calls __getitem__ per item, in Python
        items = node.data if isinstance(node, PersistentList) else list(node)
        if _PLAIN.issuperset(map(type, items)):
            return list(items)
        return [to_plain(item, depth) for item in items]
    if isinstance(node, tuple):
        return tuple([to_plain(item, depth) for item in node])
    if isinstance(node, Counter):  # a number that += made mergeable (merging.py)
        return node.value
    converter = _plain_converters.get(type(node))
    if converter is not None:
        return converter(node)
    if isinstance(node, (dict, list)):  # data written by raw ZODB code
        return to_plain(OOBTree(node) if isinstance(node, dict) else PersistentList(node), depth)
    return node


def _to_plain_deep(node):
    """:func:`to_plain` with an explicit stack instead of recursion."""
    result = [None]
    stack = [(node, result, 0)]
    tuples = []  # (holder, slot) of tuples, frozen innermost first at the end
    while stack:
        node, holder, slot = stack.pop()
        if is_dict_node(node) or isinstance(node, dict):
            copy, pairs = {}, node.items()
        elif is_list_node(node) or isinstance(node, (list, tuple)):
            copy, pairs = [None] * len(node), enumerate(node)
            if isinstance(node, tuple):
                tuples.append((holder, slot))
        else:
            holder[slot] = to_plain(node)  # a scalar, counter or file: no nesting
            continue
        holder[slot] = copy
        for key, value in pairs:
            copy[key] = None  # keeps the dict's key order
            stack.append((value, copy, key))
    for holder, slot in reversed(tuples):
        holder[slot] = tuple(holder[slot])
    return result[0]


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr (a few levels, a few dozen items), and huge ints as a size."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 6, 30, 30, 30
        self.maxset = self.maxfrozenset = 30
        self.maxstring = self.maxother = 120

    def repr_int(self, x, level):
        return int_text(x)


_SHORT_REPR = _ShortRepr()
_BIG_REPRS = {list, tuple, dict, set, frozenset}
_BASE_REPRS = {str: str.__repr__, int: int.__repr__, float: float.__repr__,
               bytes: bytes.__repr__}


def short_repr(value, limit=120):
    """``repr(value)`` for notes and messages: at most ``limit`` characters, never raising.

    repr() itself fails for an int of more than 4300 digits (ValueError), for
    values nested past the recursion limit, and in a ``__repr__`` that raises;
    containers go through reprlib, so a million-item list costs no more than a short one.
    """
    kind = type(value)
    try:
        if kind in _BIG_REPRS:
            text = _SHORT_REPR.repr(value)
        else:
            text = repr(value) if kind in SCALARS else _base_repr(value)
    except Exception:
        text = int_text(value) if isinstance(value, int) else f"<{kind.__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _base_repr(value):
    """A str/int/float/bytes subclass shown as its base type: its own __repr__ never runs."""
    for base, base_repr in _BASE_REPRS.items():
        if isinstance(value, base):
            return base_repr(value)
    return repr(value)


def int_text(value):
    """``repr`` of an int, or its size when it has too many digits for ``repr``."""
    try:
        return int.__repr__(value)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return f"<int of about {int(value.bit_length() * 0.30103) + 1} digits>"


def describe_type(node):
    """"an int", "a dict", "None": the type as a message names it."""
    name = type_name(node)
    if name == "NoneType":
        return "None"
    return ("an " if name[0] in "aeiou" else "a ") + name


def type_name(node):
    """The plain type a user would call this node ("dict", "list", ...)."""
    if is_dict_node(node):
        return "dict"
    if is_list_node(node):
        return "list"
    if isinstance(node, Counter):
        return type(node.value).__name__
    return type(node).__name__
