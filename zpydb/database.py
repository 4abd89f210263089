"""The root proxy ``db``: a :class:`~zpydb.paths.Path` plus database-wide calls.

``db`` is what :func:`zpydb.connect` returns.  Subscripting it builds paths;
its own methods act on the whole database: undo/redo/history, pack, transaction
blocks, pyzdb's lock/unlock, and closing.
"""

from . import pack as _pack
from . import timetravel as _timetravel
from . import undo as _undo
from .errors import BadArgumentError
from .paths import Path
from .session import Session
from .storage import Options, open_database
from .transactions import Autocommit, TransactionContext, atomic


class Database(Path):
    """The root of the tree, bound to an open :class:`~zpydb.session.Session`."""

    __slots__ = ()

    def __init__(self, session):
        super().__init__(Autocommit(session))

    @property
    def _session(self):
        return self._executor.session

    def __repr__(self):
        """``<zpydb.Database on /path/Data.fs>``: no I/O, never raises (also once closed)."""
        try:
            return f"<zpydb.Database on {self._session.name}>"
        except Exception:
            return "<zpydb.Database>"

    # -- undo / redo (undo.py) --------------------------------------------
    def undo(self, id=None, *, user=None):
        """Undo the newest change still in effect, made by any client; or, given an
        ``id`` from :meth:`history` (or an entry), that one earlier change.

        ``undo(id)`` works when later changes allow it (they touched other data);
        otherwise, or when that change is already undone, UndoError and nothing
        changed.  :meth:`redo` then re-applies it.  Refused (UndoError, nothing
        changed) while a ``lock()``, ``transaction()`` or ``atomic`` block is
        open in this thread: end the block first.  ``user``: recorded as the
        undo's user instead of the OS user.
        """
        _check_user(user)
        self._executor.database(lambda session: _undo.undo(session, id, user=user),
                                _undo.refusal("undo"))

    def redo(self, *, user=None):
        """Re-apply the most recently undone change (until a new write)."""
        _check_user(user)
        self._executor.database(lambda session: _undo.redo(session, user=user),
                                _undo.refusal("redo"))

    def history(self, n=10):
        """The last ``n`` changes (``n >= 0``), newest first: dicts of id, time, user,
        note, kind.  ``id`` is the transaction id (hex) that ``undo(id)``, ``at(id)``
        and ``diff(id)`` take."""
        return self._executor.database(lambda session: _undo.history(session, n),
                                       _undo.refusal("history"))

    # -- time travel (timetravel.py) ------------------------------------------
    def at(self, when):
        """The database as it was at ``when``: a read-only root (see docs/history.md).

        ``when``: a ``datetime`` (naive: local time), a POSIX timestamp, an ``id``
        from :meth:`history` or a history entry.  Reads work as on ``db``; every
        write raises ReadOnlyError (PastIsReadOnlyError); ``with db.at(t) as old:``
        releases it.  HistoryNotKeptError when the state is not kept (before the
        first transaction, or packed away).
        """
        return _timetravel.at(self._session, when)

    def pack(self, days=0):
        """Pack the storage: drop revisions older than ``days`` days (0: all history).

        Keeps the current data (and blobs) and the undo log of the last ``days``
        days; undo cannot reach further back afterwards.  PackError on an
        in-memory database or inside an open block; see zpydb/pack.py.
        """
        _pack.check_days(days)  # a bad argument first, as before
        try:
            self._executor.database(lambda session: _pack.pack(session, days), _pack.refusal)
        finally:
            _timetravel.forget_kept(self._session)  # what db.at() can reach has changed

    def save(self):
        """Does nothing, on purpose: kept so pyzdb scripts run unchanged.

        pyzdb held the database in memory and pickled it to disk on save().
        zpydb commits every statement durably before it returns, so there is
        never anything left to save.
        """

    # -- transactions (transactions.py) -------------------------------------
    def transaction(self, *, note=None, user=None):
        """``with db.transaction() as t:`` — several statements, one transaction.

        ``note``: the change's note in ``history()`` (default: the statements'
        notes joined by ``; ``); ``user``: its user (default: the OS user).
        """
        return TransactionContext(self._session, _block_root, note=note, user=user)

    def atomic(self, func=None, *, tries=None, note=None, user=None):
        """Run ``func(t)`` atomically, retrying conflicts until ``retry_timeout``.

        Usable as a decorator.  ``tries`` optionally caps the attempts as well;
        ``note`` and ``user`` as for :meth:`transaction`.
        """
        if func is None:
            return lambda f: self.atomic(f, tries=tries, note=note, user=user)
        return atomic(self._session, _block_root, func, tries=tries, note=note, user=user)

    def lock(self):
        """pyzdb's lock(): begin a transaction that later statements join (see docs)."""
        self._executor.lock()

    def unlock(self):
        """pyzdb's unlock(): commit what was done since lock()."""
        self._executor.unlock()

    # -- lifetime -----------------------------------------------------------
    @property
    def url(self):
        return self._session.opened.url

    def close(self):
        """Close the connection(s) and release the storage (and its lock file).

        A ``lock()`` still open in this thread is aborted: nothing of it is applied.
        """
        self._executor.abandon_lock()
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _check_user(user):
    if user is not None and not isinstance(user, str):
        raise BadArgumentError("db", f"user= must be a str or None, not {type(user).__name__}")


def _block_root(block):
    return Path(block)


def connect(url=None, *, read_url=None, **options):
    """Open a database and return its root proxy ``db``.

    ``url``: None (``$ZPYDB_URL``, else ``./var/Data.fs``), a file path,
    ``host:port``, or any zodburi URL (``file://``, ``memory://``, ``zeo://``,
    ``zconfig://``, ``postgres://``...).  ``read_url``: a read-only replica that
    serves reads while writes go to ``url``.  Options: see
    :class:`zpydb.storage.Options`.
    """
    opts = Options.from_kwargs(options)
    opened = open_database(url, opts)
    read_opened = None
    if read_url is not None:
        try:
            read_opened = open_database(read_url, Options.from_kwargs({**options, "read_only": True}))
        except BaseException:
            opened.close()
            raise
    try:
        return Database(Session(opened, read_opened))
    except BaseException:
        opened.close()
        if read_opened:
            read_opened.close()
        raise


def client(write_url=None, read_url=None, **options):
    """pyzdb's entry point: ``(db, handle)``; ``handle.close()`` is ``db.close()``."""
    db = connect(write_url, read_url=read_url, **options)
    return db, ClientHandle(db)


class ClientHandle:
    """The second value of :func:`client`: ``close()`` is ``db.close()``, and nothing else.

    pyzdb returned its connection object here; zpydb hands out no internals, so
    closing through it behaves exactly like ``db.close()`` (a ``lock()`` block
    still open is aborted, and later statements raise instead of acting).
    """

    __slots__ = ("_db",)

    def __init__(self, db):
        self._db = db

    def close(self):
        """The same as ``db.close()``."""
        self._db.close()

    @property
    def closed(self):
        return self._db._session.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<zpydb client handle ({state}) of {self._db._session.name}>"
