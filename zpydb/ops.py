"""What one statement does to the stored tree, inside a transaction it is given.

Every read and every write of zpydb goes through this module: :func:`traverse`
walks a path of subscripts from the data root, :func:`read` copies a value out
as plain Python, and :func:`write` applies one change.  The proxies in
``paths.py`` build the path and the operation; ``session.py`` supplies the
transaction.  Keeping the node-level work here means autocommit statements and
statements inside ``db.transaction()`` blocks behave identically.

``visit`` (when given) is called with every persistent object a *read*
looks at: the bucket that holds each key on the way down, and everything in
the value read.  Transaction blocks pass a function that registers them with
``connection.readCurrent``, so a concurrent change to anything the block read
fails its commit.  Writes register nothing (a blind write, like an autocommit
statement, relies on ZODB's store-time conflict check, and BTrees merge
concurrent changes to different keys).
"""

from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList

from . import nodes
from .biglist import BIG_LIST_THRESHOLD, BigList
from .errors import (BadIndexError, KeyNotFoundError, NotAContainerError,
                     UnorderableKeyError, ValueNotFoundError)

LIST_WRITERS = {"append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear"}
DICT_WRITERS = {"update", "setdefault", "pop", "popitem", "clear"}
LIST_READERS = {"index", "count"}
DICT_READERS = {"get", "keys", "values", "items"}


def format_path(steps):
    """``('l', 4)`` -> ``"db['l'][4]"``: the Python expression of a path."""
    return "db" + "".join(f"[{_format_step(step)}]" for step in steps)


def _format_step(step):
    if isinstance(step, slice):
        parts = ["" if x is None else repr(x) for x in (step.start, step.stop)]
        text = ":".join(parts)
        return text + (f":{step.step!r}" if step.step is not None else "")
    return repr(step)


# -- walking ---------------------------------------------------------------

def traverse(root, steps, visit=None, for_write=False):
    """The node at ``steps`` below ``root``; errors name the failing path."""
    node = root
    if for_write:
        visit = None
    for depth, step in enumerate(steps):
        if for_write and isinstance(step, slice):
            raise NotAContainerError(format_path(steps[:depth + 1]),
                                     "cannot change data through a slice; index the list itself")
        node = child(node, step, steps[:depth + 1], visit)
    return node


def child(node, step, steps, visit=None):
    """``node[step]`` with zpydb's errors; ``steps`` is the path of the child."""
    if nodes.is_dict_node(node):
        if isinstance(step, slice) or not nodes.key_fits(node, step):
            raise KeyNotFoundError(format_path(steps), "no such key")
        _visit(visit, node, step)
        try:
            value = node[step]
        except KeyError:
            raise KeyNotFoundError(format_path(steps), "no such key") from None
    elif nodes.is_list_node(node):
        value = _list_child(node, step, steps)
        _visit(visit, node, step)
    else:
        raise NotAContainerError(format_path(steps),
                                 f"{format_path(steps[:-1])} is a {nodes.type_name(node)}, "
                                 f"not a dict or list")
    return value


def _list_child(node, step, steps):
    if isinstance(step, slice):
        return PersistentList(node[step])
    if not isinstance(step, int) or isinstance(step, bool):
        raise NotAContainerError(format_path(steps),
                                 f"list indices must be integers or slices, not "
                                 f"{type(step).__name__}")
    try:
        return node[step]
    except IndexError:
        raise BadIndexError(format_path(steps),
                            f"index {step} out of range for a list of {len(node)} items") from None


def _check_index(lst, index, path):
    if not isinstance(index, int) or isinstance(index, bool):
        raise NotAContainerError(path, f"list indices must be integers, not {type(index).__name__}")
    if not -len(lst) <= index < len(lst):
        raise BadIndexError(f"{path}[{index}]",
                            f"index {index} out of range for a list of {len(lst)} items")


def _visit_all(visit, node):
    """Register ``node`` and everything below it (a whole value was read)."""
    if visit is None or not nodes.is_container(node):
        return
    _visit(visit, node, None)
    for item in (node.values() if nodes.is_dict_node(node) else node):
        _visit_all(visit, item)


def _visit(visit, node, key):
    if visit is None:
        return
    if isinstance(node, OOBTree):
        for part in bucket_path(node, key):
            visit(part)
    elif isinstance(node, BigList):
        visit(node)
        for chunk in node._chunks.values():
            visit(chunk)
    elif hasattr(node, "_p_jar"):
        visit(node)


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

def read(root, steps, visit=None):
    node = traverse(root, steps, visit)
    _visit_all(visit, node)
    return nodes.to_plain(node)


def call_reader(root, steps, name, args, kwargs, visit=None):
    """Read methods (``get``, ``keys``, ``index``, ...): plain results, no writes."""
    node = traverse(root, steps, visit)
    _visit_all(visit, node)
    path = format_path(steps)
    if name == "len":
        _require_container(node, path)
        return len(node)
    if name == "contains":
        return contains(node, args[0], path)
    if name == "iter":
        _require_container(node, path)
        return [nodes.to_plain(x) for x in (node.keys() if nodes.is_dict_node(node) else node)]
    if nodes.is_dict_node(node) and name in DICT_READERS:
        return _dict_reader(node, name, args)
    if nodes.is_list_node(node) and name in LIST_READERS:
        return _list_reader(node, name, args, path)
    raise _no_method(node, name, path)


def contains(node, item, path):
    if nodes.is_dict_node(node):
        return nodes.key_fits(node, item) and item in node
    _require_container(node, path)
    return any(nodes.to_plain(x) == item for x in node)


def _dict_reader(node, name, args):
    if name == "get":
        key, default = args[0], (args[1] if len(args) > 1 else None)
        if not nodes.key_fits(node, key) or key not in node:
            return default
        return nodes.to_plain(node[key])
    if name == "keys":
        return list(node.keys())
    if name == "values":
        return [nodes.to_plain(v) for v in node.values()]
    return [(k, nodes.to_plain(v)) for k, v in node.items()]


def _list_reader(node, name, args, path):
    plain = [nodes.to_plain(x) for x in node]
    if name == "count":
        return plain.count(args[0])
    try:
        return plain.index(*args)
    except ValueError:
        raise ValueNotFoundError(path, f"{args[0]!r} is not in the list") from None


def _require_container(node, path):
    if not nodes.is_container(node):
        raise NotAContainerError(path, f"a {nodes.type_name(node)} has no items")


def _no_method(node, name, path):
    kind = nodes.type_name(node)
    return NotAContainerError(path, f"a {kind} has no method {name}()")


# -- writing ---------------------------------------------------------------

def set_item(root, steps, value, visit=None):
    """``db[...][key] = value``: convert deeply, then store in the parent."""
    parent = traverse(root, steps[:-1], visit, for_write=True)
    key, path = steps[-1], format_path(steps)
    node = nodes.to_node(value, path)
    if nodes.is_dict_node(parent):
        if isinstance(key, slice):
            raise NotAContainerError(path, "dicts cannot be sliced")
        nodes.check_key_type(key, format_path(steps[:-1]))
        _store_key(parent, key, node, path)
    elif nodes.is_list_node(parent):
        _store_index(parent, key, node, steps)
        _promote_if_big(root, steps[:-1], parent)
    else:
        raise NotAContainerError(path, f"{format_path(steps[:-1])} is a "
                                       f"{nodes.type_name(parent)}, not a dict or list")


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
        lst[index] = list(node)
        return
    _check_index(lst, index, format_path(steps[:-1]))
    lst[index] = node


def del_item(root, steps, visit=None):
    parent = traverse(root, steps[:-1], visit, for_write=True)
    key, path = steps[-1], format_path(steps)
    if not isinstance(key, slice):
        child(parent, key, steps)
    elif not nodes.is_list_node(parent):
        raise NotAContainerError(path, "only lists can be sliced")
    del parent[key]


def call_writer(root, steps, name, args, kwargs, visit=None):
    """Mutating methods of list and dict, applied to the stored node."""
    node = traverse(root, steps, visit, for_write=True)
    path = format_path(steps)
    if nodes.is_list_node(node) and name in LIST_WRITERS:
        result = _list_writer(node, name, args, kwargs, path)
        _promote_if_big(root, steps, node)
        return result
    if nodes.is_dict_node(node) and name in DICT_WRITERS:
        return _dict_writer(node, name, args, kwargs, path)
    raise _no_method(node, name, path)


def _list_writer(node, name, args, kwargs, path):
    n = len(node)
    if name == "append":
        node.append(nodes.to_node(args[0], f"{path}[{n}]"))
    elif name == "extend":
        node.extend([nodes.to_node(x, f"{path}[{n + i}]") for i, x in enumerate(args[0])])
    elif name == "insert":
        node.insert(args[0], nodes.to_node(args[1], f"{path}[{args[0]!r}]"))
    elif name == "pop":
        index = args[0] if args else -1
        if not n:
            raise BadIndexError(path, "pop from an empty list")
        _check_index(node, index, path)
        return nodes.to_plain(node.pop(index))
    elif name == "remove":
        index = _list_reader(node, "index", args, path)
        del node[index]
    elif name == "sort":
        _sort(node, kwargs, path)
    elif name == "reverse":
        node.reverse()
    elif name == "clear":
        del node[:]
    return None


def _sort(node, kwargs, path):
    plain = [nodes.to_plain(x) for x in node]
    key = kwargs.get("key")
    order = sorted(range(len(plain)), key=lambda i: key(plain[i]) if key else plain[i],
                   reverse=kwargs.get("reverse", False))
    items = list(node)
    node[:] = [items[i] for i in order]


def _dict_writer(tree, name, args, kwargs, path):
    if name == "update":
        _update(tree, dict(args[0]) if args else {}, kwargs, path)
        return None
    if name == "setdefault":
        key = args[0]
        if not (nodes.key_fits(tree, key) and key in tree):
            nodes.check_key_type(key, path)
            default = args[1] if len(args) > 1 else None
            _store_key(tree, key, nodes.to_node(default, f"{path}[{key!r}]"), f"{path}[{key!r}]")
        return nodes.to_plain(tree[key])
    if name == "pop":
        key = args[0]
        if nodes.key_fits(tree, key) and key in tree:
            return nodes.to_plain(tree.pop(key))
        if len(args) > 1:
            return args[1]
        raise KeyNotFoundError(f"{path}[{key!r}]", "no such key")
    if name == "popitem":
        try:
            key = tree.maxKey()
        except ValueError:
            raise KeyNotFoundError(path, "popitem(): the dict is empty") from None
        return key, nodes.to_plain(tree.pop(key))
    tree.clear()
    return None


def _update(tree, incoming, kwargs, path):
    """dict.update, all or nothing: keys already stored are put back on failure."""
    incoming.update(kwargs)
    for key in incoming:
        nodes.check_key_type(key, path)
    converted = {key: nodes.to_node(value, f"{path}[{key!r}]") for key, value in incoming.items()}
    stored = []  # (key, existed before, old value) of every key written so far
    try:
        for key, node in converted.items():
            existed = nodes.key_fits(tree, key) and key in tree
            old = tree[key] if existed else None
            _store_key(tree, key, node, f"{path}[{key!r}]")
            stored.append((key, existed, old))
    except BaseException:
        for key, existed, old in reversed(stored):
            if existed:
                tree[key] = old
            else:
                del tree[key]
        raise


def _promote_if_big(root, steps, node):
    """Swap a PersistentList that grew past the threshold for a BigList."""
    if isinstance(node, PersistentList) and len(node) > BIG_LIST_THRESHOLD:
        if not steps:
            return
        parent = traverse(root, steps[:-1])
        parent[steps[-1]] = BigList(node)
