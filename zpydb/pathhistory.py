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

Steps are taken only at transactions that wrote a record on the path: the
path's own changes plus those of neighbours sharing a record (keys in the same
BTree bucket, items in the same list).  A neighbour's transaction is passed
over without reading the past when it wrote ONE record on the path and its
metadata rules the path out (written.py: every zpydb write records the paths
it wrote): the record's revision before it is the next one in the record's
storage history (``storage.history(oid, size)``, fetched in doubling batches
and kept for the walk), and nothing else on the path moved.  When a
transaction wrote two records on the path (a bucket split writes the bucket and
its parent; a replaced parent is new), or records nothing (another program's),
the state before it is read.  So a walk costs one historical read per change
of the value (plus structure changes) and a metadata read per neighbour's
change: it grows with ``n`` and the path's neighbourhood, never with the rest
of the database's history.  Time, user and note of a change come from the same
per-record history.

The walk stops at the oldest state the storage keeps (before the first
transaction, or what a pack left): a value that was set before a pack has no
change reported for it.
"""

import math

from ZODB.POSException import POSKeyError
from ZODB.utils import z64

from . import errors, interrupts, ops, written
from .session import DATA_KEY, data_root
from .timetravel import Past, kept_from, latest_before, open_past, release, time_of
from .translate import translate_errors
from .undo import CHANGES, _check_count, _text

#: Path errors that mean "the path does not exist in this state".
ABSENT = (errors.KeyNotFoundError, errors.BadIndexError, errors.NotAContainerError)
#: The first batch of a record's history fetched for a change's metadata.
FIRST_BATCH = 16


class _State:
    """The value at the path in one state, and the records read for it (oid -> serial)."""

    __slots__ = ("exists", "value", "serials")

    def __init__(self, exists, value, serials):
        self.exists, self.value, self.serials = exists, value, serials

    def newest(self):
        """(the newest serial, the oids of the records it wrote)."""
        newest = max(self.serials.values(), default=z64)
        return newest, [oid for oid, serial in self.serials.items() if serial == newest]

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
    (metadata is read through it: a fresh view of the storage, which
    RelStorage's shared instance may not have), and releases it at the end.
    """

    def __init__(self, session, steps):
        self.session = session
        self.steps = tuple(steps)
        self.records = {}   # oid -> (its history entries, newest first; complete?)
        self.probes = 0     # historical reads made (the cost; tests look at it)
        self.skipped = 0    # transactions passed over on their metadata alone
        self.conn = None
        self.kept = kept_from(session)  # states before it are not kept whole

    def changes(self, before, n):
        found = []
        try:
            state = self.probe(before) if n else None
            while state is not None and len(found) < n:
                tid, writers = state.newest()
                if tid == z64:
                    break
                if len(writers) == 1:
                    previous = self.passed_over(writers[0], tid)
                    if previous is not None:
                        state.serials[writers[0]] = previous
                        self.skipped += 1
                        continue
                older = self.probe(tid)
                if older is None:
                    break  # nothing kept before it: whether it changed the value is unknown
                if state.differs(older):
                    found.append(self.entry(tid, writers[0], state))
                state = older
        finally:
            self._drop()
        return found

    def passed_over(self, oid, tid):
        """The serial record ``oid`` had before ``tid``, if ``tid`` cannot have changed
        the value: its metadata says it wrote other paths only (written.py).  Else None.

        Only for a transaction that wrote ONE record on the path: a bucket
        split or a new parent writes two (the parent and the new child), and
        then the path goes through other records before it, so it is read.
        """
        index, revisions = self.revision(oid, tid)
        if index is None:
            return None
        meta = revisions[index]
        if meta.get(DATA_KEY) not in CHANGES or written.may_change(meta.get(written.KEY),
                                                                   self.steps):
            return None
        if index + 1 >= len(revisions):
            index, revisions = self.revision(oid, tid, more=True)
            if index is None or index + 1 >= len(revisions):
                return None  # created by it (or its older revisions are packed away)
        return revisions[index + 1].get("tid")

    def probe(self, before):
        """The value at the path in the state before tid ``before``, or None if not kept."""
        if self.kept is not None and before < self.kept:
            return None
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
        # The cache of this fresh historical connection holds exactly the records
        # the read loaded (ZODB's root, the path, the value), each at its serial.
        serials = {oid: obj._p_serial for oid, obj in conn._cache.lru_items()}
        return _State(exists, value, serials)

    def entry(self, tid, oid, state):
        index, revisions = self.revision(oid, tid)
        meta = revisions[index] if index is not None else {}
        return {
            "id": tid.hex(),
            "time": time_of(tid),
            "user": str(_text(meta.get("user_name", ""))).lstrip("/ ").strip(),
            "note": _text(meta.get("description", "")),
            "value": state.value,
            "deleted": not state.exists,
        }

    def revision(self, oid, tid, more=False):
        """(index of ``tid``'s revision, the revisions of record ``oid`` newest first).

        The storage's per-record history (with each transaction's metadata),
        fetched in batches that double (FileStorage walks a record's revisions
        from the newest) and kept for the walk.  ``more``: make sure the
        revision after it (the one before in time) is fetched too.  Index
        None: not in the record's history.
        """
        revisions, complete, where = self.records.get(oid, ((), False, {}))
        while True:
            index = where.get(tid)
            if index is not None and (not more or complete or index + 1 < len(revisions)):
                return index, revisions
            if complete or (index is None and revisions and revisions[-1].get("tid", tid) < tid):
                return index, revisions
            size = max(FIRST_BATCH, 2 * len(revisions))
            with translate_errors(self.session.name), interrupts.deferred():
                revisions = self.conn._storage.history(oid, size=size) or []
            complete = len(revisions) < size
            where = {revision.get("tid"): number for number, revision in enumerate(revisions)}
            self.records[oid] = (revisions, complete, where)


def same(a, b):
    """Equal values of the same types all the way down (1 and 1.0 and True differ,
    and NaN is the same as NaN), without recursion."""
    stack = [(a, b)]
    while stack:
        a, b = stack.pop()
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            if a.keys() != b.keys():
                return False
            stack.extend((value, b[key]) for key, value in a.items())
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

