"""Copy a whole database, with its transaction history, to another backend.

``copy_database(src_url, dst_url)`` moves a database between FileStorage
(``file://`` or a path), ZEO (``zeo://`` or ``host:port``) and RelStorage on
PostgreSQL (``postgres://user:pass@host:port/dbname``) the way ZODB's
``zodbconvert`` does: the destination storage's own
``copyTransactionsFrom(source)`` replays every source transaction with
``restore()``, keeping transaction ids, user names, descriptions and extension
data, so the undo log (and with it zpydb's undo/redo) survives the move.

As zodbconvert does, a destination that already holds transactions is refused:
restored transaction ids must be newer than everything already there, and
merging two histories is not a copy.

The storages are opened without a ``ZODB.DB`` on purpose: opening a DB on an
empty storage commits an "initial database creation" transaction, which would
make a fresh destination non-empty (and clash with the source's own first
transaction).  URL shorthands and the ZEO client defaults are the ones of
:func:`zpydb.storage.open_database`.

Limits: ZEO's ``ClientStorage`` has no ``restoreBlob``, so ZODB blobs cannot be
copied *into* ZEO (copy into the server's FileStorage directly instead).  A
database holding ``zpydb.File`` values (blobs) therefore cannot be copied into
ZEO: the copy stops with an error rather than dropping one.
"""

import os
import sys
import time
from urllib.parse import urlsplit
from dataclasses import dataclass

from zope.interface import implementer
from ZODB.blob import is_blob_record
from ZODB.interfaces import IStorageIteration

from . import storage as _storage
from .errors import Error, URLError

#: Schemes whose zodburi resolver takes ``read_only=1``; the source is opened read-only
#: (a read-only FileStorage takes no lock, so a file served by runzeo can be copied).
READ_ONLY_SCHEMES = ("file", "zeo", "postgres", "mysql", "sqlite", "oracle")


class DestinationNotEmptyError(URLError):
    """The copy destination already holds transactions."""


class CopyError(Error):
    """A copy that cannot be carried out (e.g. blobs into ZEO)."""


@dataclass
class CopySummary:
    """What :func:`copy_database` copied."""

    source: str
    destination: str
    transactions: int
    records: int
    seconds: float

    def __str__(self):
        return (f"copied {self.transactions} transactions ({self.records} records) "
                f"from {self.source} to {self.destination} in {self.seconds:.2f}s")


def copy_database(src_url, dst_url, progress=True):
    """Copy every transaction of ``src_url`` into the empty database ``dst_url``.

    ``progress``: show a tqdm progress bar on stderr.  Returns a
    :class:`CopySummary`.  Raises :class:`DestinationNotEmptyError` when the
    destination already has transactions, :class:`zpydb.errors.URLError` when a
    URL cannot be opened.  Both storages are closed whatever happens.
    """
    src = _storage.normalize_url(src_url)
    dst = _storage.normalize_url(dst_url)
    if _same_place(src, dst):
        raise URLError(_storage.describe(dst), "source and destination are the same database")
    began = time.perf_counter()
    source = destination = None
    created = _storage.paths_created_by_opening(dst)  # removed if the copy fails
    try:
        source = _StorageHandle.open(src, read_only=True)
        destination = _StorageHandle.open(dst)
        if _has_transactions(destination.storage):
            raise DestinationNotEmptyError(
                destination.name, "the destination already has transactions; copy only "
                "into a new, empty database (drop or delete it first)")
        total = _count_transactions(source.storage)
        from tqdm import tqdm

        with tqdm(total=total, unit="txn", desc="copy", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar:
            counting = _CountingSource(source.storage, total, bar,
                                       blobs_ok=hasattr(destination.storage, "restoreBlob"))
            destination.storage.copyTransactionsFrom(counting)
        summary = CopySummary(source.name, destination.name, counting.transactions,
                              counting.records, time.perf_counter() - began)
        created = []
        return summary
    finally:
        for handle in (destination, source):
            if handle is not None:
                handle.close()
        _storage.remove_paths(created)


# -- opening storages ----------------------------------------------------------------------

class _StorageHandle:
    """A bare storage (no ZODB.DB) and the temporary directories to remove with it."""

    def __init__(self, storage, name, cleanup):
        self.storage = storage
        self.name = name
        self.cleanup = cleanup

    @classmethod
    def open(cls, url, read_only=False):
        name = _storage.describe(url)
        scheme = _storage.scheme_of(url)
        if scheme == "file":
            path = urlsplit(url).path
            if read_only and not os.path.exists(path):
                raise URLError(name, "no such database file")
        try:
            storage, _url, cleanup, _dbkw = _storage.open_storage(
                url, _storage.Options(read_only=read_only and scheme in READ_ONLY_SCHEMES))
        except Error:
            raise
        except Exception as exc:
            raise URLError(name, f"cannot open: {type(exc).__name__}: {str(exc).strip()}") from exc
        return cls(storage, name, cleanup)

    def close(self):
        try:
            self.storage.close()
        finally:
            _remove_dirs(self.cleanup)


def _remove_dirs(directories):
    import shutil

    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def _same_place(src, dst):
    a, b = urlsplit(src), urlsplit(dst)
    if a.scheme != b.scheme:
        return False
    if a.scheme == "file":
        return os.path.realpath(a.path) == os.path.realpath(b.path)
    return (a.hostname, a.port, a.path) == (b.hostname, b.port, b.path) and a.scheme != "memory"


# -- iterating the source ------------------------------------------------------------------

def _close_iterator(iterator):
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _has_transactions(storage):
    """True when ``storage`` holds at least one transaction (zodbconvert's test)."""
    iterator = storage.iterator()
    try:
        next(iter(iterator))
    except (StopIteration, IndexError):
        return False
    finally:
        _close_iterator(iterator)
    return True


def _count_transactions(storage):
    """The number of source transactions: a scan of transaction headers only."""
    iterator = storage.iterator()
    try:
        return sum(1 for _txn in iterator)
    finally:
        _close_iterator(iterator)


@implementer(IStorageIteration)
class _CountingSource:
    """The source storage as ``copyTransactionsFrom`` sees it: every transaction the
    destination pulls from ``iterator()`` advances the progress bar.

    Like zodbconvert's wrapper it declares only ``IStorageIteration`` (with
    ``@implementer``: otherwise ``__getattr__`` would forward the source's
    interface declarations), so RelStorage copies transaction by transaction,
    keeping history, instead of object by object.  Everything else (loadBlob,
    openCommittedBlobFile, ...) is forwarded to the real storage.
    """

    def __init__(self, source, total, bar, blobs_ok=True):
        self._source = source
        self._total = total
        self._bar = bar
        self._blobs_ok = blobs_ok
        self.transactions = 0
        self.records = 0

    def iterator(self, start=None, stop=None):
        return _CountingIterator(self, self._source.iterator(start, stop))

    def __len__(self):
        return len(self._source)

    def __getattr__(self, name):
        return getattr(self._source, name)

    def __repr__(self):
        return f"<counting {self._source!r}>"


class _CountingIterator:
    def __init__(self, owner, iterator):
        self._owner = owner
        self._iterator = iterator
        self._it = iter(iterator)
        self._pending = False  # a transaction handed out, not yet counted on the bar

    def __len__(self):
        # RelStorage asks for len(); anything but a positive number makes it recount.
        return self._owner._total

    def __iter__(self):
        return self

    def __next__(self):
        owner = self._owner
        if self._pending:
            owner._bar.update(1)  # asking for the next one: the previous one is committed
            self._pending = False
        txn = next(self._it)
        owner.transactions += 1
        self._pending = True
        return _CountingTransaction(txn, owner)

    def close(self):
        _close_iterator(self._iterator)


class _CountingTransaction:
    """A source transaction whose records are counted as the destination reads them.

    The destination passes this same object to tpc_begin/restore/tpc_vote/tpc_finish,
    so its identity is consistent; attributes (tid, status, user, description,
    extension, extension_bytes) come from the real transaction.
    """

    def __init__(self, txn, owner):
        self._txn = txn
        self._owner = owner

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_txn", "_owner"):
            raise AttributeError(name)
        return getattr(self._txn, name)

    def __iter__(self):
        owner = self._owner
        for record in self._txn:
            if not owner._blobs_ok and is_blob_record(record.data):
                raise CopyError("the source has ZODB blobs and the destination (ZEO) cannot "
                                "restore blobs: copy into the server's FileStorage instead")
            owner.records += 1
            yield record


# -- command line --------------------------------------------------------------------------

def register_commands(subparsers):
    """Add ``copy SRC_URL DST_URL [--no-progress]`` to an argparse ``subparsers``."""
    parser = subparsers.add_parser(
        "copy", help="copy a database with its history to another backend",
        description="Copy every transaction (and so the undo history) from SRC_URL into "
                    "the new, empty database DST_URL, e.g. from a Data.fs file to "
                    "postgres://user:pass@host:port/dbname.  Like zodbconvert, it refuses "
                    "a destination that already has transactions.")
    parser.add_argument("src_url", metavar="SRC_URL",
                        help="source: a Data.fs path, file://, zeo://, host:port, postgres://")
    parser.add_argument("dst_url", metavar="DST_URL", help="destination (must be empty)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar on stderr")
    parser.set_defaults(func=_copy_command)
    return parser


def _copy_command(args):
    try:
        summary = copy_database(args.src_url, args.dst_url, progress=args.progress)
    except Error as exc:
        print(f"zpydb copy: error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0
