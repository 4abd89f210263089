"""Nodes whose concurrent changes merge instead of conflicting.

ZODB detects a conflict when two transactions change the same record, and
then asks the record's class to merge the three states (``_p_resolveConflict``:
the state both started from, the one already committed, and the new one).
BTrees use this to merge changes to different keys of a bucket and
``BTrees.Length`` to add concurrent deltas.  zpydb uses it for the two
statements that many clients run on one place at the same time:

* ``db['n'] += 1`` (and ``-=``): the number lives in its own small
  :class:`Counter` record; concurrent increments add up, like Redis INCR;
* ``db['l'].append(x)`` / ``extend``: :class:`AppendList` keeps the items
  both transactions appended, the committed ones first (commit order).

Only *pure* changes merge.  Anything else (a counter set to a new value, an
item replaced, removed or reordered) is a real conflict: the statement is
retried on fresh data (session.py), exactly as before.  Blocks
(``db.transaction()``) register what they read, so a block that read the
counter never merges blindly: serializability is unchanged (transactions.py).

Conflict resolution runs where the storage runs it: inside the ZEO server
process (so ``zpydb`` must be importable there -- it is for ``zpydb serve``
and for ``runzeo`` from zpydb's environment; without it ZODB reports an
unresolved conflict and the statement is retried), and in the client for
FileStorage and RelStorage.  Resolution raises ZODB's ConflictError to refuse,
which ZODB logs only at debug level.
"""

from numbers import Number

from persistent import Persistent
from persistent.list import PersistentList
from ZODB.ConflictResolution import PersistentReference
from ZODB.POSException import ConflictError

__all__ = ["Counter", "AppendList", "is_counter", "merge_appends", "retire", "same_items"]


class Counter(Persistent):
    """A stored number that concurrent ``+=``/``-=`` statements add to.

    ``generation`` counts the times the number was *set* (``*=``, ``/=``...):
    a set never merges with anything, so a concurrent increment is retried
    against the new value instead of being added to a value it never saw.
    """

    generation = 0

    def __init__(self, value):
        self.value = value
        self.generation = 0

    def add(self, delta):
        self.value = self.value + delta

    def set(self, value):
        self.value = value
        self.generation += 1

    def __repr__(self):
        return f"Counter({self.value!r})"

    def _p_resolveConflict(self, old, committed, new):
        if not (_generation(old) == _generation(committed) == _generation(new)):
            raise ConflictError("a counter was set while another client added to it")
        values = [state.get("value") for state in (old, committed, new)]
        if not all(isinstance(v, Number) and not isinstance(v, bool) for v in values):
            raise ConflictError("a counter holds a value that is not a number")
        resolved = dict(committed)
        resolved["value"] = committed["value"] + (new["value"] - old["value"])
        return resolved


def _generation(state):
    return state.get("generation", 0)


def is_counter(node):
    return isinstance(node, Counter)


class AppendList(PersistentList):
    """A list record in which concurrent appends merge (both kept, commit order).

    ``capacity`` (None: unbounded) refuses a merge that would make the list
    longer than that (BigList chunks, biglist.Chunk, keep theirs in their state).
    """

    capacity = None

    def _p_resolveConflict(self, old, committed, new):
        if set(old) != {"data"} or set(committed) != {"data"} or set(new) != {"data"}:
            raise ConflictError("an unexpected list state")
        return {"data": merge_appends(old["data"], committed["data"], new["data"],
                                      self.capacity)}


def merge_appends(base, theirs, ours, capacity=None):
    """Both transactions' appends to the items ``base``: theirs, then ours.

    Refuses (ConflictError) unless both only appended, and past ``capacity``
    items (None: unbounded).
    """
    if not (same_items(theirs[:len(base)], base) and same_items(ours[:len(base)], base)):
        raise ConflictError("items were changed or removed, not only appended")
    merged = list(theirs) + list(ours[len(base):])
    if capacity is not None and len(merged) > capacity:
        raise ConflictError("the merged appends do not fit in one chunk")
    return merged


def retire(lst):
    """Empty a list record that a BigList replaced, and mark it so it never merges.

    A client that appended to the old record concurrently (it began before the
    promotion committed) would otherwise have its append merged into a record
    nothing points to any more: lost.  The retired state differs from every
    state an append starts from, so the append conflicts and is retried
    against the BigList (and the old record stops holding a copy of the items).
    """
    del lst[:]
    if isinstance(lst, AppendList):
        lst.retired = True  # a state key besides "data": _p_resolveConflict refuses


def same_items(left, right):
    """Element-wise identity of two item lists as conflict resolution sees them.

    Persistent sub-objects arrive as ``PersistentReference``s, which refuse to
    be compared with anything but a reference to the same object (ValueError);
    everything else compares by type and value (so ``1`` and ``True`` differ).
    """
    if len(left) != len(right):
        return False
    return all(_same(a, b) for a, b in zip(left, right))


def _same(a, b):
    if a is b:
        return True
    if isinstance(a, PersistentReference) or isinstance(b, PersistentReference):
        return (isinstance(a, PersistentReference) and isinstance(b, PersistentReference)
                and a.oid == b.oid and a.database_name == b.database_name)
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return same_items(a, b)
    try:
        return bool(a == b) or (a != a and b != b)  # NaN equals itself here
    except Exception:
        return False
