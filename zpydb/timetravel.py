"""Time travel: the database as it was (``db.at(when)``) and what changed (``diff``).

ZODB keeps every revision of every record until a pack, and its MVCC reads
any past state: a *historical connection* (``DB.open(before=tid)``) loads each
record with ``loadBefore``, as it was before transaction ``tid``.  zpydb adds
nothing to the stored data for this; it only

* turns a ``when`` into such a ``before`` tid (:func:`before_of`): a transaction
  id from ``db.history()`` (the state right after it), a history entry, a
  ``datetime`` (naive: local time) or a POSIX timestamp (every transaction
  committed up to the end of that microsecond);
* gives the historical connection to the path machinery as an executor
  (:class:`Past`), so every read of a :class:`~zpydb.paths.Path` works on the
  past unchanged (``value()``, operators, ``len``, iteration in batches,
  export), while every write raises PastIsReadOnlyError naming the path;
* refuses, with HistoryNotKeptError saying what is kept, a state the storage
  no longer has (before the first transaction, or dropped by a pack:
  :func:`kept_from`).

A snapshot holds ONE historical connection for its life (its object cache
stays warm: the past never changes, so nothing is ever invalidated) behind a
lock, and releases it when closed (``with db.at(t) as old:``), when it is
garbage collected, or with the database.  Released means released: ZODB's
historical pool would otherwise keep each closed one (with RelStorage, its
PostgreSQL session) for ``historical_timeout`` (300 s) per distinct ``before``.

``diff(a, b)`` reads the value at a path in both states and compares them as
JSON (diff.py): a JSON Patch (RFC 6902) that turns ``a``'s tree into ``b``'s.
"""

import contextlib
import datetime
import math
import re
import threading
import weakref

import transaction
from ZODB.interfaces import IMVCCStorage
from ZODB.POSException import POSKeyError
from ZODB.TimeStamp import TimeStamp
from ZODB.utils import p64, u64, z64

from . import errors, interrupts, nodes, ops
from .diff import json_patch
from .paths import Path
from .session import data_root, snapshot_before
from .translate import translate_errors
from .undo import HEX_ID

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MICROSECOND = datetime.timedelta(microseconds=1)
_LAST = 2 ** 64 - 1  # the largest transaction id
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_POLL = threading.Lock()  # RelStorage instances serve one thread at a time
WHEN_FORMS = ("a datetime (naive: local time), a POSIX timestamp, an id from db.history() "
              "(16 hex digits) or a history entry")


# -- when -> the `before` transaction id --------------------------------------------------

def before_of(when, what="at"):
    """``when`` -> (``before`` tid, how to show it): the state after every transaction
    up to ``when`` (an id: up to and including that transaction)."""
    if isinstance(when, dict) and "id" in when:
        when = when["id"]
    if isinstance(when, str) and HEX_ID.fullmatch(when.lower()):
        tid = bytes.fromhex(when.lower())
        return p64(min(u64(tid) + 1, _LAST)), repr(when.lower())
    if isinstance(when, datetime.datetime):
        try:
            stamp = when if when.tzinfo else when.astimezone()  # naive: local time
            micros = (stamp - _EPOCH) // _MICROSECOND
        except (ValueError, OverflowError, OSError):
            raise _bad_when(when, what, "out of the range of transaction times") from None
        return _tid_at(micros, when, what), str(when)
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        if not math.isfinite(when):
            raise _bad_when(when, what)
        return _tid_at(math.floor(when * 1_000_000), when, what), repr(when)
    raise _bad_when(when, what)


def _tid_at(micros, when, what):
    """The tid just after the end of microsecond ``micros`` since the epoch (UTC)."""
    micros += 1
    seconds, fraction = divmod(micros, 1_000_000)
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).timetuple()
        stamp = TimeStamp(*moment[:5], moment[5] + fraction / 1_000_000)
    except (ValueError, OverflowError, OSError):
        stamp = None
    if stamp is None or abs(stamp.timeTime() - seconds) > 60:  # TimeStamp wraps past ~9900
        if seconds > 0 and _in_future(seconds):
            return p64(_LAST)  # after every transaction: the newest state
        raise _bad_when(when, what, "out of the range of transaction times")
    return stamp.raw()


def _in_future(seconds):
    return seconds > datetime.datetime.now(datetime.timezone.utc).timestamp()


def _bad_when(when, what, why=None):
    return errors.BadArgumentError(
        "db", f"{what}(when) takes {WHEN_FORMS}; {nodes.short_repr(when, 60)} is "
              f"{why or 'none of these'}")


def parse_when(text):
    """A ``when`` typed on the command line: an id, a number (POSIX time) or an ISO
    date/time (``2024-05-01``, ``2024-05-01T12:00:00``, naive: local time).

    Returns the value :func:`before_of` takes; ValueError if it is none of them.
    """
    text = text.strip()
    if HEX_ID.fullmatch(text.lower()):
        return text.lower()
    if _NUMBER.fullmatch(text):
        return float(text)
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (an id from `zpydb log`, a POSIX timestamp "
                         f"or an ISO date/time such as 2024-05-01T12:00:00)") from None


def time_of(tid):
    """The local ``datetime`` of transaction id ``tid`` (as ``db.history()`` shows it)."""
    return datetime.datetime.fromtimestamp(TimeStamp(tid).timeTime())


def latest_before(session):
    """The ``before`` tid of the newest committed state (fresh: with ZEO ``server_sync``
    the begin asks the server, so every acknowledged write is in it).

    A ``before`` past this would not be a fixed state: later commits would land
    in it, behind the snapshot's cache.
    """
    tm, conn = session.connection()
    with translate_errors(session.name), interrupts.deferred():
        tm.begin()
        try:
            conn.root()
            before = snapshot_before(conn)
            if before is None:  # RelStorage: its instance's last polled transaction
                before = p64(u64(conn._storage.lastTransaction()) + 1)
        finally:
            tm.abort()
        storage = session.db.storage
        if IMVCCStorage.providedBy(storage):
            # RelStorage's shared instance (DB.lastTransaction, and the check in
            # DB.open(before=...) against "the future") lags until it polls.
            with _POLL:
                storage.poll_invalidations()
        return min(before, p64(u64(session.db.lastTransaction()) + 1))


def resolve(session, when, what="at"):
    """``when`` -> (``before`` tid, label), never past the newest committed state."""
    before, shown = before_of(when, what)
    return min(before, latest_before(session)), shown


# -- historical connections ---------------------------------------------------------------

def open_past(session, before):
    """A historical connection of the primary at ``before`` (release it with :func:`release`)."""
    session._check_open()
    return session.db.open(transaction_manager=transaction.TransactionManager(), before=before)


def release(conn):
    """Close a historical connection AND free what it holds.

    ``Connection.close()`` would put it in ZODB's historical pool, one pool per
    ``before``, kept for ``historical_timeout``; with RelStorage each holds a
    PostgreSQL session, so a path history walking through many states would
    pile them up.  ``_release_resources`` is how ZODB's own pool discards a
    connection (DB.py, ``ConnectionPool._reduce_size``): storage released,
    cache dropped, closed without going back to the pool; it is then taken
    out of the pool's weak set of live connections, as the pool does.
    """
    db = conn.db()
    try:
        conn._release_resources()
    except Exception:  # the database was closed meanwhile: nothing left to free
        pass
    with db._lock:  # what DB.open holds while it touches the pools
        pool = db.historical_pool.pools.get(conn.before)
        if pool is not None:  # else it counts as open until garbage collected
            pool.all.discard(conn)


def check_kept(session, before, shown):
    """HistoryNotKeptError unless the state before tid ``before`` is one the storage keeps."""
    boundary = kept_from(session)
    if boundary is not None and before < boundary:
        raise not_kept(session, shown)


def not_kept(session, shown):
    """HistoryNotKeptError for a state asked as ``shown``, saying what is kept."""
    boundary = kept_from(session)
    if boundary is None:
        return errors.HistoryNotKeptError(
            f"{session.name}: the state as at {shown} is not kept (packed away, or before "
            f"the database's first transaction)", when=shown)
    oldest = p64(u64(boundary) - 1)
    return errors.HistoryNotKeptError(
        f"{session.name}: the state as at {shown} is not kept (packed away, or before the "
        f"database's first transaction); the oldest state kept is the one after transaction "
        f"{oldest.hex()} of {time_of(oldest):%Y-%m-%d %H:%M:%S} (db.at({oldest.hex()!r}))",
        when=shown, oldest=time_of(oldest), oldest_id=oldest.hex())


_kept = weakref.WeakKeyDictionary()  # session -> the `before` of the oldest state kept


def kept_from(session, refresh=False):
    """The smallest ``before`` whose state the storage keeps whole, or None if unknown.

    Every backend here lists transactions oldest first (``storage.iterator()``)
    and marks those a pack has thinned out with status ``'p'``, a prefix of the
    list: states from just after the newest of those on are kept whole (that
    is the state at the pack), older ones are not (records are gone; a ZEO
    client may still have some in its cache, which is why this is checked
    rather than left to a failing load).  Unpacked, the oldest state is the
    one after the first transaction.  Looked up once per session (a pack
    through this session looks again; one made by another process is noticed
    when a read needs a record it dropped).
    """
    if not refresh and session in _kept:
        return _kept[session]
    boundary = None
    with translate_errors(session.name), interrupts.deferred():
        try:
            transactions = session.db.storage.iterator(None, _prefix_end(session))
        except Exception:  # a storage that cannot list its transactions
            transactions = None
        if transactions is not None:
            try:
                for record in transactions:
                    if record.status != "p":  # the first transaction a pack left whole
                        boundary = boundary or p64(u64(record.tid) + 1)
                        break
                    boundary = p64(u64(record.tid) + 1)
            finally:
                close = getattr(transactions, "close", None)
                if close is not None:
                    close()
    _kept[session] = boundary
    return boundary


def _prefix_end(session):
    """Where the packed prefix must end, to bound RelStorage's listing (None: no bound).

    FileStorage and ZEO list transactions lazily; RelStorage fetches the whole
    range in one query, every transaction of the database.  ZODB's root is
    written by the first transaction, and RelStorage's per-record history
    leaves out packed transactions: the oldest revision it lists is at or after
    the first unpacked transaction, so the prefix ends there (an unpacked
    database: the first transaction, one row).
    """
    storage = session.db.storage
    if not IMVCCStorage.providedBy(storage):
        return None
    try:
        revisions = storage.history(z64, size=1000)
    except Exception:
        return None
    return min((r["tid"] for r in revisions if "tid" in r), default=None)


def forget_kept(session):
    """After a pack: what is kept is looked up again."""
    _kept.pop(session, None)


def _check_loaded(session, conn, shown):
    """Load the root and data root of historical ``conn``: HistoryNotKeptError if gone."""
    try:
        root = conn.root()
        root._p_activate()
        data = root.get("zpydb")
        if data is not None:
            data._p_activate()
    except POSKeyError:
        kept_from(session, refresh=True)
        raise not_kept(session, shown) from None


# -- the executor of db.at(when) --------------------------------------------------------

class Past:
    """Reads of one past state, on one historical connection; never a write.

    The executor protocol of transactions.py (``read``, ``write``, ``iterate``,
    ``database``) on a historical connection: ``read(op)`` runs ``op`` on it
    under a lock (a connection serves one thread at a time), ``write`` and
    ``database`` refuse.  Path errors gain the moment they are about.
    """

    def __init__(self, session, before, shown):
        self.session = session
        self.before = before
        self.shown = shown
        self.label = f"db.at({shown})"
        self._lock = threading.RLock()
        self._held = [None]  # the connection; a list so the finalizer can release it
        self._finalizer = weakref.finalize(self, _release_held, self._held)
        self._finalizer.atexit = False
        with self._lock, translate_errors(session.name), interrupts.deferred():
            check_kept(session, before, shown)
            conn = self._held[0] = open_past(session, before)
            _check_loaded(session, conn, shown)

    @property
    def closed(self):
        return self._held[0] is None

    def close(self):
        with self._lock:
            self._finalizer()

    def _run(self, func):
        with self._lock:
            conn = self._held[0]
            if conn is None:
                raise errors.Error(f"{self.label} is closed: read it inside its with-block, "
                                   f"or call db.at(...) again")
            self.session._check_open()
            try:
                with translate_errors(self.session.name), interrupts.deferred():
                    return func(data_root(conn))
            except POSKeyError:  # packed by another process since kept_from looked
                kept_from(self.session, refresh=True)
                raise not_kept(self.session, self.shown) from None
            except errors.PathError as exc:
                raise _at_time(exc, self.shown) from None

    def read(self, op):
        return self._run(lambda root: op(root, ops.UNTRACKED))

    def iterate(self, op):
        items, position = self._run(lambda root: op(root, ops.UNTRACKED, None, ops.BATCH_SIZE))
        return self._batches(items, position, op)

    def _batches(self, items, position, op):
        yield from items
        while position is not None:
            items = None
            items, position = self._run(
                lambda root, position=position: op(root, ops.UNTRACKED, position, ops.BATCH_SIZE))
            yield from items

    @contextlib.contextmanager
    def snapshot(self):
        """``(data root, connection)`` of this past state on a connection of its own,
        released at the end: for a walk of a whole value (export.py), which turns
        what it has written back into ghosts as it goes."""
        if self.closed:
            raise errors.Error(f"{self.label} is closed")
        with translate_errors(self.session.name):
            conn = open_past(self.session, self.before)
            try:
                try:
                    yield data_root(conn), conn
                except POSKeyError:
                    kept_from(self.session, refresh=True)
                    raise not_kept(self.session, self.shown) from None
                except errors.PathError as exc:
                    raise _at_time(exc, self.shown) from None
            finally:
                release(conn)

    def write(self, op, note, wrote=()):
        raise refused("db", self.label, note)

    def database(self, call, refusal):
        raise refused("db", self.label, "a database-wide change")


def _release_held(held):
    conn, held[0] = held[0], None
    if conn is not None:
        release(conn)


def _at_time(exc, shown):
    """The same path error, saying which moment it is about."""
    try:
        return type(exc)(exc.path, f"{exc.message} (as at {shown})")
    except Exception:  # pragma: no cover - every PathError takes (path, message)
        return exc


def refused(path, label, what):
    return errors.PastIsReadOnlyError(
        path, f"{what}: {label} is a read-only view of the past; write through db "
              f"(nothing was written)")


class PastPath(Path):
    """A path into ``db.at(when)``: reads as any Path, every write refused.

    Writes are refused where a Path funnels them (``__setitem__``,
    ``__delitem__``, ``_writer`` for every method, ``_augment`` for every
    ``op=``), before any argument is looked at, so a generator given to
    ``extend`` is not consumed and nothing is read either.
    """

    __slots__ = ()

    def __getitem__(self, key):
        step = super().__getitem__(key)._steps[-1]
        return PastPath(self._executor, self._steps + (step,))

    def _refuse(self, expr, what):
        raise refused(expr, self._executor.label, what)

    def __setitem__(self, key, value):
        self._refuse(ops.format_path(self._steps + (key,)), "assignment")

    def __delitem__(self, key):
        self._refuse(ops.format_path(self._steps + (key,)), "del")

    def _writer(self, name, *args, **kwargs):
        self._refuse(self._expr(), f"{name}()")

    def extend(self, values):
        self._writer("extend")

    def update(self, other=(), **kwargs):
        self._writer("update")

    def _augment(self, symbol, func, other):
        self._refuse(self._expr(), f"{symbol}=")


class Snapshot(PastPath):
    """``db.at(when)``: the root of the database as it was, read-only.

    A context manager: ``with db.at(t) as old:`` releases its connection at the
    end (so does :meth:`close`, and garbage collection).  ``when`` and ``before``
    say which state it is.
    """

    __slots__ = ()

    @property
    def when(self):
        """How the state was asked for (an id, a time), as text."""
        return self._executor.shown

    @property
    def before(self):
        """The state before this transaction id (hex): ZODB's ``before``."""
        return self._executor.before.hex()

    @property
    def closed(self):
        return self._executor.closed

    def close(self):
        self._executor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        try:
            return f"<zpydb.Database {self._executor.session.name} as at {self.when}>"
        except Exception:
            return "<zpydb.Database (past)>"

    def history(self, n=10):
        """``db.history(n)`` as it was then: the last ``n`` changes up to this state."""
        from .undo import history_before
        return history_before(self._executor.session, n, self._executor.before)

    # every database-wide change is refused: the past does not change
    def undo(self, id=None):
        self._refuse("db", "undo()")

    def redo(self):
        self._refuse("db", "redo()")

    def pack(self, days=0):
        self._refuse("db", "pack()")

    def transaction(self):
        self._refuse("db", "transaction()")

    def atomic(self, func=None, *, tries=None):
        self._refuse("db", "atomic")

    def lock(self):
        self._refuse("db", "lock()")

    def unlock(self):
        self._refuse("db", "unlock()")


def at(session, when):
    """``db.at(when)``: a :class:`Snapshot` of the state as at ``when``."""
    before, shown = resolve(session, when)
    return Snapshot(Past(session, before, shown))


# -- diff ------------------------------------------------------------------------------

def read_at(session, before, shown, steps):
    """The plain value at ``steps`` in the state before ``before`` (one historical read)."""
    with translate_errors(session.name), interrupts.deferred():
        check_kept(session, before, shown)
        conn = open_past(session, before)
        try:
            _check_loaded(session, conn, shown)
            try:
                return ops.read(data_root(conn), steps)
            except POSKeyError:
                kept_from(session, refresh=True)
                raise not_kept(session, shown) from None
            except errors.PathError as exc:
                raise _at_time(exc, shown) from None
        finally:
            release(conn)


def diff(executor, steps, a, b=None):
    """The JSON Patch from the value at ``steps`` as at ``a`` to the value as at ``b``.

    ``b`` None: the executor's own state (now for ``db``, the snapshot for
    ``db.at(t)``).  A path missing at either moment is a path error that says
    when; the pointers are relative to the path (``db['cfg'].diff`` of a
    changed port is ``/port``).
    """
    session = executor.session
    old_before, old_shown = resolve(session, a, "diff")
    if b is None and isinstance(executor, Past):
        new_before, new_shown = executor.before, executor.shown
    elif b is None:
        new_before, new_shown = latest_before(session), "now"
    else:
        new_before, new_shown = resolve(session, b, "diff")
    old = read_at(session, old_before, old_shown, steps)
    new = read_at(session, new_before, new_shown, steps)
    return json_patch(old, new)
