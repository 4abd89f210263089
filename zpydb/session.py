"""Connections and transactions: how one statement becomes one ZODB transaction.

A :class:`Session` owns an open ``ZODB.DB`` (and optionally a second one for a
read replica).  Each thread gets its own ``Connection`` with its own
``TransactionManager`` (ZODB connections are not thread-safe; per-thread
connections keep their object caches warm between statements).

* :meth:`Session.read` begins a transaction (which, with ZEO ``server_sync``,
  asks the server for invalidations first, so the read sees every write that
  was acknowledged before it), runs the read, and aborts: reads never write.
* :meth:`Session.write` runs the change through ``TransactionManager.run``,
  which retries ZODB's transient conflicts a bounded number of times, and
  commits durably before returning.  The note reads like the statement; the
  extension ``zpydb`` marks the record for the undo/redo walk (see undo.py).
"""

import functools
import getpass
import random
import threading
import time
from contextlib import contextmanager

import transaction
import ZODB.POSException as POS
from BTrees.OOBTree import OOBTree
from ZEO.Exceptions import ClientDisconnected

from . import errors
from .storage import SERVER_BEHIND_MESSAGE, OpenDatabase, server_behind_cache

DATA_KEY = "zpydb"  # the OOBTree under ZODB's root PersistentMapping that holds db's keys
NOTE_LIMIT = 300


@functools.lru_cache(maxsize=None)
def os_user():
    """The OS user recorded with every transaction (looked up once: pwd is slow)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


class _ZpydbTransactionManager(transaction.TransactionManager):
    """Retries conflicts, but not disconnects.

    ``ClientDisconnected`` is a TransientError, so ``run()`` would retry it; but
    ZEO has already waited ``wait_timeout`` for the server, and retrying would
    multiply the user's configured bound.  zpydb raises DisconnectedError instead.
    """

    def _retryable(self, error_type, error):
        if issubclass(error_type, ClientDisconnected):
            return False
        return super()._retryable(error_type, error)


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
        self._ensure_data_root()

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
            pair = (tm, opened.db.open(transaction_manager=tm))
            setattr(self._local, attr, pair)
            with self._lock:
                self._all.append(pair)
        return pair

    def open_private(self):
        """A fresh (tm, connection) for a transaction block, closed by the caller."""
        self._check_open()
        tm = _ZpydbTransactionManager()
        return tm, self.db.open(transaction_manager=tm)

    def _check_open(self):
        if self.closed:
            raise errors.Error(f"the database {self.name} is closed")

    def _ensure_data_root(self):
        """Create the OOBTree that holds db's keys, once, in its own transaction."""
        tm, conn = self.connection()
        with translate_errors(self.name):
            tm.begin()
            root = conn.root()
            if DATA_KEY in root or self.options.read_only:
                tm.abort()
                return
            root[DATA_KEY] = OOBTree()
            txn = tm.get()
            txn.note("zpydb: create the data root")
            txn.setExtendedInfo(DATA_KEY, "init")
            try:
                tm.commit()
            except POS.ReadOnlyError:
                tm.abort()

    # -- statements --------------------------------------------------------
    def read(self, func):
        """Run ``func(data_root)`` in a fresh read transaction; never commits."""
        tm, conn = self.connection(replica=True)
        storage = conn.db().storage
        self.check_server(storage)
        try:  # not translate_errors(): this is the hot path of every read
            tm.begin()
            try:
                return func(data_root(conn), conn)
            finally:
                tm.abort()
        except TRANSLATED as exc:
            raise translate(exc, self.name, storage) from None

    def write(self, func, note):
        """Run ``func(data_root, conn)`` as one durable transaction, retrying conflicts.

        ``TransactionManager.attempts()`` begins a fresh transaction per attempt
        and retries transient errors (ConflictError); a single statement is
        safe to re-run.  Attempts are spaced by a short jittered back-off so
        clients hammering one key take turns instead of colliding again.
        """
        tm, conn = self.connection()
        with translate_errors(self.name, self.db.storage):
            for number, attempt in enumerate(tm.attempts(self.options.retries)):
                if number:
                    back_off(number)
                with attempt:
                    describe_transaction(tm.get(), note)
                    result = func(data_root(conn), conn)
        return result

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


def back_off(number, base=0.002, cap=0.25):
    """Sleep before retry ``number`` (1, 2, ...): doubling, capped, jittered."""
    time.sleep(min(cap, base * 2 ** (number - 1)) * (0.5 + random.random()))


def data_root(conn):
    root = conn.root()
    try:
        return root[DATA_KEY]
    except KeyError:  # read-only storage that was never initialised
        return OOBTree()


def describe_transaction(txn, note, kind="write", **extension):
    """Note, user and the ``zpydb`` extension that undo.py reads back."""
    if len(note) > NOTE_LIMIT:
        note = note[:NOTE_LIMIT - 3] + "..."
    txn.note(note)
    txn.setUser(os_user())
    txn.setExtendedInfo(DATA_KEY, kind)
    for key, value in extension.items():
        txn.setExtendedInfo(key, value)


#: The ZODB/ZEO exceptions :func:`translate` turns into zpydb errors.
TRANSLATED = (ClientDisconnected, POS.ReadOnlyError, POS.ConflictError, POS.UndoError,
              POS.Unsupported)


@contextmanager
def translate_errors(name, storage=None):
    """ZODB/ZEO exceptions -> zpydb errors that say what happened in plain words."""
    try:
        yield
    except TRANSLATED as exc:
        raise translate(exc, name, storage) from (exc if isinstance(exc, POS.ConflictError)
                                                  else None)


def translate(exc, name, storage=None):
    """The zpydb error for one of the TRANSLATED exceptions."""
    if isinstance(exc, ClientDisconnected):
        if server_behind_cache(storage):
            return errors.DisconnectedError(f"{name}: {SERVER_BEHIND_MESSAGE}")
        return errors.DisconnectedError(
            f"the server of {name} did not answer in time ({exc}); nothing was applied; "
            f"the client reconnects by itself when the server is back")
    if isinstance(exc, POS.ReadOnlyError):
        return errors.ReadOnlyError(
            f"{name} is read-only (a read-only server or replica); send writes to the "
            f"primary server")
    if isinstance(exc, POS.ConflictError):
        return errors.ConflictError(
            f"another client changed the same data at the same time and the retries ran "
            f"out; nothing was applied ({_conflict_detail(exc)})")
    if isinstance(exc, POS.UndoError):
        return errors.UndoError(f"cannot undo: {exc}")
    return errors.Error(
        f"{name} cannot do this: {exc} (zpydb.File needs a storage with blobs: a file, "
        f"ZEO or RelStorage database; memory:// has none)")


def _conflict_detail(exc):
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__
