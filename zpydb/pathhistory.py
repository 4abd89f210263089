"""Per-path history: ``db['l'][4].history(n)``, the last ``n`` changes of one value.

ZODB keeps revisions per *record*, not per path, and the value at a path
depends on every record read to reach and copy it: ZODB's root mapping, the
data root OOBTree and the bucket (and inner nodes) holding the key, a BigList
and its chunk tree and chunk, nested nodes, and every record of the value
itself.  A transaction changed the value only if it wrote one of those -- the
ones on the path *at that time*: a bucket split or a replaced parent puts other
records on the path, so the set is re-read at every step.

The walk, newest first, with ``S`` the state being looked at (a ``before`` tid):

1. read the value at ``S`` on a historical connection (``DB.open(before=S)``)
   and note every record it loaded (the connection's cache holds exactly
   those, each with ``_p_serial``, the transaction that wrote the revision
   read);
2. the newest of those serials, ``t``, is the last transaction up to ``S``
   that wrote a record on the path: between ``t`` and ``S`` every record read
   is the same revision, so the value is the same;
3. read the value before ``t``; if it differs (or the path appeared or
   vanished), ``t`` is a change, reported with the value after it; either
   way carry on from ``S = t``.

Each step costs one historical read of the path (the records on it, not the
database), and steps are taken only at transactions that wrote a record on
the path: the path's own changes plus those of neighbours sharing a record
(keys in the same BTree bucket, items in the same list chunk).  So the cost
grows with ``n`` and with the path's own neighbourhood, never with the rest of
the database's history.  Time, user and note of a change come from the
storage's per-record history (``storage.history(oid, size)``) of a record the
transaction wrote, fetched in growing batches and kept for the walk.

The walk stops at the oldest state the storage keeps (before the first
transaction, or what a pack left): a value that was set before a pack has no
change reported for it.
"""

import math

from ZODB.POSException import POSKeyError
from ZODB.utils import z64

from . import errors, interrupts, ops
from .session import data_root
from .timetravel import Past, latest_before, open_past, release, time_of
from .translate import translate_errors
from .undo import _check_count, _text

#: Path errors that mean "the path does not exist in this state".
ABSENT = (errors.KeyNotFoundError, errors.BadIndexError, errors.NotAContainerError)
#: The first batch of a record's history fetched for a change's metadata.
FIRST_BATCH = 16


class _State:
    """The value at the path in one state, and the newest record read for it."""

    __slots__ = ("exists", "value", "newest", "oid")

    def __init__(self, exists, value, newest, oid):
        self.exists, self.value, self.newest, self.oid = exists, value, newest, oid

    def differs(self, other):
        return self.exists != other.exists or (self.exists and not same(self.value, other.value))


def path_history(executor, steps, n=10):
    """The last ``n`` changes of the value at ``steps``, newest first (see the module doc).

    ``executor``: the path's; a snapshot's (``db.at(t)[...]``) history ends at
    its state, any other's at the newest committed state.
    """
    _check_count(n)
    session = executor.session
    before = executor.before if isinstance(executor, Past) else latest_before(session)
    return Walk(session, steps).changes(before, n)


class Walk:
    """One walk back through the states of one path (see the module docstring).

    It holds the historical connection of its latest probe until the next one
    (the metadata of a change is read through it: a fresh view of the storage,
    which RelStorage's shared instance may not have), and releases it at the end.
    """

    def __init__(self, session, steps):
        self.session = session
        self.steps = tuple(steps)
        self.records = {}   # oid -> (its history entries, newest first; complete?)
        self.probes = 0     # historical reads made (the cost; tests look at it)
        self.conn = None

    def changes(self, before, n):
        found = []
        try:
            state = self.probe(before) if n else None
            while state is not None and state.newest > z64 and len(found) < n:
                older = self.probe(state.newest)
                if older is None:
                    break  # nothing kept before it: whether it changed the value is unknown
                if state.differs(older):
                    found.append(self.entry(state))
                state = older
        finally:
            self._drop()
        return found

    def probe(self, before):
        """The value at the path in the state before tid ``before``, or None if not kept."""
        self.probes += 1
        self._drop()
        with translate_errors(self.session.name), interrupts.deferred():
            self.conn = open_past(self.session, before)
            try:
                return self._read(self.conn)
            except POSKeyError:
                return None

    def _drop(self):
        conn, self.conn = self.conn, None
        if conn is not None:
            release(conn)

    def _read(self, conn):
        try:
            value, exists = ops.read(data_root(conn), self.steps), True
        except ABSENT:
            value, exists = None, False
        newest, oid = z64, None
        # The cache of this fresh historical connection holds exactly the records
        # the read loaded (ZODB's root, the path, the value): the newest wrote last.
        for key, obj in conn._cache.lru_items():
            serial = obj._p_serial
            if serial > newest:
                newest, oid = serial, key
        return _State(exists, value, newest, oid)

    def entry(self, state):
        tid = state.newest
        meta = self.metadata(state.oid, tid)
        return {
            "id": tid.hex(),
            "time": time_of(tid),
            "user": str(_text(meta.get("user_name", ""))).lstrip("/ ").strip(),
            "note": _text(meta.get("description", "")),
            "value": state.value,
            "deleted": not state.exists,
        }

    def metadata(self, oid, tid):
        """The storage's history entry of record ``oid`` written by ``tid`` ({} if none).

        Fetched in batches that double (FileStorage walks a record's revisions
        from the newest) and kept for the walk: the next change is usually
        further down the same record's history.
        """
        revisions, complete = self.records.get(oid, ((), False))
        while True:
            for revision in revisions:
                if revision.get("tid") == tid:
                    return revision
            if complete or (revisions and revisions[-1].get("tid", tid) < tid):
                return {}
            size = max(FIRST_BATCH, 2 * len(revisions))
            with translate_errors(self.session.name), interrupts.deferred():
                revisions = self.conn._storage.history(oid, size=size) or []
            complete = len(revisions) < size
            self.records[oid] = (revisions, complete)


def same(a, b):
    """Equal values of the same types all the way down (1 and 1.0 and True differ,
    and NaN is the same as NaN), without recursion."""
    stack = [(a, b)]
    while stack:
        a, b = stack.pop()
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            if len(a) != len(b):
                return False
            for (ka, va), (kb, vb) in zip(a.items(), b.items()):
                stack.append((ka, kb))
                stack.append((va, vb))
        elif isinstance(a, (list, tuple)):
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b))
        elif isinstance(a, float):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                return False
        elif a != b:
            return False
    return True

