"""BigList: a list node whose appends cost the same at a million items as at a thousand.

A ``PersistentList`` is one database record: every change re-pickles and
re-writes the whole list, so appending to a list of n items costs O(n).  Past
:data:`BIG_LIST_THRESHOLD` items zpydb stores a list as a BigList instead:

* the items live in chunks (``PersistentList`` of the list's chunk size,
  ``_chunk_size``), all full except the last, so item ``i`` is in chunk
  ``i // _chunk_size``;
* the chunks are held by an ``IOBTree`` keyed by chunk number, so adding a
  chunk writes one BTree bucket, not a list of every chunk;
* the BigList record itself holds only the length.

An append, ``pop()`` from the end, or item assignment therefore writes one
chunk plus a tiny record.  Operations that move items across chunks (insert
or delete in the middle, slice assignment, sort, reverse) rewrite the chunks
from the changed position on: O(n), like the same operation on a Python list.
Everything is ordinary persistent state, so it is transactional and undoable.

Concurrent appends merge (merging.py): the last chunk is a :class:`Chunk`, an
``AppendList`` that keeps both transactions' new items as long as they fit,
and the BigList record adds the two length changes.  Every other change bumps
``_generation``, which refuses such a merge, so only pure appends combine.
Two appends that both start a new chunk change the same key of the chunk
tree: a real conflict, retried (once every chunk size items at most).

The layout travels with the data (docs/architecture.md, "The stored format"):
each BigList records its chunk size in ``_chunk_size`` when it is created
(:data:`CHUNK_SIZE` at that moment) and each chunk its ``capacity``, so
changing :data:`CHUNK_SIZE` only affects lists created afterwards.  Records
written before the layout was stored have neither attribute and read the
class defaults, :data:`LEGACY_CHUNK_SIZE` (the size they were written with).
"""

from collections.abc import MutableSequence

from BTrees.IOBTree import IOBTree
from persistent import Persistent
from ZODB.POSException import ConflictError

from .merging import AppendList, merge_appends

BIG_LIST_THRESHOLD = 1024
#: The chunk size of BigLists created from now on (stored in each: changing it
#: never changes how an existing list is read).
CHUNK_SIZE = 512
#: The chunk size of every BigList and Chunk stored before the layout was
#: stored with the data (format 0).  Never change it: it is how they are read.
LEGACY_CHUNK_SIZE = 512


class Chunk(AppendList):
    """Up to ``capacity`` items of a BigList; concurrent appends merge while they fit.

    ``capacity`` is stored in the chunk's own state (its BigList's chunk size),
    because conflict resolution sees only the three states: ZODB calls
    ``_p_resolveConflict`` on a bare instance made with ``__new__``, whose
    ``capacity`` is the class default.  Chunks stored without it (format 0)
    hold :data:`LEGACY_CHUNK_SIZE` items, the class default.
    """

    capacity = LEGACY_CHUNK_SIZE

    def __init__(self, initlist=None, capacity=None):
        super().__init__(initlist)
        self.capacity = LEGACY_CHUNK_SIZE if capacity is None else capacity

    def _p_resolveConflict(self, old, committed, new):
        states = (old, committed, new)
        if any(set(state) - {"capacity"} != {"data"} for state in states):
            raise ConflictError("an unexpected chunk state")
        capacities = {state.get("capacity", LEGACY_CHUNK_SIZE) for state in states}
        if len(capacities) != 1:
            raise ConflictError("the chunk's capacity changed")
        resolved = dict(committed)
        resolved["data"] = merge_appends(old["data"], committed["data"], new["data"],
                                         capacities.pop())
        return resolved


class BigList(Persistent, MutableSequence):
    """A chunked persistent list with the full ``list`` interface."""

    _generation = 0  # lists stored before generations existed read as 0
    _chunk_size = LEGACY_CHUNK_SIZE  # lists stored before the layout was stored (format 0)

    def __init__(self, items=(), chunk_size=None):
        chunk_size = CHUNK_SIZE if chunk_size is None else chunk_size
        if type(chunk_size) is not int or chunk_size < 1:
            raise ValueError(f"a BigList chunk size must be a positive int, not {chunk_size!r}")
        self._chunk_size = chunk_size
        self._chunks = IOBTree()
        self._length = 0
        self._generation = 0
        self._fill(list(items), start=0)

    def _p_resolveConflict(self, old, committed, new):
        """Concurrent appends: the chunks merged themselves; add the length changes."""
        states = (old, committed, new)
        if len({frozenset(state) for state in states}) != 1:
            raise ConflictError("an unexpected BigList state")
        if len({state.get("_chunk_size", LEGACY_CHUNK_SIZE) for state in states}) != 1:
            raise ConflictError("the list's chunk size changed")
        if len({state.get("_generation", 0) for state in states}) != 1:
            raise ConflictError("the list was changed other than by appending")
        resolved = dict(committed)
        resolved["_length"] = committed["_length"] + new["_length"] - old["_length"]
        return resolved

    def _changed_shape(self):
        """Mark a change that is not a pure append (it must never merge)."""
        self._generation += 1

    # -- reading ------------------------------------------------------------
    def __len__(self):
        return self._length

    def __iter__(self):
        for chunk in self._chunks.values():
            yield from chunk.data  # not the chunk: a UserList iterates by __getitem__

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        index = self._normalize(index)
        return self._chunks[index // self._chunk_size][index % self._chunk_size]

    def __eq__(self, other):
        return list(self) == list(other) if isinstance(other, (list, BigList)) else NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"BigList(<{self._length} items>)"

    # -- cheap writes -------------------------------------------------------
    def append(self, item):
        chunk_no, offset = divmod(self._length, self._chunk_size)
        if offset == 0:
            self._chunks[chunk_no] = self._new_chunk([item])
        else:
            self._chunks[chunk_no].append(item)
        self._length += 1

    def extend(self, items):
        for item in items:
            self.append(item)

    def pop(self, index=-1):
        index = self._normalize(index)
        self._changed_shape()
        if index != self._length - 1:
            items = self[index:]
            value = items.pop(0)
            self._truncate(index)
            self._fill(items, start=index)
            return value
        chunk_no = index // self._chunk_size
        value = self._chunks[chunk_no].pop()
        if not self._chunks[chunk_no]:
            del self._chunks[chunk_no]
        self._length -= 1
        return value

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            self._changed_shape()
            items = list(self)
            items[index] = value
            self._replace_all(items)
            return
        index = self._normalize(index)
        self._chunks[index // self._chunk_size][index % self._chunk_size] = value

    # -- operations that shift items: rewrite from the change onwards -------
    def __delitem__(self, index):
        if isinstance(index, slice):
            self._changed_shape()
            items = list(self)
            del items[index]
            self._replace_all(items)
            return
        self.pop(index)

    def insert(self, index, item):
        index = max(0, min(self._length, index + self._length if index < 0 else index))
        self._changed_shape()
        tail = self[index:]
        self._truncate(index)
        self._fill([item] + tail, start=index)

    def sort(self, *, key=None, reverse=False):
        self._replace_all(sorted(self, key=key, reverse=reverse))

    def reverse(self):
        self._replace_all(list(self)[::-1])

    def clear(self):
        self._changed_shape()
        self._chunks.clear()
        self._length = 0

    # -- internals ----------------------------------------------------------
    def _normalize(self, index):
        if not isinstance(index, int):
            raise TypeError(f"list indices must be integers or slices, not {type(index).__name__}")
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("list index out of range")
        return index

    def _new_chunk(self, items):
        return Chunk(items, capacity=self._chunk_size)

    def _replace_all(self, items):
        self.clear()
        self._fill(items, start=0)

    def _truncate(self, start):
        """Drop items from ``start`` on (chunks after it go, its chunk is cut)."""
        chunk_no, offset = divmod(start, self._chunk_size)
        for number in list(self._chunks.keys(min=chunk_no + (1 if offset else 0))):
            del self._chunks[number]
        if offset:
            del self._chunks[chunk_no][offset:]
        self._length = start

    def _fill(self, items, start):
        """Append ``items`` at ``start`` == len(self), a chunk at a time."""
        assert start == self._length
        position = 0
        while position < len(items):
            chunk_no, offset = divmod(self._length, self._chunk_size)
            room = self._chunk_size - offset
            piece = items[position:position + room]
            if offset == 0:
                self._chunks[chunk_no] = self._new_chunk(piece)
            else:
                self._chunks[chunk_no].extend(piece)
            self._length += len(piece)
            position += len(piece)
