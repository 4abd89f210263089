"""Conversion between plain Python values and persistent nodes.

The tree a user sees is plain dicts, lists and scalars.  What ZODB stores is:

* dict  -> ``OOBTree``: a balanced tree of buckets, so a write touches one
  bucket (a few dozen keys) however large the dict grows, and concurrent writes
  to different keys are merged by BTrees' conflict resolution;
* list, range -> ``PersistentList``, or past :data:`BIG_LIST_THRESHOLD` items a
  :class:`~zpydb.biglist.BigList` (a counted tree of chunks) so appends stay cheap;
* str, bytes, int, float, bool, None, tuple -> stored as they are (immutable,
  pickled inside their parent's record).

Every write converts deeply (:func:`to_node`) and every read copies deeply
(:func:`to_plain`), so no persistent object ever reaches the caller: mutating a
value you read never changes the database.

Dict keys must be mutually orderable (an OOBTree compares keys to place them):
all strings, all numbers, all bytes, or all tuples that compare element by
element.  A new dict with mixed keys, or a key that cannot be ordered against an
existing dict's keys, raises :class:`~zpydb.errors.UnorderableKeyError` before
anything is committed; a lookup with a key of another type simply finds nothing.
"""

from collections.abc import Mapping

from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping

from .biglist import BIG_LIST_THRESHOLD, BigList
from .errors import UnorderableKeyError, UnstorableValueError

SCALARS = (str, bytes, int, float, bool, type(None))
KEY_TYPES = (str, bytes, int, float, bool, tuple)
DICT_NODES = (OOBTree, PersistentMapping)
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


def to_node(value, path="db"):
    """Convert a plain value into what zpydb stores, checking every type and key.

    ``path`` names where the value is going, for the error message.  Raises a
    TypeError subclass, having built nothing persistent that could be committed.
    """
    if isinstance(value, SCALARS):
        return value
    if isinstance(value, Mapping):
        return _dict_node(value, path)
    if isinstance(value, (list, range)) or _is_sequence_view(value):
        items = [to_node(item, f"{path}[{index}]") for index, item in enumerate(value)]
        return make_list_node(items)
    if isinstance(value, tuple):
        return tuple(_tuple_item(item, f"{path}[{index}]") for index, item in enumerate(value))
    converter = _extra_converter(value)
    if converter is not None:
        return converter(value)
    raise UnstorableValueError(
        path, f"cannot store a value of type {type(value).__name__}; zpydb stores dict, "
              f"list, range, tuple, str, bytes, int, float, bool, None and zpydb.File")


def make_list_node(items):
    """A PersistentList for ordinary lists, a BigList past the threshold."""
    if len(items) > BIG_LIST_THRESHOLD:
        return BigList(items)
    return PersistentList(items)


def _is_sequence_view(value):
    return type(value).__name__ in ("dict_keys", "dict_values")


def _extra_converter(value):
    for plain_type, converter in extra_storable.items():
        if converter is not None and isinstance(value, plain_type):
            return converter
    return None


def _tuple_item(item, path):
    if isinstance(item, SCALARS):
        return item
    if isinstance(item, tuple):
        return tuple(_tuple_item(x, f"{path}[{i}]") for i, x in enumerate(item))
    raise UnstorableValueError(
        path, f"a tuple may hold only scalars and tuples, not {type(item).__name__} "
              f"(use a list for nested data)")


def _dict_node(mapping, path):
    keys = list(mapping)
    for key in keys:
        check_key_type(key, path)
    check_keys_orderable(keys, path)
    tree = OOBTree()
    for key in keys:
        tree[key] = to_node(mapping[key], f"{path}[{key!r}]")
    return tree


def check_key_type(key, path):
    if not isinstance(key, KEY_TYPES) or (isinstance(key, tuple) and not _tuple_key_ok(key)):
        raise UnstorableValueError(
            f"{path}[{key!r}]", f"dict keys must be str, bytes, int, float, bool or tuples "
                                f"of those, not {type(key).__name__}")


def _tuple_key_ok(key):
    return all(isinstance(k, SCALARS[:-1]) or (isinstance(k, tuple) and _tuple_key_ok(k))
               for k in key)


def check_keys_orderable(keys, path):
    """Raise UnorderableKeyError unless ``keys`` can be sorted (an OOBTree must)."""
    try:
        sorted(keys)
    except TypeError:
        first, other = _incomparable_pair(keys)
        raise UnorderableKeyError(path, unorderable_message(first, other)) from None


def unorderable_message(key, other):
    return (f"keys {key!r} and {other!r} cannot be ordered against each other; the keys "
            f"of one dict must be all str, all numbers, all bytes or all comparable tuples")


def _incomparable_pair(keys):
    for i, first in enumerate(keys):
        for other in keys[i + 1:]:
            try:
                first < other and other < first  # noqa: B015 - comparing for TypeError
            except TypeError:
                return first, other
    return keys[0], keys[-1]


def key_fits(tree, key):
    """True when ``key`` can be compared with the keys already in ``tree``.

    A str-keyed OOBTree raises TypeError even for ``1 in tree``, so lookups
    check first and treat a key of another kind as simply absent.  (Never
    ``len(tree)`` here: a BTree counts its keys by walking every bucket.)
    """
    if not isinstance(tree, OOBTree):
        return True
    try:
        low = tree.minKey()
    except ValueError:  # empty tree
        return True
    if type(low) is type(key) and type(key) is not tuple:
        return True  # the common case: same scalar type, nothing to check
    try:
        key < low  # noqa: B015 - comparing only to see whether it raises
        tree.maxKey() < key  # noqa: B015
    except TypeError:
        return False
    return True


def to_plain(node):
    """A deep plain copy of a stored value: dicts, lists, tuples and scalars."""
    if isinstance(node, SCALARS):
        return node
    if is_dict_node(node):
        return {key: to_plain(value) for key, value in node.items()}
    if is_list_node(node):
        return [to_plain(item) for item in node]
    if isinstance(node, tuple):
        return tuple(to_plain(item) for item in node)
    converter = _plain_converters.get(type(node))
    if converter is not None:
        return converter(node)
    if isinstance(node, (dict, list)):  # data written by raw ZODB code
        return to_plain(OOBTree(node) if isinstance(node, dict) else PersistentList(node))
    return node


def type_name(node):
    """The plain type a user would call this node ("dict", "list", ...)."""
    if is_dict_node(node):
        return "dict"
    if is_list_node(node):
        return "list"
    return type(node).__name__
