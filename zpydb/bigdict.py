"""BigDict: a dict whose ``len()`` costs the same at a million keys as at fifty.

Every dict is an ``OOBTree`` (nodes.py).  ``len()`` of an OOBTree walks its
buckets, one database record per ~30 keys: 33,000 loads for a million keys.
A dict that spans more than one bucket is stored as a BigDict instead: the
same OOBTree plus a ``BTrees.Length`` that every write adding or removing a
key changes by one.  ``Length`` resolves concurrent changes by adding their
deltas (its ``_p_resolveConflict``), and the tree's buckets merge changes to
different keys, so two clients inserting different keys still never
conflict, and undo (which resolves conflicts the same way on FileStorage and
ZEO) keeps the count right.

Why only past one bucket, and why the switch is race-free: a small OOBTree
keeps its single bucket *inside* the tree record.  The write that splits it
rewrites that record as a tree of separate buckets, and any concurrent
transaction that changed the small tree changed the same record in its inline
form, which BTrees refuses to merge with a split tree (ConflictError, retried
against the BigDict).  So the statement that splits a tree also wraps it
(ops.py, :func:`needs_wrapping`), and no insert can slip past the count.  A
small dict stays one record, as before.

Dicts written by format 1 (and 0) are plain OOBTrees of any size: ``len()``
walks them, as it always did, and the first write into one that spans several
buckets wraps it (one count, in that statement's transaction).  Every client
writing into the unwrapped tree wraps it too, so two of them conflict on the
parent's record instead of one writing past the other's count.  The wrap is a
write like any other, undone before anything older (undo goes newest first).

:meth:`BigDict.clear` starts a new tree and a new Length: a concurrent insert
lands in the old ones, which nothing references any more -- as if it had
committed just before the clear, and the count still matches the tree.
"""

from bisect import bisect_right

from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent import Persistent

_MISSING = object()


def spans_buckets(tree):
    """True when the OOBTree ``tree`` is stored as more than its own record.

    ``__getstate__`` of an OOBTree is None (empty), ``((bucket_state,),)`` (one
    bucket kept inline in the tree record), or ``(children, first_bucket)``.
    """
    state = tree.__getstate__()
    return state is not None and len(state) > 1


def needs_wrapping(node):
    """A plain OOBTree dict past one bucket: give it a BigDict (see the module docstring)."""
    return type(node) is OOBTree and spans_buckets(node)


class BigDict(Persistent):
    """An OOBTree and a ``BTrees.Length`` of its keys, with the mapping methods zpydb uses.

    The BigDict record holds two references and changes only when it is made
    and on :meth:`clear`; the items live in the tree's buckets, the count in
    the Length record.
    """

    def __init__(self, tree=None):
        self._tree = OOBTree() if tree is None else tree
        self._length = Length(len(self._tree))

    def __repr__(self):
        return f"BigDict(<{len(self)} keys>)"

    # -- reading -------------------------------------------------------------
    def __len__(self):
        return self._length()

    def __getitem__(self, key):
        return self._tree[key]

    def get(self, key, default=None):
        return self._tree.get(key, default)

    def __contains__(self, key):
        return key in self._tree

    def __iter__(self):
        return iter(self._tree)

    def keys(self, *args, **kwargs):
        return self._tree.keys(*args, **kwargs)

    def values(self, *args, **kwargs):
        return self._tree.values(*args, **kwargs)

    def items(self, *args, **kwargs):
        return self._tree.items(*args, **kwargs)

    def minKey(self, *args):
        return self._tree.minKey(*args)

    def maxKey(self, *args):
        return self._tree.maxKey(*args)

    @property
    def tree(self):
        """The OOBTree (for read tracking and backward iteration)."""
        return self._tree

    @property
    def length(self):
        """The ``BTrees.Length`` record (a block that read ``len()`` registers it)."""
        return self._length

    # -- writing: every change of the key count goes through the Length -------
    def __setitem__(self, key, value):
        if self._tree.insert(key, value):  # 1: a new key (TypeError before any change)
            self._length.change(1)
        else:
            self._tree[key] = value

    def __delitem__(self, key):
        del self._tree[key]
        self._length.change(-1)

    def pop(self, key, *default):
        value = self._tree.pop(key, _MISSING)
        if value is not _MISSING:
            self._length.change(-1)
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key, default=None):
        if self._tree.insert(key, default):
            self._length.change(1)
            return default
        return self._tree[key]

    def update(self, items):
        for key, value in (items.items() if hasattr(items, "items") else items):
            self[key] = value

    def clear(self):
        """A new, empty tree and count; concurrent inserts go to the old ones (see above)."""
        self._tree = OOBTree()
        self._length = Length(0)


def tree_of(node):
    """The OOBTree behind a dict node (itself for an OOBTree)."""
    return node.tree if isinstance(node, BigDict) else node


def descending_items(node, before=_MISSING):
    """``(key, value)`` of a dict node, largest key first, from below ``before`` (all when omitted).

    An OOBTree iterates forwards only, and indexing its ranges from the end
    walks the bucket chain from the start; this descends the tree from its
    root, so each step back costs the buckets it reads, and a batch near the
    end of a million keys reads a few buckets, not all of them.
    """
    tree = tree_of(node)
    if not isinstance(tree, OOBTree):  # a PersistentMapping (data not written by zpydb)
        keys = sorted(tree.keys(), reverse=True)
        return ((k, tree[k]) for k in keys if before is _MISSING or k < before)
    return _descending(tree, before)


def _descending(node, before):
    if not isinstance(node, OOBTree):  # a bucket
        found = node.items() if before is _MISSING else node.items(max=before, excludemax=True)
        yield from reversed(list(found))
        return
    state = node.__getstate__()
    if state is None:
        return
    if len(state) == 1:  # one bucket, inline: (((k0, v0, k1, v1, ...),),)
        flat = state[0][0][0]
        pairs = list(zip(flat[0::2], flat[1::2]))
        if before is not _MISSING:
            pairs = [pair for pair in pairs if pair[0] < before]
        yield from reversed(pairs)
        return
    children, separators = state[0][0::2], state[0][1::2]
    # child i holds the keys k with separators[i-1] <= k < separators[i]
    start = len(children) - 1 if before is _MISSING else bisect_right(separators, before)
    for index in range(start, -1, -1):
        yield from _descending(children[index], before if index == start else _MISSING)
