"""Connections and transactions: how one statement becomes one ZODB transaction.

A :class:`Session` owns an open ``ZODB.DB`` (and optionally a second one for a
read replica).  Each thread gets its own ``Connection`` with its own
``TransactionManager`` (ZODB connections are not thread-safe; per-thread
connections keep their object caches warm between statements).

* :meth:`Session.read` begins a transaction (which, with ZEO ``server_sync``,
  asks the server for invalidations first, so the read sees every write that
  was acknowledged before it), runs the read, and aborts: reads never write.
* :meth:`Session.write` runs the change in a ``TransactionManager.attempts()``
  loop, which retries ZODB's transient conflicts until ``retry_timeout`` (and
  the optional ``retries`` cap) runs out, and commits durably before returning.

This is the engine under transactions.py's ``Autocommit`` executor: what the
transaction records (note, user, the ``zpydb`` extension) is the executor's
business (``describe``), which storage errors become which zpydb errors is
translate.py's.
"""

import itertools
import logging
import random
import threading
import time

import transaction
import ZODB.POSException as POS
from BTrees.OOBTree import OOBTree
from ZEO.ClientStorage import ClientStorage
from ZODB.utils import z64

from . import errors, interrupts, ops, outcome
from .nodes import DATA_KEY
from .storage import SERVER_BEHIND_MESSAGE, OpenDatabase, server_behind_cache
from .translate import (COMMIT_FAILURES, DISCONNECTS, LOCK_ERRORS, TRANSLATED,
                        describe_failure, translate, translate_errors)

#: The root key beside DATA_KEY that holds the stored format (docs/architecture.md).
#: Missing: format 0, written before the format was recorded.
FORMAT_KEY = "zpydb_format"
#: The newest stored format this code reads and the one it writes.
#: 1: BigLists record their chunk size, chunks their capacity (biglist.py).
#: 2: dicts past one bucket are BigDicts, which keep a BTrees.Length (bigdict.py).
FORMAT_VERSION = 2
LOOKUP_TRIES = 20  # outcome lookups after a broken commit, within wait_timeout

# ZODB, ZEO and transaction log what zpydb turns into its own errors ("Failure
# in _finish", "MultipleUndoErrors from server"...).  A library adds a
# NullHandler so that nothing reaches stderr unless the application configures
# logging (then everything still propagates to its handlers).
for _name in ("ZODB", "ZEO", "txn", "transaction", "relstorage"):
    logging.getLogger(_name).addHandler(logging.NullHandler())

class _ZpydbTransactionManager(transaction.TransactionManager):
    """``attempts()`` bounded by a deadline; commits that Ctrl-C cannot cut in half.

    ``TransactionManager.attempts(n)`` asks ``_retryable`` whether an error
    may be retried; zpydb answers yes for transient errors (conflicts,
    RelStorage lock timeouts) only while the statement's time budget lasts.
    A disconnect is never retried blindly: the commit may have happened
    (outcome.py decides).
    """

    deadline = None  # time.monotonic() after which nothing is retried
    #: The server round trip that makes a transaction see every write acknowledged
    #: before it began (``OpenDatabase.sync``: ZEO's ping); None: nothing to do.
    sync = None
    #: False: the next ``begin()`` skips ``sync`` (a blind write, see Session.write).
    fresh = True
    #: A blind write's read tracker on a ZEO client (:class:`PathCheck`), else None.
    path_check = None
    #: The :class:`VoteMark` of the current attempt, when it is a blind one.
    vote_mark = None
    #: True while a write of this thread runs on the connection: a read meanwhile
    #: (a value of the application's that looks something up in db as zpydb
    #: converts it) reads in the write's transaction instead of ending it.
    writing = False

    def begin(self):
        """``TransactionManager.begin()``, after the server round trip (``sync``)."""
        fresh, self.fresh = self.fresh, True
        if fresh and self.sync is not None:
            self.sync()
        return super().begin()

    def begin_read(self, conn, ping=True):
        """What ``begin()`` does for ``conn``, for a statement that changes nothing.

        ``begin()`` and ``abort()`` build and tear down a Transaction (a logger,
        synchronizer calls through weak sets): about 7 µs, twice what a read on
        a warm cache costs.  A read needs only what they do to the connection:
        ``Connection.newTransaction`` (the ISynchronizer call ``begin()`` makes:
        the storage's snapshot moves to now and the cache drops what others
        changed) and, after the read, :meth:`end_read`.  ``ping``: the server
        round trip first (as ``begin()`` with ``fresh``).
        """
        if self._txn is not None:  # left open by something else: end it as begin() would
            self.abort()
        fresh, self.fresh = self.fresh, True
        if ping and fresh and self.sync is not None:
            self.sync()
        conn.newTransaction(None)

    def end_read(self, conn):
        """What ``abort()`` does for a connection nothing changed: its
        ``afterCompletion`` (RelStorage ends the database snapshot it read in;
        the cache is trimmed).  A read that did change an object joined a
        transaction (ZODB registers every change): that is aborted whole."""
        if self._txn is not None:
            self.abort()
        else:
            conn.afterCompletion(None)

    def _retryable(self, error_type, error):
        if issubclass(error_type, DISCONNECTS):
            return False
        transient = super()._retryable(error_type, error) or issubclass(error_type, LOCK_ERRORS)
        return transient and self.deadline is not None and time.monotonic() < self.deadline

    failed_commit = None  # the exception the last commit() raised, if any

    def _finishing(self):
        """Whether a Ctrl-C now would cut a commit that may have been applied
        (interrupts.py): not while a blind write's commit has not voted."""
        mark = self.vote_mark
        return mark is None or mark.voted

    def commit(self):
        self.failed_commit = None
        with interrupts.deferred(commit=self._finishing):
            try:
                return super().commit()
            except BaseException as exc:
                self.failed_commit = exc
                raise


class RetryBudget:
    """How long (and optionally how many times) one statement may retry."""

    def __init__(self, options, max_attempts=None):
        self.timeout = options.retry_timeout
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout
        cap = max_attempts if max_attempts is not None else options.retries
        self.max_attempts = cap if cap else 1_000_000_000
        self.attempts = 0

    def next_attempt(self):
        """Count an attempt; sleep a full-jitter back-off before every retry.

        Between attempts nothing is half done: a held Ctrl-C stops here.
        """
        interrupts.checkpoint()
        if self.attempts and not self.rerun:
            back_off(self.attempts, self.deadline)
            interrupts.checkpoint()
        self.rerun = False
        self.attempts += 1

    rerun = False

    def again(self):
        """The next attempt re-runs a statement that failed on data that may have
        been stale, not after a conflict: no back-off before it."""
        self.rerun = True

    def left(self):
        return time.monotonic() < self.deadline

    def describe(self):
        return (f"gave up after {time.monotonic() - self.started:.1f} s and "
                f"{self.attempts} attempt(s) (retry_timeout={self.timeout:g} s)")


class _Result:
    value = None


class VoteMark:
    """A data manager that joins a blind write's transaction last: it learns
    whether every other one voted.

    A ZEO server commits at ``tpc_finish``, which ZODB sends only after every
    resource voted.  A blind write has not pinged the server first, so a
    server that just went away is noticed during its commit, not before it:
    if that happens before this mark voted, the transaction cannot have been
    committed, and the statement says "nothing was applied" (and is retried
    while the server restarts) instead of looking in a log it cannot read.
    """

    def __init__(self, tm, txn):
        self.voted = False
        self.transaction_manager = tm
        txn.join(self)

    @staticmethod
    def unvoted(tm):
        mark = getattr(tm, "vote_mark", None)
        return mark is not None and not mark.voted

    def sortKey(self):
        return "\uffff\uffffzpydb-vote-mark"  # after the connection and any guard

    def tpc_vote(self, txn):
        self.voted = True

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort


class PathCheck(ops.Reads):
    """A blind write's read tracker on a ZEO client: its path must still be current.

    Registers with ``Connection.readCurrent`` every container the write walks
    through (the part of each dict that holds the key on the path, each list
    on it: :meth:`ops.Reads.at`) and anything the statement reads; the
    commit fails with ReadConflictError if another client changed one of them
    since this client's (maybe not yet up to date) view of it.  Objects the
    write changes are left to ZODB's own conflict check (ZODB ignores
    ``readCurrent`` for them), so concurrent appends and ``+=`` still merge.
    """

    paths_of_writes = True
    __slots__ = ("conn",)

    def __init__(self, conn):
        self.conn = conn

    def register(self, obj):
        if getattr(obj, "_p_oid", None) is None:
            return  # created by this statement: nothing to check
        obj._p_activate()  # a ghost's serial is not the one this statement read
        if obj._p_serial != z64:
            self.conn.readCurrent(obj)


class Recovery:
    """After a statement or block broke off: did it commit, may it run again?

    * The commit itself failed (disconnect, full disk, server error): the log
      is searched for the transaction's id (outcome.py).  Found: it committed.
    * Not found, or the failure came before the commit: nothing was applied.
      A disconnect is then retried while the server may be restarting (up to
      ``wait_timeout`` after the first disconnect, within ``retry_timeout``);
      anything else is raised as a zpydb error that says nothing was applied.
    """

    def __init__(self, session, budget):
        self.session = session
        self.budget = budget
        self.disconnected_at = None

    @staticmethod
    def handles(exc, tm):
        return isinstance(exc, DISCONNECTS) or getattr(tm, "failed_commit", None) is exc

    def committed(self, exc, tm, txid, started):
        """True: it committed.  False: run it again.  Raises: give up, outcome known.

        ``tm`` is None when the failure came before anything ran (at begin).
        """
        failed_commit = getattr(tm, "failed_commit", None) is exc
        if failed_commit and self.session.find_outcome(txid, started, exc):
            return True
        if isinstance(exc, DISCONNECTS) and self._may_wait_for_server():
            return False
        session = self.session
        raise translate(exc, session.name, session.db.storage, self.budget) from None

    def _may_wait_for_server(self):
        now = time.monotonic()
        if self.disconnected_at is None:
            self.disconnected_at = now
        patience = max(1.0, self.session.options.wait_timeout)
        return self.budget.left() and now < self.disconnected_at + patience


class Session:
    """An open database: the primary, an optional read replica, per-thread connections."""

    def __init__(self, opened: OpenDatabase, read_opened: OpenDatabase = None):
        self.opened = opened
        self.read_opened = read_opened
        self.options = opened.options
        self.name = opened.name
        self._local = threading.local()
        self._all = []  # (tm, conn) of every thread, to close them
        self._lock = threading.Lock()
        self.closed = False
        for each in (opened, read_opened):
            if each is not None:
                _forget_prefetched_oids_on_reconnect(each.storage)
        self._ensure_data_root()
        interrupts.retain()  # released by close(): the last close takes the guards out

    @property
    def db(self):
        return self.opened.db

    # -- connections -------------------------------------------------------
    def connection(self, replica=False):
        """This thread's (transaction manager, connection) for the primary or replica."""
        self._check_open()
        attr = "replica" if replica and self.read_opened else "primary"
        pair = getattr(self._local, attr, None)
        if pair is None:
            opened = self.read_opened if attr == "replica" else self.opened
            tm = _ZpydbTransactionManager()
            conn = opened.db.open(transaction_manager=tm)
            # Every statement begins its own transaction (``tm.begin()``, which
            # brings the connection up to date); in ZODB's implicit mode the
            # connection would also catch up after every commit and abort
            # (``Connection.afterCompletion``), ~1.5 µs per statement for nothing.
            conn.explicit_transactions = True
            tm.sync = opened.sync
            if isinstance(opened.db.storage, ClientStorage):
                tm.path_check = PathCheck(conn)
            pair = (tm, conn)
            setattr(self._local, attr, pair)
            with self._lock:
                self._all.append(pair)
        return pair

    def open_private(self):
        """A fresh (tm, connection) for a transaction block, closed by the caller."""
        self._check_open()
        tm = _ZpydbTransactionManager()
        tm.sync = self.opened.sync
        return tm, self.db.open(transaction_manager=tm)

    def _check_open(self):
        if self.closed:
            raise errors.Error(f"the database {self.name} is closed")

    def _ensure_data_root(self):
        """Check the stored format; create the data root and stamp the format, once.

        A format newer than :data:`FORMAT_VERSION` is refused (FormatError).
        A new database gets the OOBTree that holds db's keys (a BigDict once
        it spans several buckets, like any dict: ops.py) and the format in
        one transaction (``init``); an older one (format 0 or 1) gets the
        stamp alone (``format``, which undo/redo and history pass over), its
        records stay as they are (they read with the legacy defaults, and a
        big plain OOBTree, the data root included, gets its Length from the
        first statement that writes into it: ops.py).
        Read-only opens only check.  Two clients opening at once conflict on
        the root: the loser looks again and finds the work done.
        """
        tm, conn = self.connection()
        with translate_errors(self.name):
            for attempt in range(3):
                tm.begin()
                try:
                    root = conn.root()
                    check_format(root, self.name)
                except BaseException:
                    tm.abort()
                    raise
                create = DATA_KEY not in root
                stamped = root.get(FORMAT_KEY) == FORMAT_VERSION
                if self.options.read_only or (stamped and not create):
                    tm.abort()
                    return
                if create:
                    root[DATA_KEY] = OOBTree()
                root[FORMAT_KEY] = FORMAT_VERSION
                txn = tm.get()
                txn.note("zpydb: create the data root" if create else
                         f"zpydb: record stored format {FORMAT_VERSION}")
                txn.setExtendedInfo(DATA_KEY, "init" if create else "format")
                try:
                    tm.commit()
                    return
                except POS.ReadOnlyError:
                    tm.abort()
                    return
                except POS.ConflictError:
                    tm.abort()
                    if attempt == 2:
                        raise

    # -- statements --------------------------------------------------------
    def read(self, func, *args):
        """Run ``func(data_root, *args)`` in a fresh read transaction; never commits.

        The hot path of every read (docs/architecture.md, "Hot path"): no
        ``translate_errors()`` context manager, the except clause costs nothing
        until something is raised.
        """
        tm, conn = self.connection(replica=True)
        storage = conn.db().storage
        if server_behind_cache(storage):
            raise errors.DisconnectedError(f"{self.name}: {SERVER_BEHIND_MESSAGE}")
        if tm.writing:  # inside this thread's write: in its transaction, which goes on
            return self._read_in_write(func, conn, storage, *args)
        try:
            with interrupts.deferred():  # a Ctrl-C lands after the read (interrupts.py)
                tm.begin_read(conn)
                try:
                    return func(data_root(conn), *args)
                finally:
                    tm.end_read(conn)
        except TRANSLATED as exc:
            raise translate(exc, self.name, storage) from None

    def _read_in_write(self, func, conn, storage, *args):
        try:
            return func(data_root(conn), *args)
        except TRANSLATED as exc:
            raise translate(exc, self.name, storage) from None

    def read_snapshot(self, db, before, func):
        """Run ``func(data_root)`` on the snapshot of ``db`` before transaction id ``before``.

        On this thread's own connection when a transaction begun on it now
        still reads that snapshot (nothing was committed since, or this client
        has not heard of it yet): MVCC reads every object "before ``_start``",
        so the same ``before`` is the same state, and the connection's cache
        is warm.  Otherwise on a historical connection (:meth:`read_before`).
        Later batches of an iteration read here (transactions.py ``iterate``).
        """
        tm, conn = self.connection(replica=True)
        if conn.db() is db and not tm.writing:  # (a write's transaction must go on)
            storage = db.storage
            try:
                with interrupts.deferred():
                    tm.begin_read(conn, ping=False)  # the question is "still that snapshot?"
                    try:
                        if snapshot_before(conn) == before:
                            return func(data_root(conn))
                    finally:
                        tm.end_read(conn)
            except TRANSLATED as exc:
                raise translate(exc, self.name, storage) from None
        return self.read_before(db, before, func)

    def read_before(self, db, before, func):
        """Run ``func(data_root)`` on a read-only historical connection of ``db``
        that sees the state *before* transaction id ``before`` (ZODB's MVCC:
        ``DB.open(before=...)``, served by ``loadBefore``).

        A later batch of an iteration (transactions.py ``Autocommit.iterate``)
        reads the snapshot of its first batch this way, whatever was committed
        since.  The connection is closed (back to ``db``'s historical pool,
        its cache emptied so the pool holds no batch) before this returns.
        """
        self._check_open()
        with translate_errors(self.name), interrupts.deferred():
            conn = db.open(transaction_manager=transaction.TransactionManager(), before=before)
            try:
                return func(data_root(conn))
            finally:
                conn.cacheMinimize()
                conn.close()

    def write(self, func, describe, blind=False):
        """Run ``func(data_root, reads)`` as one durable transaction, exactly once.

        ``describe(txn)`` writes the transaction's metadata (each attempt).
        ``reads`` is :data:`ops.UNTRACKED`, or a blind write's :class:`PathCheck`.

        ``TransactionManager.attempts()`` begins a fresh transaction per attempt
        and retries what cannot be merged (conflicts) until ``retry_timeout``
        runs out, with full-jitter back-off so that clients hammering one key
        take turns; a single statement is safe to re-run.  If the commit itself
        fails (the server went away, the disk is full), the transaction log is
        searched for this statement's id: found, it committed and returns
        normally; not found, nothing was applied and it is retried (after a
        disconnect) or reported (outcome.py).

        Writes without the ping: a ZEO client's transactions begin with a
        round trip to the server (``sync``), so that they see every write
        acknowledged before they began.  A *blind* write (``blind``: setting a
        key or index to a value, ``append``, ``extend``, ``+=``) changes its
        target without deciding anything from what the target held, so what
        it needs current is only its path: the containers it walks through to
        reach the target.  Its first attempt skips the round trip and
        registers those containers with ``readCurrent`` (:class:`PathCheck`):
        if another client changed one of them (``db['l']`` now names a new
        list), the commit fails and the statement is retried, with the round
        trip, instead of landing in the list nothing points to any more.  The
        target itself is protected as any write is, by ZODB's conflict check
        at commit.  A zpydb error of such an attempt (a key not found) is only
        believed after the statement ran again with the round trip.
        """
        budget = RetryBudget(self.options)
        txid, started = outcome.new_txid(), time.time()
        result = _Result()
        recovery = None
        try:  # translate_errors(), inline: this is the hot path of every write
            with interrupts.deferred():
                while True:
                    tm, conn = self.connection()
                    try:
                        return self._attempts(tm, conn, func, describe, txid, budget, result,
                                              blind)
                    except errors.Error:
                        if not (blind and tm.sync is not None):
                            raise
                        blind = False  # believed only on data as fresh as a read's
                        budget.again()
                    except COMMIT_FAILURES as exc:
                        if not Recovery.handles(exc, tm):
                            raise  # not the storage's failure (e.g. a file the statement reads)
                        recovery = recovery or Recovery(self, budget)
                        self._drop_connection()
                        if isinstance(exc, DISCONNECTS):
                            blind = False  # the next attempt waits for the server (its ping)
                            if VoteMark.unvoted(tm):  # lost before tpc_finish: not applied
                                tm = None
                        if recovery.committed(exc, tm, txid, started):
                            return result.value
        except errors.Error:
            raise
        except TRANSLATED as exc:
            raise translate(exc, self.name, self.db.storage, budget) from (
                exc if isinstance(exc, POS.ConflictError) else None)

    def _attempts(self, tm, conn, func, describe, txid, budget, result, blind):
        tm.deadline = budget.deadline
        check, first = (tm.path_check if blind else None), True
        if tm.writing:  # ending the write around it would commit that one unnamed, or lose it
            return self._write_beside(func, describe, budget)
        tm.writing = True
        try:
            return self._each_attempt(tm, conn, func, describe, txid, budget, result, check,
                                      first)
        finally:
            tm.writing = False

    def _write_beside(self, func, describe, budget):
        """A write while this thread's write runs on the connection: a statement of
        the application's signal handler (run at the write's safe point) or of a value
        that writes as zpydb converts it.  It commits on a connection of its own, so
        the write around it goes on whole: its changes, its note, its mark."""
        tm, conn = self.open_private()
        try:
            for attempt in tm.attempts(budget.max_attempts):
                budget.next_attempt()
                with attempt:
                    describe(tm.get())
                    value = func(data_root(conn), ops.UNTRACKED)
                    interrupts.checkpoint()  # a Ctrl-C so far: abort rather than commit
            return value
        finally:
            tm.abort()
            conn.close()

    def _each_attempt(self, tm, conn, func, describe, txid, budget, result, check, first):
        for attempt in tm.attempts(budget.max_attempts):
            budget.next_attempt()
            reads, tm.vote_mark = ops.UNTRACKED, None
            if check is not None and (first or tm.sync is None):
                tm.fresh = False  # the first attempt only: a retry begins with the round trip
                reads = check
            first = False
            with attempt:
                txn = tm.get()
                if reads is check:
                    tm.vote_mark = VoteMark(tm, txn)
                describe(txn)
                outcome.mark(txn, txid)
                result.value = func(data_root(conn), reads)
                interrupts.checkpoint()  # a Ctrl-C so far: abort rather than commit
        return result.value

    def find_outcome(self, txid, started, exc):
        """After ``exc`` broke a commit: True if it committed, False if not.

        Raises DisconnectedError when the log cannot be read in time: then
        the outcome is unknown, and the error says so.
        """
        try:
            with interrupts.deferred():
                return self._look_up(txid, started)
        except DISCONNECTS + (outcome.Unknown, POS.POSError, OSError, ValueError) as lookup:
            error = errors.DisconnectedError(
                f"{self.name}: the commit failed ({describe_failure(exc)}) and whether it "
                f"was applied is UNKNOWN: the transaction log could not be read afterwards "
                f"({describe_failure(lookup)}). Look at db.history() once the server "
                f"answers before repeating the change")
            error.applied = None
            raise error from None

    def _look_up(self, txid, started):
        """outcome.committed, asked again while the server may be restarting.

        A server killed again during the lookup breaks it at once; the client
        reconnects by itself, so the lookup is retried until ``wait_timeout``
        (at least 1 s) has passed (each call itself waits for the connection).
        """
        give_up = time.monotonic() + max(1.0, self.options.wait_timeout)
        for number in itertools.count(1):
            try:
                return outcome.committed(self.db, txid, started)
            except DISCONNECTS:
                if time.monotonic() >= give_up or number >= LOOKUP_TRIES:
                    raise
                back_off(number + 4, give_up)  # 16 ms, 32 ms, ... (capped at 0.5 s)

    def _drop_connection(self):
        """Forget this thread's primary connection after a failed commit.

        A commit that broke half way (disconnect, full disk) can leave new
        objects with oids in the connection's cache; a fresh connection
        cannot trip over them ("A different object already has the same oid").
        """
        pair = getattr(self._local, "primary", None)
        if pair is None:
            return
        self._local.primary = None
        with self._lock:
            if pair in self._all:
                self._all.remove(pair)
        tm, conn = pair
        try:
            tm.abort()
            conn.close()
        except Exception:  # a broken connection may refuse; it is dropped either way
            pass

    def check_server(self, storage):
        """Refuse to read a ZEO client cache that is newer than its server."""
        if server_behind_cache(storage):
            raise errors.DisconnectedError(f"{self.name}: {SERVER_BEHIND_MESSAGE}")

    def close(self):
        if self.closed:
            return
        with self._lock:
            pairs, self._all = self._all, []
        for tm, conn in pairs:
            try:
                tm.abort()
                conn.close()
            except Exception:  # another thread's connection may be mid-use
                pass
        self.closed = True
        self.opened.close()
        if self.read_opened:
            self.read_opened.close()
        interrupts.release()


def back_off(number, deadline=None, base=0.002, cap=0.5):
    """Sleep before retry ``number`` (1, 2, ...): full jitter, doubling, capped.

    "Full jitter" (a uniform sleep between 0 and the doubled step) spreads
    clients that collided, so none of them keeps losing to the same rival.
    Never sleeps past ``deadline``.
    """
    delay = random.uniform(0, min(cap, base * 2 ** min(number - 1, 30)))
    if deadline is not None:
        delay = max(0.0, min(delay, deadline - time.monotonic()))
    time.sleep(delay)


def _forget_prefetched_oids_on_reconnect(storage):
    """Drop object ids a ZEO client fetched from a server that has since restarted.

    ClientStorage asks the server for 100 new oids at a time and keeps the
    rest; a restarted server hands the unused ones out again (its counter is
    the largest *stored* oid), so two objects could get one oid.  ZEO does not
    forget them on reconnect, so zpydb does (``notify_connected`` runs on
    every (re)connection).
    """
    if not isinstance(storage, ClientStorage) or not hasattr(storage, "_oids"):
        return
    connected = storage.notify_connected

    def notify_connected(conn, info):
        del storage._oids[:]
        return connected(conn, info)

    storage.notify_connected = notify_connected


def check_format(root, name):
    """Refuse a database whose stored format is newer than this code (FormatError)."""
    found = root.get(FORMAT_KEY, 0)
    if type(found) is not int or not 0 <= found <= FORMAT_VERSION:
        raise errors.FormatError(name, found, FORMAT_VERSION)


def snapshot_before(conn):
    """The ``before`` transaction id of the snapshot ``conn``'s transaction reads, or None.

    ZODB's MVCC adapter (FileStorage, ZEO, MappingStorage...) reads every
    object with ``loadBefore(oid, _start)``, ``_start`` being the last
    committed transaction id + 1 when the transaction began; a historical
    connection opened with ``before=_start`` reads exactly the same state.
    It is a private attribute of ``ZODB.mvccadapter.MVCCAdapterInstance``
    (ZODB has no public call for it); a storage without it (RelStorage, which
    keeps its snapshot elsewhere) gets None: its iterations read in one batch.
    """
    start = getattr(getattr(conn, "_storage", None), "_start", None)
    return start if isinstance(start, bytes) and len(start) == 8 else None


def data_root(conn):
    """The OOBTree that holds db's keys (``conn.get(z64)``: the root, without
    the ``RootConvenience`` wrapper ``conn.root()`` builds on every call)."""
    root = conn.get(z64)
    try:
        return root[DATA_KEY]
    except KeyError:  # read-only storage that was never initialised
        return OOBTree()
