"""Where a statement's transaction comes from: autocommit, blocks, lock/unlock, atomic.

A :class:`~zpydb.paths.Path` hands each operation to an *executor*.  Both
executors have one protocol:

* ``read(op)``: ``op(root, reads)`` in a transaction that writes nothing;
* ``write(op, note, wrote)``: ``op(root, reads)`` as (part of) a transaction
  whose note is ``note`` (:func:`describe_transaction` writes the metadata,
  with ``wrote``, the path the statement writes to: written.py);
* ``iterate(op)``: the items of ``op(root, reads, position, size)``'s batches
  (:func:`ops.read_batch`), every batch read from one snapshot;

where ``op`` is an ops.py call and ``reads`` the executor's read tracker
(:class:`ops.Reads`).  The executors:

* :class:`Autocommit` (the default ``db``): each statement is its own
  transaction (session.py's engine), its tracker :data:`ops.UNTRACKED` does
  nothing; or it joins this thread's ``db.lock()`` block if one is open;
* :class:`Block` (``with db.transaction() as t``): every statement runs in one
  open ZODB transaction on a private connection, which commits at the end; its
  tracker registers every read (below).

Database-wide calls (undo, redo, history, pack) go through
``Autocommit.database(call, refusal)``: they run on the session only when no
block of this thread is open (they commit behind a block's snapshot).

Blocks are serializable: every persistent object a block reads is registered
with ``Connection.readCurrent``, so if another client commits a change to it
before the block commits, the commit fails with ConflictError instead of
silently committing a decision based on stale data (no write skew).  Each
statement checks everything before it changes anything (ops.py), so a statement
that fails inside a block leaves nothing of itself behind even when the caller
catches the error.  Long blocks take a savepoint every SAVEPOINT_EVERY writes
to bound memory.

``db.atomic(func)`` re-runs a whole block on conflict, with ``transaction``'s
``TransactionManager.attempts()`` plus a bounded, jittered back-off.
"""

import functools
import getpass
import itertools
import threading
import time
import weakref
from contextlib import nullcontext

import ZODB.POSException as POS
from ZODB.utils import z64

from . import errors, interrupts, ops, outcome, written
from .session import DATA_KEY, Recovery, RetryBudget, _Result, data_root, snapshot_before
from .translate import COMMIT_FAILURES, DISCONNECTS, TRANSLATED, translate, translate_errors


#: A long block (a bulk import) takes a savepoint every this many writes, so
#: the objects it has written can leave memory before the commit
#: (tests/test_transactions.py, "bounded number of written records").  Not
#: sooner: a saved record is written to a temporary file and copied again at the
#: commit, ~8 µs per record (a third of a bulk load's time, bench HP/B1), while
#: 20,000 small pending records take ~30 MB.  Blocks below it pay nothing.
SAVEPOINT_EVERY = 20_000
NOTE_LIMIT = 300


@functools.lru_cache(maxsize=None)
def os_user():
    """The OS user recorded with every transaction (looked up once: pwd is slow)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"



def describe_transaction(txn, note, kind="write", user=None, wrote=None, **extension):
    """Note, user and the ``zpydb`` extension that undo.py reads back.

    ``user``: who made the change (``zpydb web`` passes the token's name);
    None records the OS user of this process.  ``wrote``: the paths the
    transaction's statements wrote to, recorded for path histories
    (written.py); None records nothing (may have changed anything).
    """
    if len(note) > NOTE_LIMIT:
        note = note[:NOTE_LIMIT - 3] + "..."
    txn.note(note)
    txn.setUser(os_user() if user is None else user)
    txn.setExtendedInfo(DATA_KEY, kind)
    paths = None if wrote is None else written.encode(wrote)
    if paths is not None:
        txn.setExtendedInfo(written.KEY, paths)
    for key, value in extension.items():
        txn.setExtendedInfo(key, value)


class Autocommit:
    """One transaction per statement (or this thread's open lock() block)."""

    def __init__(self, session):
        self.session = session
        self._locks = threading.local()

    @property
    def lock_block(self):
        return getattr(self._locks, "block", None)

    def read(self, op):
        block = getattr(self._locks, "block", None)  # lock_block, inline: every read asks
        if block is not None:
            return block.read(op)
        return self.session.read(op, ops.UNTRACKED)

    def write(self, op, note, wrote=(), blind=False):
        """``wrote``: the path (steps) the statement writes to (written.py); ``blind``:
        the statement is a blind write (Session.write, "Writes without the ping")."""
        block = getattr(self._locks, "block", None)  # lock_block, inline
        if block is not None:
            return block.write(op, note, wrote)
        text = note()
        return self.session.write(
            op, lambda txn: describe_transaction(txn, text, wrote=[wrote]), blind)

    def iterate(self, op):
        """An iterator over ``op``'s batches, all read from ONE snapshot.

        ``op(root, reads, position, size) -> (items, next position or None)``
        (:func:`ops.read_batch`).  The first batch is read now, as any read
        (errors surface here, and it is the moment of the snapshot); the rest
        are read when the iterator gets to them, each from that first read's
        snapshot.  While every batch so far found its objects in memory (none
        was loaded from the storage: ``Connection.getTransferCounts``), the next
        one is read on this thread's own connection if it is still at that
        snapshot (:meth:`Session.read_snapshot`; its cache is warm); otherwise
        on a historical connection that keeps nothing afterwards
        (:meth:`Session.read_before`), so iterating a value that is not in
        memory holds one batch of it at a time, not the whole value.
        """
        block = self.lock_block
        if block is not None:
            return block.iterate(op)
        session, snapshot = self.session, {"warm": True}

        def counted(root, position, size):
            conn = root._p_jar
            loads = conn.getTransferCounts()[0] if conn is not None else 0
            result = op(root, ops.UNTRACKED, position, size)
            if conn is not None and conn.getTransferCounts()[0] != loads:
                snapshot["warm"] = False  # not all in memory: the rest on historical connections
            return result

        def first(root):
            conn = root._p_jar
            before = None if conn is None else snapshot_before(conn)
            snapshot.update(db=conn.db() if before else None, before=before)
            # no snapshot to come back to: one read of everything (the old way)
            return counted(root, None, ops.BATCH_SIZE if before else None)

        items, position = session.read(first)

        def rest(position):
            if snapshot["warm"]:
                size = ops.BATCH_SIZE * ops.WARM_BATCH_FACTOR
                return session.read_snapshot(snapshot["db"], snapshot["before"],
                                             lambda root: counted(root, position, size))
            return session.read_before(
                snapshot["db"], snapshot["before"],
                lambda root: op(root, ops.UNTRACKED, position, ops.BATCH_SIZE))

        return _batches(items, position, rest)

    def database(self, call, refusal):
        """``call(session)``: a database-wide call (undo, redo, history, pack).

        Refused with ``refusal(session)`` (an exception) while a ``lock()``,
        ``transaction()`` or ``atomic`` block is open in this thread: the call
        commits on its own connection, behind the block's snapshot.
        """
        if open_blocks(self.session):
            raise refusal(self.session)
        return call(self.session)

    # pyzdb's lock()/unlock(): an optimistic block, not a global lock
    def lock(self):
        if self.lock_block is not None:
            raise errors.Error("db.lock() is already held by this thread; call db.unlock()")
        self._locks.block = Block(self.session)

    def abandon_lock(self):
        block = self.lock_block
        if block is not None:
            self._locks.block = None
            block.abort()

    def unlock(self):
        block = self.lock_block
        self.session._check_open()  # "the database ... is closed" says more than the below
        if block is None:
            raise errors.Error("db.unlock() without db.lock()")
        self._locks.block = None
        block.commit()


def _batches(items, position, next_batch):
    """``items``, then ``next_batch(position)``'s items until the position is None.

    One iterator: ``itertools.chain`` walks each batch in C, and the generator
    below runs once per batch, not once per item.  A loop that stops early
    (``break``) holds nothing open, since each batch opens and closes what it
    reads from.
    """
    return itertools.chain.from_iterable(_each_batch(items, position, next_batch))


def _each_batch(items, position, next_batch):
    yield items
    while position is not None:
        items = None  # the previous batch can go before the next one is read
        items, position = next_batch(position)
        yield items


# -- VAL's hook: this thread's open blocks (undo.py refuses to run inside one) --
_open = threading.local()


def open_blocks(session):
    """This thread's blocks (lock(), transaction(), atomic) on ``session`` not ended yet."""
    return [block for block in getattr(_open, "blocks", ())
            if block.session is session and not block.done]


class Block:
    """One open transaction on a private connection; statements join it."""

    def __init__(self, session, raw_errors=False, note=None, user=None):
        """``raw_errors``: let ZODB/ZEO exceptions through untranslated, for
        ``atomic``, whose recovery must tell a disconnect (re-run the block)
        from the rest; a block the user drives gets zpydb errors at once.
        ``note``/``user``: the transaction's note (instead of the statements'
        notes joined) and user (instead of the OS user), see :func:`check_metadata`."""
        self.session = session
        self.raw_errors = raw_errors
        self.note, self.user = note, user
        self.notes = []
        self._note_room = NOTE_LIMIT + 1
        self.wrote = []  # the path of each statement (written.py)
        self.done = False
        self.read_set = {}  # oid -> serial when the block first read it
        self._reads = _BlockReads(self)
        self._writes = 0
        self.txid, self.started = outcome.new_txid(), time.time()
        self.tm = self.conn = None
        try:
            with interrupts.deferred():  # Ctrl-C between statements, never inside one
                self.tm, self.conn = session.open_private()
                with self._translated():
                    self.tm.begin()
        except BaseException:  # an error, or the Ctrl-C delivered when the hold ends
            if self.conn is not None:
                self.tm.abort()
                self.conn.close()
            raise
        _open.__dict__.setdefault("blocks", weakref.WeakSet()).add(self)  # for open_blocks()

    def _translated(self):
        return nullcontext() if self.raw_errors else translate_errors(self.session.name)

    def _guard(self):
        txn = self.tm.get()
        if getattr(txn, "_zpydb_guard", None) is None:
            txn._zpydb_guard = _ReadSetGuard(self.conn, self.read_set)
            txn.join(txn._zpydb_guard)

    def register(self, obj):
        """Register ``obj`` as read: its serial *as loaded in this block* must hold.

        A ghost (not loaded yet, or evicted from the cache) reports serial 0
        or the serial it had when it was last loaded, so it is loaded first;
        the serial is then the one of this block's snapshot.

        An object already in the read set was registered in this transaction
        (the set starts empty with each one: ``reset``), and the first serial
        is the one that counts (``setdefault``): the guard checks it at commit
        even where ZODB dropped its own ``readCurrent`` entry (an object the
        block also wrote), so registering it again would add nothing.  A block
        that reads the same dict for every item registers its buckets once.
        """
        oid = getattr(obj, "_p_oid", None)
        if oid is None or oid in self.read_set:
            return  # created in this block (nothing to check), or registered already
        obj._p_activate()
        if obj._p_serial != z64:
            self.conn.readCurrent(obj)
            self.read_set.setdefault(obj._p_oid, obj._p_serial)
            self._guard()

    def read(self, op):
        self._check()
        with interrupts.deferred(), self._translated():
            return op(data_root(self.conn), _BlockReads(self))

    def iterate(self, op):
        """``op``'s batches (see :meth:`Autocommit.iterate`) on the block's own
        connection: its snapshot, and its read tracker sees every batch."""
        items, position = self.read(lambda root, reads: op(root, reads, None, ops.BATCH_SIZE))
        return _batches(items, position, lambda position: self.read(
            lambda root, reads: op(root, reads, position, ops.BATCH_SIZE)))

    def write(self, op, note, wrote=(), blind=False):
        """One statement of the block: a Ctrl-C during it lands after it (the
        block is then aborted as a whole by whoever catches the interrupt).
        ``blind`` changes nothing here: a block's transaction begins up to date."""
        if self.done:  # _check(), inline: a bulk load runs this per item
            self._check()
        writes = self._writes
        with interrupts.deferred():
            try:  # _translated(), inline
                if writes and writes % SAVEPOINT_EVERY == 0:
                    # when the next write comes, not after the last one: a block that
                    # ends there commits without copying its last writes once more
                    self.tm.savepoint(optimistic=True)  # the cache may drop what was written
                result = op(data_root(self.conn), self._reads)
            except TRANSLATED as exc:
                if self.raw_errors:
                    raise
                raise translate(exc, self.session.name) from (
                    exc if isinstance(exc, POS.ConflictError) else None)
        if self._note_room > 0:  # the note keeps NOTE_LIMIT characters: no more texts
            text = note()
            self.notes.append(text)
            self._note_room -= len(text) + 2
        self.wrote.append(wrote)
        self._writes = writes + 1
        return result

    def commit(self):
        """Commit the block once; if the commit broke off, find out whether it happened."""
        self._check()
        self.done = True
        with interrupts.deferred():
            try:
                interrupts.checkpoint()  # a Ctrl-C so far: abort rather than commit
                self.describe()
                with translate_errors(self.session.name):
                    self.commit_once()
            except BaseException:
                self.tm.abort()
                raise
            finally:
                self.conn.close()

    def commit_once(self):
        """``tm.commit()``, exactly once: a broken commit is looked up in the log."""
        try:
            self.tm.commit()
        except COMMIT_FAILURES as exc:
            if not (isinstance(exc, DISCONNECTS) or self.tm.failed_commit is exc):
                raise
            self.tm.abort()
            if self.session.find_outcome(self.txid, self.started, exc):
                return
            raise translate(exc, self.session.name, self.session.db.storage) from None

    def reset(self):
        """Forget the notes and read set of a previous attempt (atomic retries)."""
        self.notes = []
        self._note_room = NOTE_LIMIT + 1
        self.wrote = []
        self.read_set = {}

    def describe(self):
        txn = self.tm.get()
        outcome.mark(txn, self.txid)
        if self.notes or self.note is not None:
            note = "; ".join(self.notes) if self.note is None else self.note
            describe_transaction(txn, note, user=self.user, wrote=self.wrote)

    def close(self):
        self.done = True
        with interrupts.deferred():
            self.tm.abort()
            self.conn.close()

    def abort(self):
        if self.done:
            return
        self.close()

    def _check(self):
        if self.done:
            raise errors.Error("this transaction block has already ended")


class _BlockReads(ops.Reads):
    """A block's read tracker: every object read is registered with the block."""

    __slots__ = ("block",)

    def __init__(self, block):
        self.block = block

    def register(self, obj):
        self.block.register(obj)


class _ReadSetGuard:
    """A data manager that makes a block's reads hold even for objects it also wrote.

    ZODB drops ``readCurrent`` for objects a transaction writes, leaving them
    to the store's own conflict check -- and BTrees then *resolve* concurrent
    changes to different keys of one bucket.  A block that read a dict, decided,
    and wrote back to it could merge with a concurrent change it never saw
    (write skew).  In the commit phase (after every connection's tpc_begin,
    so under the storage's commit lock) this re-asks the storage whether every
    object the block read is still at the serial it read; if not, the storage
    raises ReadConflictError and the whole transaction aborts.
    """

    def __init__(self, conn, read_set):
        self.conn = conn
        self.read_set = read_set
        self.transaction_manager = conn.transaction_manager

    def sortKey(self):
        return "\uffffzpydb-read-set"  # after the connection's own commit

    def commit(self, txn):
        try:
            meta = txn.data(self.conn)
        except KeyError:
            return  # the block wrote nothing: a read-only snapshot is already serializable
        storage = self.conn._storage
        for oid, serial in self.read_set.items():
            storage.checkCurrentSerialInTransaction(oid, serial, meta)

    def abort(self, txn):
        pass

    tpc_begin = tpc_vote = tpc_finish = tpc_abort = abort

    def savepoint(self):
        return self  # reads are only ever added: rolling back keeps them (stricter)

    def rollback(self):
        pass


def check_metadata(note, user):
    """Refuse a ``note``/``user`` that is not a str (or None) before any transaction begins.

    The note replaces the statements' notes in ``db.history()``; the user
    replaces the OS user (``zpydb web`` records the token's name).
    """
    for name, value in (("note", note), ("user", user)):
        if value is not None and not isinstance(value, str):
            raise errors.BadArgumentError(
                "db", f"{name}= must be a str or None, not {type(value).__name__}")


class TransactionContext:
    """``with db.transaction() as t:`` commits on success, aborts on exception."""

    def __init__(self, session, make_root, note=None, user=None):
        check_metadata(note, user)
        self.session = session
        self.make_root = make_root
        self.note, self.user = note, user
        self.block = None

    def __enter__(self):
        self.block = Block(self.session, note=self.note, user=self.user)
        return self.make_root(self.block)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.block.abort()
            return False
        self.block.commit()
        return False


def atomic(session, make_root, func, tries=None, note=None, user=None):
    """Run ``func(t)`` in a block; on a conflict start over until ``retry_timeout``.

    The retry loop is ``TransactionManager.attempts()`` from the ``transaction``
    package: each attempt begins a new transaction (so it reads the newly
    committed state), commits on success, and swallows a transient error
    (ConflictError) to go round again while the time budget lasts (the
    ``_retryable`` of session.py), with full-jitter back-off.  ``tries``
    optionally caps the number of attempts as well.  A commit that broke off
    (a server restart) is looked up in the log: applied, it returns; not
    applied, the whole block runs again on the reconnected server.
    """
    check_metadata(note, user)
    budget = RetryBudget(session.options, max_attempts=tries)
    result = _Result()
    recovery = Recovery(session, budget)
    with translate_errors(session.name, session.db.storage, budget):
        while True:
            block = None
            try:
                block = Block(session, raw_errors=True, note=note, user=user)
                return _atomic_attempts(block, make_root, func, budget, result)
            except COMMIT_FAILURES as exc:
                tm = block.tm if block is not None else None
                if not recovery.handles(exc, tm):
                    raise
                if block is None:  # the connection broke at begin: nothing ran
                    recovery.committed(exc, None, None, None)
                    continue
                block.tm.abort()
                if recovery.committed(exc, block.tm, block.txid, block.started):
                    return result.value
            finally:
                if block is not None:
                    block.close()


def _atomic_attempts(block, make_root, func, budget, result):
    block.tm.deadline = budget.deadline
    for attempt in block.tm.attempts(budget.max_attempts):
        budget.next_attempt()
        with attempt:
            block.reset()
            result.value = func(make_root(block))
            block.describe()
    return result.value
