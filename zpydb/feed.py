"""The change feed: ``db['cfg'].watch()`` yields every committed change under a path.

    for change in db['cfg'].watch():        # blocks until the next change
        change['id'], change['value'], change['patch']

Each change is a dict: ``id`` (the transaction id, ``tid.hex()`` of ZODB's 8-byte
tid), ``time``, ``user``, ``note`` and ``kind`` (as ``db.history()`` shows
them), ``value`` (the path's new value, a plain copy; None when the
transaction removed it, and then ``deleted`` is True) and ``patch`` (RFC 6902
operations, relative to the path, that turn the previous value into this one:
zpydb/diff.py).

**What is delivered.**  A transaction is delivered when the path's value after
it differs from the value before it (a missing path counts as a value of its
own).  The watcher keeps the previous value and the set of records (oids) it
was read from (``_read_at`` records every ``load`` of the read).  A
transaction that changed none of those records cannot have changed the value
and is passed over without reading anything; one that did is read at its own
snapshot (``DB.open(before=tid + 1)``) and compared.  So every transaction is
judged on its own, in commit order, and a value that changes and changes back
yields two changes.

**Where transaction ids come from, without polling.**  ZODB fans every
invalidation out to the MVCC instances of its connections
(``MVCCAdapter.invalidate``, called by ClientStorage's
``invalidateTransaction`` for each transaction the ZEO server pushes, and
``_invalidate_finish`` for a commit made in this process, undo included).  A
watcher adds one more instance to that set (:class:`_Pushed`): it is told
``(tid, oids)`` of every transaction and sleeps on a condition in between, so an
idle watcher sends nothing to the server.  ZEO delivers the invalidations of
every transaction, in order, while connected; this is what ZODB's own caches
rely on, and a watcher relies on nothing more.  When the connection drops,
ClientStorage calls ``invalidateCache`` after reconnecting (and invalidations
seen while not connected may be merged): the watcher then reads the
transaction log itself (``storage.iterator``) from the last transaction it
judged up to the newest one, so a server restart or a dropped connection
loses nothing.  RelStorage (PostgreSQL) pushes nothing: one thread per
database (:class:`_PollHub`) polls a storage instance of its own every
``poll_interval`` seconds (a connect option, 0.1 s by default) for the oids
changed since the last poll, reads the new transactions from the log once when
any watcher's value was read from one of them, and tells every watcher
(:class:`_Polled`).

**Sharing.**  Watchers of one path in one process read each change once
(:class:`_Memo`), and a change's log entry is looked up once.  The historical
connection of each read is closed for good afterwards (:func:`_discard`):
ZODB would pool it for five minutes under a key no later read uses.

**Resuming.**  ``since=id`` starts after that transaction: the value at that
point is read, and the log from there on is judged as above.  Because ids are
delivered in commit order and each one exactly once, a consumer that records
the last id it handled and passes it as ``since`` after a crash sees every
change exactly once.

**Ctrl-C and closing.**  Waiting for a change is an ordinary interruptible
wait; judging a transaction runs inside ``interrupts.deferred()`` (a Ctrl-C
lands after it, as for every statement: a FileStorage read cut half way can
leave its file pool stuck).  An interrupted ``next()`` leaves the watcher
consistent: calling it again goes on.  ``close()`` (or the end of a ``with``
block, a timeout, or the watcher being garbage collected) removes its instance
from ZODB's set.
"""

import collections
import datetime
import math
import threading
import time
import weakref

import transaction
from persistent.TimeStamp import TimeStamp
from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ServerException
from ZODB.FileStorage.format import CorruptedError
from ZODB.POSException import POSError, POSKeyError, ReadConflictError
from ZODB.utils import p64, u64, z64

from . import errors, export, interrupts, nodes, ops
from .diff import json_patch
from .export import encode
from .files import FileHandle
from .session import DATA_KEY, data_root
from .translate import DISCONNECTS, describe_failure

#: Exact per-transaction notices kept for a watcher that is not reading them;
#: past this the watcher forgets them and reads the log instead (bounded memory).
MAX_NOTICES = 10_000
#: The same bound on the oids those notices (and a span's union) hold: a notice
#: is as big as its transaction, and one bulk write can change 100,000 records.
MAX_NOTICE_OIDS = 200_000
#: Changes a watcher makes ready before handing them out (see Watch._judge).
MAX_QUEUED = 100
#: How long a watcher keeps retrying a storage that answers with an error that
#: is not a disconnect (a FileStorage log read while another commit is being
#: written can fail once) before it raises.
RETRY_WINDOW = 30.0
#: Longest sleep between two tries while the server is unreachable or a commit
#: is being finished.
MAX_BACKOFF = 0.5
#: A watcher waiting for a change looks at whether its database was closed this
#: often (a local flag, no request).
CLOSED_CHECK = 1.0

_ABSENT = object()  # the value of a path that does not exist


def watch(executor, steps, since=None, timeout=None):
    """``Path.watch``: a :class:`Watch` of ``steps`` (see the module docstring)."""
    from .transactions import Autocommit  # transactions imports paths, which imports us lazily
    if not isinstance(executor, Autocommit):
        raise errors.BadArgumentError(
            ops.format_path(steps),
            "watch() works on the database, not inside a transaction block: a watcher "
            "sees committed changes only; use db[...].watch()")
    return Watch(executor.session, tuple(steps), since=since, timeout=timeout)


def parse_id(text, expr="db"):
    """A change id (16 hex digits, ``tid.hex()``) -> the 8-byte tid; BadArgumentError else."""
    if isinstance(text, bytes) and len(text) == 8:
        return text
    if isinstance(text, str) and len(text) == 16 and text.isascii() and text.isalnum():
        try:  # isalnum: bytes.fromhex skips spaces, and "01..ef  " is no 8-byte tid
            tid = bytes.fromhex(text)
        except ValueError:
            tid = None
        if tid is not None and tid != z64:
            return tid
    raise errors.BadArgumentError(
        expr, f"since must be a change id: the 16 hex digits of a change's 'id', not "
              f"{nodes.short_repr(text, 60)}")


def _check_timeout(timeout, expr):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not timeout >= 0 or timeout == float("inf"):
        raise errors.BadArgumentError(
            expr, f"timeout must be a number of seconds >= 0 or None, not "
                  f"{nodes.short_repr(timeout, 40)}")
    return float(timeout)


def _next_tid(tid):
    return p64(u64(tid) + 1)


class Watch:
    """An iterator over the changes under one path, from a point in the log on.

    ``next()`` blocks until the next change (or ``timeout`` idle seconds, then
    the iteration ends).  ``close()`` or ``with`` ends it; see the module
    docstring for what is delivered and how.
    """

    def __init__(self, session, steps, since=None, timeout=None):
        self._session = session
        self._steps = steps
        self._expr = ops.format_path(steps)
        self._timeout = _check_timeout(timeout, self._expr)
        start = None if since is None else parse_id(since, self._expr)
        session._check_open()
        self._db = session.db
        self._storage = self._db.storage
        if not hasattr(self._storage, "iterator") or \
                getattr(self._storage, "keep_history", True) is False:
            raise errors.Error(
                f"{session.name} keeps no transaction history to watch (demo storages and "
                f"history-free RelStorage have none); use a file, ZEO, memory:// or "
                f"history-preserving PostgreSQL database")
        self._tid = z64
        self._deps = frozenset()  # until the starting value is read (a poller may ask)
        self._memo = _memo_of(self._db)
        self._events = collections.deque()
        self._closed = False
        self._start_point = None
        self._failures = _Failures()
        self._source = self._make_source()
        self._finalizer = weakref.finalize(self, self._source.close)
        try:
            with interrupts.deferred():
                self._start(start)
        except BaseException:
            self.close()
            raise

    def _make_source(self):
        """Where this watcher hears of new transactions: ZODB's invalidations, or
        (RelStorage) its database's poller."""
        if not _is_mvcc_storage(self._db):
            return _Pushed(self._db)
        me = weakref.ref(self)  # the poller must not keep a dropped watcher alive

        def interested(oids):
            watch = me()
            return watch is not None and not watch._deps.isdisjoint(oids)

        interval = self._session.options.poll_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or \
                not 0 < interval < float("inf"):
            raise errors.BadArgumentError(
                self._expr, f"the connect option poll_interval must be a number of seconds "
                            f"> 0, not {nodes.short_repr(interval, 40)}")
        return _Polled(self._db, interval, interested)

    # -- the iterator protocol ---------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        self._start_point = None  # the starting value is not kept past the first change
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        try:
            while not self._events:
                if self._closed:
                    raise StopIteration
                work = self._source.wait(deadline, self._session)
                if work is None:  # ``timeout`` idle seconds without a change
                    self.close()
                    raise StopIteration
                with interrupts.deferred():
                    pause = self._judge(work)
                if pause:
                    if deadline is not None:
                        pause = min(pause, max(0.0, deadline - time.monotonic()))
                    time.sleep(pause)
        except errors.Error:
            self.close()  # the database was closed, or history is gone: nothing to go on with
            raise
        return self._events.popleft()

    def starting_point(self):
        """``(id, value)``: the id the watch starts after and the path's value there (a
        plain copy, None where nothing is), read at that same snapshot; only before the
        first ``next()``.  Showing this value and then applying every change loses
        nothing in between (``zpydb web``'s streams send it as their first event)."""
        if self._start_point is None:
            raise errors.Error(f"{self._expr}: starting_point() is only known before the "
                               f"first change is taken")
        tid, value = self._start_point
        return tid.hex(), (None if value is _ABSENT else _copy(value))

    def close(self):
        """Stop watching: later ``next()`` calls end the iteration at once."""
        self._closed = True
        self._events.clear()
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self._closed else f"after {self._tid.hex()}"
        return f"<zpydb.Watch {self._expr} {state}>"

    # -- the starting point -------------------------------------------------------
    def _start(self, since):
        """Fix the point the feed starts after, and the value there."""
        try:
            with self._storage_errors():
                if since is None:
                    since = self._source.now(self._session)
                else:
                    self._check_exists(since)
                    self._source.catch_up()  # read the log from there at the first next()
                self._tid = since
                self._value, self._deps = self._read_at(since)
                self._start_point = (since, self._value)
        except _Retry as retry:
            raise errors.DisconnectedError(
                f"{self._session.name}: cannot start watching {self._expr}: "
                f"{retry.reason}") from None

    def _check_exists(self, tid):
        """A ``since`` that names no transaction is refused: a typo must not start anywhere."""
        for info in self._transactions(tid, tid):
            if info.tid == tid:
                return
        raise errors.BadArgumentError(
            self._expr, f"since={tid.hex()!r}: no change with this id in {self._session.name} "
                        f"(a typo, another database, or history removed by a pack)")

    # -- judging transactions -------------------------------------------------------
    def _judge(self, work):
        """Judge the transactions ``work`` announces.  Returns 0, or after a storage
        failure the seconds to wait before trying again (the work is kept).

        At most MAX_QUEUED changes are made ready at a time: a watcher far behind
        (``since=`` an old id) goes on through the log as they are consumed,
        instead of holding every change in memory.
        """
        try:
            with self._storage_errors():
                done = work.span is None or self._judge_span(*work.span)
                for tid, oids in work.exact:
                    if not done:
                        break
                    if tid > self._tid:
                        interrupts.checkpoint()  # a held Ctrl-C: here, between transactions
                        self._judge_one(tid, oids)
                        done = len(self._events) < MAX_QUEUED
        except _Retry as retry:
            self._source.give_back(work)
            return self._failures.back_off(retry, self._session.name)
        except BaseException:  # Ctrl-C while waiting for the server: read the log next time
            self._source.give_back(work)
            raise
        if not done:
            self._source.give_back(work)  # the rest: from the log, once these are consumed
        self._failures.clear()
        return 0

    def _judge_span(self, target, oids):
        """Every transaction up to ``target``: skipped at once when ``oids`` (all the
        records they changed, or None: unknown) misses the value, else read from the
        log.  False when it stopped early with MAX_QUEUED changes ready."""
        if target <= self._tid:
            return True
        if oids is not None and self._deps.isdisjoint(oids):
            self._tid = target
            return True
        for info in self._transactions(_next_tid(self._tid), target):
            if info.tid > self._tid:
                interrupts.checkpoint()  # a long catch-up stops at Ctrl-C, between transactions
                self._judge_one(info.tid, _changed_oids(info), info)
                if len(self._events) >= MAX_QUEUED:
                    return self._tid >= target
        if self._tid < target:  # the log does not reach the newest id yet (being written)
            raise _Retry(f"the transaction log ends before {target.hex()}")
        return True

    def _judge_one(self, tid, oids, info=None):
        """One transaction: a change when the value after it differs from the one before."""
        if not self._deps.isdisjoint(oids):
            value, deps = self._memo.get(("read", self._expr, tid), lambda: self._read_at(tid))
            if not _same(value, self._value):
                if info is None:
                    info = self._memo.get(("info", tid), lambda: self._info(tid))
                self._events.append(_change(info, tid, self._value, value))
            self._value, self._deps = value, deps
        self._tid = tid

    def _info(self, tid):
        """The log entry of ``tid``: its user, note and extension."""
        for info in self._transactions(tid, tid):
            if info.tid == tid:
                return _Info(info)
        raise _Retry(f"transaction {tid.hex()} is not in the log yet")

    def _transactions(self, start, stop):
        """``storage.iterator(start, stop)`` (a ZEO server frees an iterator left early
        when the client's copy is collected)."""
        iterator = self._storage.iterator(start, stop)
        try:
            while True:
                try:
                    info = next(iterator)
                except StopIteration:
                    return
                except KeyError as exc:
                    raise _forgotten(exc) from None
                if stop is not None and info.tid > stop:
                    return
                yield info
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _read_at(self, tid):
        """(the value just after transaction ``tid``, the oids it was read from).

        The value is shared with the other watchers of this path in this process
        (``_memo``): it is never changed, and each change hands out its own copy.
        """
        conn = _open_before(self._db, _next_tid(tid))
        try:
            return self._read_on(conn)
        finally:
            _discard(conn)

    def _read_on(self, conn):
        conn.cacheMinimize()  # every record is loaded (and seen) again, not taken from the cache
        with _recording_loads(conn._storage) as loaded:
            try:
                node = ops.traverse(data_root(conn), self._steps)
                value = nodes.to_plain(node)
            except (errors.KeyNotFoundError, errors.BadIndexError, errors.NotAContainerError):
                value = _ABSENT
        return value, frozenset(loaded)

    def _storage_errors(self):
        return _StorageErrors(self)


class _StorageErrors:
    """Storage failures while judging -> retry later (disconnects, a log being written)
    or a zpydb error (history gone)."""

    def __init__(self, watch):
        self.watch = watch

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (errors.Error, _Retry)):
            return False
        name = self.watch._session.name
        if isinstance(exc, (POSKeyError, ReadConflictError)):
            raise errors.Error(
                f"{name}: the history {self.watch._expr} needs for watching was removed "
                f"by a pack ({describe_failure(exc)}); watch again without since") from None
        if isinstance(exc, DISCONNECTS):
            raise _Retry(describe_failure(exc), disconnected=True) from None
        if isinstance(exc, _TRANSIENT):  # a log read racing a commit, a server hiccup
            raise _Retry(describe_failure(exc)) from None
        return False


#: What a storage may raise while a commit is being written (FileStorage's log
#: iterator reads the end of the file: "Can't find last transaction in large
#: file", a truncated record), also from a ZEO server; tried again for
#: RETRY_WINDOW seconds.
_TRANSIENT = (ValueError, OSError, CorruptedError, POSError, ServerException)


def _changed_oids(info):
    """The oids a transaction from the log changed."""
    try:
        return {record.oid for record in info}
    except KeyError as exc:
        raise _forgotten(exc) from None


def _forgotten(exc):
    """A ZEO server knows its log iterators per connection: after a reconnect it
    answers an old one with KeyError.  Read the log again from where judging is."""
    if isinstance(exc, POSKeyError):
        return exc
    return _Retry(f"the server no longer knows this log iterator (reconnected?): "
                  f"{describe_failure(exc)}")


class _Retry(Exception):
    """Judging could not finish now; the work is kept and tried again."""

    def __init__(self, reason, disconnected=False):
        super().__init__(reason)
        self.reason = reason
        self.disconnected = disconnected


class _Failures:
    """Back-off between retries.  A server that is away is waited for (the client
    reconnects by itself); any other failure that lasts RETRY_WINDOW is raised."""

    def __init__(self):
        self.first = None
        self.count = 0

    def clear(self):
        self.first, self.count = None, 0

    def back_off(self, retry, name):
        now = time.monotonic()
        self.count += 1
        if retry.disconnected:
            self.first = None
        else:
            self.first = now if self.first is None else self.first
            if now - self.first > RETRY_WINDOW:
                raise errors.Error(f"{name}: watching failed for {now - self.first:.0f} s: "
                                   f"{retry.reason}")
        return min(MAX_BACKOFF, 0.001 * 2 ** min(self.count, 10))


class _recording_loads:
    """Record the oid of every record a (historical) connection loads."""

    _NONE = object()

    def __init__(self, storage):
        self.storage = storage
        self.loaded = set()
        self.saved = self._NONE

    def __enter__(self):
        self.saved = self.storage.__dict__.get("load", self._NONE)
        load = self.storage.load
        loaded = self.loaded

        def recording_load(oid, *args):
            loaded.add(oid)
            return load(oid, *args)

        self.storage.load = recording_load
        return loaded

    def __exit__(self, *exc_info):
        if self.saved is self._NONE:
            del self.storage.load
        else:
            self.storage.load = self.saved
        return False


class _Info:
    """What a change shows of its log entry (not the storage's record, which may hold
    a ZEO iterator)."""

    __slots__ = ("user", "description", "extension")

    def __init__(self, info):
        self.user = info.user
        self.description = info.description
        self.extension = dict(getattr(info, "extension", None) or {})


class _Memo:
    """Reads and log entries of the last few transactions, shared by the watchers of one
    ``ZODB.DB``: 50 watchers of one path in a process read each change once.

    The first watcher to ask for a key computes it; the others wait for its result
    (or compute it themselves if it failed).
    """

    SIZE = 16

    def __init__(self):
        self._lock = threading.Lock()
        self._done = collections.OrderedDict()
        self._running = {}

    def put(self, key, value):
        with self._lock:
            self._done[key] = value
            while len(self._done) > self.SIZE:
                self._done.popitem(last=False)

    def get(self, key, compute):
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            running = self._running.get(key)
            if running is None:
                self._running[key] = threading.Event()
        if running is not None:
            running.wait(RETRY_WINDOW)
            with self._lock:
                if key in self._done:
                    return self._done[key]
            return compute()
        try:
            result = compute()
            self.put(key, result)
            return result
        finally:
            with self._lock:
                self._running.pop(key).set()


_memos = weakref.WeakKeyDictionary()
_memos_lock = threading.Lock()


def _memo_of(db):
    with _memos_lock:
        memo = _memos.get(db)
        if memo is None:
            memo = _memos[db] = _Memo()
        return memo


def _copy(value, depth=0):
    """A copy of a plain value that shares nothing mutable with it (dicts, lists;
    tuples are rebuilt as they may hold either).  Past MAX_DEPTH levels (old data
    may nest deeper than Python recurses) nodes.py's non-recursive copy goes on."""
    if depth > nodes.MAX_DEPTH:
        return nodes._to_plain_deep(value)
    if isinstance(value, dict):
        return {key: _copy(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple([_copy(item, depth + 1) for item in value])
    return value


def _same(a, b):
    """Equal values of equal types, all the way down (1, 1.0 and True differ, so do
    0.0 and -0.0; NaN is NaN).

    Plain copies of stored dicts list their keys in sorted order, so equal
    dicts list them alike.  Not recursive: old data may nest deeper than
    Python's recursion limit.
    """
    stack = [(a, b)]
    while stack:
        a, b = stack.pop()
        if a is b:
            continue
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
        elif isinstance(a, float):  # -0.0 == 0.0, yet they differ (repr, JSON, 1 / x)
            if not ((a == b and math.copysign(1.0, a) == math.copysign(1.0, b))
                    or (a != a and b != b)):
                return False
        else:
            try:
                if not a == b:
                    return False
            except Exception:
                return False
    return True


def same_value(a, b):
    """Whether two plain values are the same as the feed judges it (``1``, ``1.0`` and
    ``True`` differ; NaN is itself): zpydb web's streams diff changes with it."""
    return _same(a, b)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _change(info, tid, old, new):
    """The change dict of transaction ``tid`` (``info``: its log entry)."""
    extension = info.extension or {}
    before = None if old is _ABSENT else old
    after = None if new is _ABSENT else new
    return {
        "id": tid.hex(),
        "time": datetime.datetime.fromtimestamp(TimeStamp(tid).timeTime()),
        "user": _text(info.user).lstrip("/ ").strip(),
        "note": _text(info.description),
        "kind": extension.get(DATA_KEY),
        "deleted": new is _ABSENT,
        "value": _copy(after),
        "patch": json_patch(_files_as_meta(before), _files_as_meta(after)),
    }


class _FileMeta:
    """A stored file as a change's patch and ``zpydb watch`` show it: its metadata.

    ``export.encode`` would inline a file's content as base64 (and refuse one
    over 1 MB); a change feed says *that* a file changed (its sha256), and the
    content stays readable through the value's file handle.
    """

    __slots__ = ("meta",)

    def __init__(self, handle):
        self.meta = {"name": handle.name, "content_type": handle.content_type,
                     "size": handle.size, "sha256": handle.sha256}


export.encoders.append((_FileMeta, lambda value, context: {"$file": dict(value.meta)}))


def _files_as_meta(value):
    """``value`` with every stored file as a :class:`_FileMeta` (the same object when it
    holds none, so a value without files is not copied)."""
    if isinstance(value, FileHandle):
        return _FileMeta(value)
    if isinstance(value, dict):
        items = [(key, _files_as_meta(item)) for key, item in value.items()]
        if all(new is old for (_, new), old in zip(items, value.values())):
            return value
        return dict(items)
    if isinstance(value, (list, tuple)):
        items = [_files_as_meta(item) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return type(value)(items)
    return value


def _open_before(db, before):
    """``DB.open(before=...)``: a read-only connection on the state before ``before``.

    On RelStorage, DB.open's own path without its "in the future" check: ZODB
    compares ``before`` with ``DB.lastTransaction()``, which RelStorage's main
    storage answers from its own last poll, and nothing polls it (connections
    poll their own instances), so a transaction the watcher's poller just saw
    would be refused.
    """
    tm = transaction.TransactionManager()
    if not _is_mvcc_storage(db):
        return db.open(transaction_manager=tm, before=before)
    with db._lock:
        conn = db.historical_pool.pop(before)
        if conn is None:
            db.historical_pool.push(db.klass(db, db._historical_cache_size, before,
                                             db._historical_cache_size_bytes), before)
            conn = db.historical_pool.pop(before)
    conn.open(tm)
    return conn


def change_json(change):
    """A change as JSON-ready data (``zpydb watch``): ``time`` in ISO 8601, ``value``
    in zpydb's JSON form (export.py; ``patch`` already is), files as their metadata."""
    return {**change, "time": change["time"].isoformat(),
            "value": encode(_files_as_meta(change["value"]))}


def _discard(conn):
    """Close a historical connection for good instead of pooling it.

    ZODB pools historical connections per ``before`` tid and keeps each for
    ``historical_timeout`` (300 s): a watcher reads every change at a new tid,
    so pooling would keep one connection (its cache, on RelStorage a database
    connection) per change for five minutes, and make every ``DB.open`` slower.
    ``_release_resources`` is what ZODB's pool itself calls on a connection it
    drops (it closes it without returning it to the pool).
    """
    try:
        conn.transaction_manager.abort()
    except Exception:  # nothing was changed; the connection goes either way
        pass
    conn._release_resources()


def _is_mvcc_storage(db):
    """RelStorage is its own MVCC layer: ZODB gives it no invalidations to listen to."""
    return db._mvcc_storage is db.storage


# -- where the news comes from ---------------------------------------------------------

class _Work:
    """Transactions to judge: ``span`` (target tid, oids or None) covers every transaction
    up to target; ``exact`` lists single transactions ``(tid, oids)`` after it, in order."""

    __slots__ = ("span", "exact")

    def __init__(self, span, exact):
        self.span = span
        self.exact = exact


class _Inbox:
    """What a watcher has been told and not yet judged, and the wait for it.

    ``_exact``: single transactions ``(tid, oids)``, in the order told.
    ``_span``: ``(tid, oids)``: every transaction after the watcher's position up
    to ``tid`` changed only ``oids`` (None: unknown, read the log).  Feeders call
    :meth:`_notice`, :meth:`_notice_span` and :meth:`_notice_unknown` from any
    thread; ``_barrier()`` is the newest tid whose transaction may be read now.
    Past MAX_NOTICES notices or MAX_NOTICE_OIDS oids held, what is held becomes a
    span of unknown oids (read from the log when judged): memory stays bounded
    however big and many the transactions nobody reads yet.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._exact = []
        self._held = 0  # oids in _exact and _span: at most MAX_NOTICE_OIDS
        self._span = None
        self._closed = False

    # told by a feeder (any thread) ---------------------------------------------------
    def _notice(self, tid, oids):
        oids = frozenset(oids)
        with self._cond:
            if len(self._exact) < MAX_NOTICES and self._held + len(oids) <= MAX_NOTICE_OIDS:
                self._exact.append((tid, oids))
                self._held += len(oids)
            else:  # too much unread: read the log instead (bounded memory)
                self._merge_span(tid, None)
            self._cond.notify_all()

    def _notice_span(self, tid, oids):
        with self._cond:
            self._merge_span(tid, oids)
            self._cond.notify_all()

    def _notice_unknown(self, tid=z64):
        with self._cond:
            self._merge_span(tid, None)
            self._cond.notify_all()

    def _merge_span(self, tid, oids):
        """Fold the span, and the single transactions it covers, into one span."""
        covered, kept = [], []
        for item in self._exact:
            (covered if oids is None or item[0] <= tid else kept).append(item)
        self._exact = kept
        newest = max([tid] + [t for t, _ in covered] + ([self._span[0]] if self._span else []))
        union = None
        if oids is not None and (self._span is None or self._span[1] is not None):
            union = frozenset(oids).union(*(o for _, o in covered),
                                          *([self._span[1]] if self._span else []))
        self._span = (newest, union)
        self._recount()
        if self._held > MAX_NOTICE_OIDS:  # too many to keep: read the log instead
            self._merge_span(newest, None)

    def _recount(self):
        self._held = sum(len(oids) for _, oids in self._exact) + len(
            self._span[1] if self._span is not None and self._span[1] is not None else ())

    # used by the watcher ----------------------------------------------------------------
    def catch_up(self):
        self._notice_unknown()

    def give_back(self, work):
        """Work that could not be judged: read it from the log next time."""
        newest = max([t for t, _ in work.exact] + ([work.span[0]] if work.span else [z64]))
        self._notice_unknown(newest)

    def wait(self, deadline, session):
        """The next work, or None once ``deadline`` passed with nothing to do (or closed)."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                session._check_open()
                if self._span is not None or self._exact:
                    work = self._take()
                    if work is not None:
                        return work
                    delay = 0.001  # a commit is being finished (see _take)
                else:
                    delay = CLOSED_CHECK
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    delay = min(delay, left)
                self._cond.wait(delay)

    def _take(self):
        """What may be judged now: transactions up to ``_barrier()``."""
        self._cond.release()
        try:
            last = self._barrier()
        finally:
            self._cond.acquire()
        span = None
        if self._span is not None:
            tid, oids = self._span
            if oids is None:
                span = (max(tid, last), None)   # read the log up to the newest
            elif tid <= last:
                span = (tid, oids)
            if span is not None:
                self._span = None
        ready = [item for item in self._exact if item[0] <= last]
        self._exact = [item for item in self._exact if item[0] > last]
        self._recount()
        if span is None and not ready:
            return None
        ready.sort(key=lambda item: item[0])
        return _Work(span, ready)

    def close(self):
        with self._cond:
            if self._closed:
                return False
            self._closed = True
            self._cond.notify_all()  # a watcher waiting in another thread ends
        return True


class _Pushed(_Inbox):
    """ZODB's invalidations (ZEO, FileStorage, MappingStorage), as one more MVCC instance.

    ``_invalidate`` and ``_invalidateCache`` are the two calls
    ``ZODB.mvccadapter.MVCCAdapter`` makes on each of its instances; they run on
    ZEO's network thread or in the committing thread, so they only record and
    wake the watcher.
    """

    def __init__(self, db):
        super().__init__()
        self._adapter = db._mvcc_storage
        self._storage = db.storage
        self._zeo = isinstance(self._storage, ClientStorage)
        with self._adapter._lock:
            self._adapter._instances.add(self)

    def _invalidate(self, tid, oids):
        if not self._zeo or self._storage.is_connected():
            self._notice(tid, oids)
        else:  # merged while reconnecting: read the log instead
            self._notice_unknown(tid)

    def _invalidateCache(self):
        self._notice_unknown()

    def _barrier(self):
        """An embedded FileStorage tells its instances *before* it marks the
        transaction committed; ``lastTransaction()`` waits for that (it takes the
        storage's lock, held until the commit is done).  ZEO's answer is local."""
        return self._storage.lastTransaction()

    def now(self, session):
        """The newest committed tid; with ZEO's fresh reads, after a round trip to the
        server, so it covers every write acknowledged before the watch started."""
        if self._zeo and session.options.fresh_reads:
            # zpydb's own ping (storage.OpenDatabase.sync: the storage is opened without
            # server_sync); a zconfig:// storage with server_sync pings in its sync()
            ping = session.opened.sync or getattr(self._storage, "sync", None)
            if ping is not None:
                ping()
        return self._storage.lastTransaction()

    def close(self):
        if not super().close():
            return
        try:
            with self._adapter._lock:
                self._adapter._instances.discard(self)
        except AttributeError:  # the database was closed: ZODB dropped the set
            pass


class _Polled(_Inbox):
    """A watcher on RelStorage: told by its database's :class:`_PollHub`."""

    def __init__(self, db, interval, interested):
        super().__init__()
        self._hub = _hub_of(db, interval)
        self._hub.register(self, interested)

    def _barrier(self):
        return self._hub.seen

    def now(self, session):
        return self._hub.poll_now()

    def close(self):
        if super().close():
            self._hub.unregister(self)


class _PollHub:
    """RelStorage pushes nothing: one thread per database polls for its watchers.

    Every ``interval`` seconds (while it has watchers) it calls
    ``poll_invalidations()`` on a storage instance of its own -- what a
    RelStorage connection calls at each transaction start: one query answering
    with the oids changed since the previous poll (None when it cannot tell) --
    and ``lastTransaction()``.  When a watcher's value was read from one of
    those oids, the hub reads the new transactions from the log once, for all
    its watchers (their oids, and the user and note a change shows); otherwise
    every watcher just hears the union and passes over it.
    """

    def __init__(self, db, interval):
        self._db = weakref.ref(db)
        self._storage = db.storage
        self._interval = interval
        self._lock = threading.Lock()   # the instance is used by one thread at a time
        self._listeners = {}            # inbox -> interested(oids)
        self._instance = None
        self._stop = None
        self._broken = False
        self.seen = z64

    def register(self, inbox, interested):
        with self._lock:
            self._listeners[inbox] = interested
            if self._instance is None:
                self._instance = self._storage.new_instance()
                self._instance.poll_invalidations()
                self.seen = self._instance.lastTransaction()
                self._stop = threading.Event()
                threading.Thread(target=self._run, args=(self._stop,), daemon=True,
                                 name="zpydb watch poller").start()

    def unregister(self, inbox):
        with self._lock:
            self._listeners.pop(inbox, None)
            if self._listeners or self._instance is None:
                return
            self._stop.set()
            try:
                self._instance.release()
            except Exception:  # a broken connection is dropped either way
                pass
            self._instance = None
        with _hubs_lock:
            db = self._db()
            if db is not None and _hubs.get(db) is self:
                del _hubs[db]

    def poll_now(self):
        """Poll at once (a new watcher's starting point); returns the newest tid."""
        with self._lock:
            self._poll()
            return self.seen

    def _run(self, stop):
        while not stop.wait(self._interval):
            with self._lock:
                if stop.is_set():
                    return
                try:
                    self._poll()
                except Exception:  # never let the thread die: tell everyone to read the log
                    self._broken = True

    def _poll(self):
        try:
            oids = self._instance.poll_invalidations()
            last = self._instance.lastTransaction()
        except Exception:  # PostgreSQL is away: every watcher reads the log once it is back
            self._broken = True
            return
        listeners = list(self._listeners.items())
        if self._broken or oids is None:
            self._broken = False
            self.seen = max(last, self.seen)
            for inbox, _ in listeners:
                inbox._notice_unknown(self.seen)
            return
        if last <= self.seen:
            return
        oids, first = frozenset(oids), _next_tid(self.seen)
        self.seen = last
        if not any(interested(oids) for _, interested in listeners):
            for inbox, _ in listeners:
                inbox._notice_span(last, oids)
            return
        try:
            told = self._read_log(first, last)
        except Exception:  # the watchers read it themselves
            for inbox, _ in listeners:
                inbox._notice_unknown(last)
            return
        for inbox, _ in listeners:
            for tid, changed in told:
                inbox._notice(tid, changed)
            if not told or told[-1][0] < last:
                inbox._notice_unknown(last)

    def _read_log(self, first, last):
        """[(tid, oids)] of the transactions first..last; their log entries go to the memo."""
        db = self._db()
        memo = _memo_of(db) if db is not None else None
        told = []
        iterator = self._storage.iterator(first, last)
        try:
            for info in iterator:
                if info.tid > last:
                    break
                told.append((info.tid, frozenset(record.oid for record in info)))
                if memo is not None:
                    memo.put(("info", info.tid), _Info(info))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        return told


_hubs = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def _hub_of(db, interval):
    with _hubs_lock:
        hub = _hubs.get(db)
        if hub is None:
            hub = _hubs[db] = _PollHub(db, interval)
        return hub
