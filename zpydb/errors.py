"""Every exception zpydb raises, in one place.

Each error subclasses :class:`Error` and, where Python has a builtin for the
same situation, that builtin too, so ``except KeyError`` keeps working for code
written against plain dicts.  Errors about a place in the tree carry the path
(``db['l'][4]``) as ``.path`` and name it in the message, because "KeyError: 'x'"
says nothing about *where* in a nested database the key was missing.

The tree::

    Error
    ├── PathError                 (carries .path)
    │   ├── KeyNotFoundError      (KeyError)    missing dict key
    │   ├── BadIndexError         (IndexError)  list index out of range
    │   ├── NotAContainerError    (TypeError)   subscripting a scalar, wrong method
    │   ├── UnstorableValueError  (TypeError)   a value zpydb cannot store: its type,
    │   │                                       a cycle, or nesting past MAX_DEPTH
    │   ├── UnorderableKeyError   (TypeError)   dict keys that cannot be ordered
    │   ├── ValueNotFoundError    (ValueError)  list.remove / list.index miss
    │   ├── AttributeNotFoundError (AttributeError) db['n'].upper: the value has no such attribute
    │   ├── BadArgumentError      (TypeError, ValueError)  wrong arguments to a method
    │   └── OperationError        (TypeError)   values that cannot do what was asked
    ├── ConflictError             another client changed the same data (retry)
    ├── UndoError                 nothing to undo/redo, undo blocked, or inside a block
    ├── ReadOnlyError             writing through a read-only server/storage
    │   └── PastIsReadOnlyError   (PathError) a write through db.at(when): the past is read-only
    ├── HistoryNotKeptError       db.at(when)/diff: a state the database does not keep (packed,
    │                             or before its first transaction); says what is kept
    ├── DisconnectedError         the server is not reachable (lost, or not within wait_timeout)
    ├── StorageError              the storage could not write (disk full...)
    ├── UnsafeClassError          a record names a class zpydb never stores (not loaded)
    ├── DatabaseLockedError       an embedded Data.fs is in use by another process
    ├── PackError                 a pack refused or failed (carries .url)
    ├── FormatError               the database's stored format is newer than this zpydb
    ├── URLError (ValueError)     a URL zpydb cannot open
    ├── RequestError (ValueError) a web request that cannot be carried out as sent (400)
    │   └── PayloadTooLargeError  a request body over the server's limit (413)
    ├── PreconditionFailedError   an if-match ETag that no longer matches (412)
    └── AccessError               a web request without the right token
        ├── AuthenticationError   no token, or an unknown one (401)
        └── ForbiddenError        a known token without rights to the path (403)

    KeyboardInterrupt
    └── CommitInterrupted         a second Ctrl-C broke into a commit that waited for
                                  an unresponsive server: applied is unknown (.applied None)
"""

from transaction.interfaces import TransientError
from ZODB.POSException import POSError


class Error(Exception):
    """Base class of every zpydb error."""


class PathError(Error):
    """An error about one place in the tree; ``path`` is its Python expression."""

    def __init__(self, path, message):
        self.path = path
        self.message = message
        super().__init__(path, message)

    def __str__(self):
        return f"{self.path}: {self.message}"


class KeyNotFoundError(PathError, KeyError):
    """A dict key that does not exist."""

    __str__ = PathError.__str__  # KeyError would repr() the args tuple


class BadIndexError(PathError, IndexError):
    """A list index outside the list."""


class NotAContainerError(PathError, TypeError):
    """Subscripting a scalar, or calling a list method on a dict (and vice versa)."""


class UnstorableValueError(PathError, TypeError):
    """A value (or key) of a type zpydb does not store."""


class UnorderableKeyError(PathError, TypeError):
    """Dict keys that cannot be ordered against each other (OOBTree needs order)."""


class ValueNotFoundError(PathError, ValueError):
    """``remove(x)`` / ``index(x)`` on a list without ``x``."""


class AttributeNotFoundError(PathError, AttributeError):
    """``db['n'].upper``: the value at the path has no such (public) attribute."""

    def __init__(self, path, message):
        PathError.__init__(self, path, message)  # AttributeError's own keywords stay unset


class BadArgumentError(PathError, TypeError, ValueError):
    """A method called with arguments of the wrong number, type or value.

    ``d.pop()`` without a key, ``l.insert('x', v)``, a slice step of 0: Python
    raises TypeError for some of these and ValueError for others, so this is both.
    """


class OperationError(PathError, TypeError):
    """The values cannot do what was asked: nothing was changed.

    Sorting items that cannot be compared, ``db['n'] += 'x'`` on an int, or an
    object's own ``__eq__``/``__lt__`` (or a sort key function) that raised;
    the original exception is the ``__cause__``.
    """


class ConflictError(Error, TransientError):
    """A commit lost a race with another client's commit; nothing was applied.

    It is a ``transaction`` TransientError, so ``TransactionManager.run()`` /
    ``attempts()`` (and ``db.atomic``) retry it.
    """


class UndoError(Error):
    """Nothing to undo or redo, an undo blocked by later changes, no undo support,
    or undo/redo/history called while a lock()/transaction()/atomic block is open."""


class ReadOnlyError(Error):
    """A write sent to a read-only server or storage."""


class PastIsReadOnlyError(PathError, ReadOnlyError):
    """A write (``=``, ``del``, ``append``, ``+=``, ``undo``, ``pack``, a block...)
    through ``db.at(when)``: a view of the past never changes.  ``path`` names
    the place written to; nothing was written anywhere."""


class HistoryNotKeptError(Error):
    """``db.at(when)`` (or ``diff``) of a state the database does not keep.

    Before the database's first transaction, or before what a pack kept.
    ``when`` is what was asked for (as given), ``oldest`` the time (a local
    ``datetime``) of the oldest state that is kept, ``oldest_id`` its
    transaction id (hex), both None when not even that could be read.
    """

    def __init__(self, message, when=None, oldest=None, oldest_id=None):
        self.when, self.oldest, self.oldest_id = when, oldest, oldest_id
        super().__init__(message)


class DisconnectedError(Error):
    """The connection to the storage server was lost, or not made within ``wait_timeout``.

    ``applied`` is False when nothing was applied, None when zpydb could not
    find out whether a commit that broke off happened (the message says so).
    """

    applied = False


class StorageError(Error):
    """The storage could not write a change (disk full, a server-side failure).

    ``applied`` says what zpydb found in the transaction log afterwards.
    """


class UnsafeClassError(Error, POSError):
    """A record names a class or function zpydb never stores; it was not loaded.

    Raised instead of importing ``module.name`` (zpydb.safety): the data was
    written by another program, possibly to run code in whoever reads it.  It
    is also a ZODB ``POSError``, which ZODB passes on as it is (any other error
    while unpickling a record becomes a bare ``StateLoadError``).
    """

    def __init__(self, module, name, reason=None):
        self.module, self.name = module, name
        self.reason = reason or ("zpydb loads only the types it stores (see docs/security.md); "
                                 "the record was written by another program")
        super().__init__(f"refused to load {module}.{name} from the database: {self.reason}")


class DatabaseLockedError(Error):
    """An embedded FileStorage is already open in another process."""


class PackError(Error):
    """``db.pack()`` / ``zpydb pack`` refused (in-memory storage, open block) or failed.

    ``url`` names the database; nothing was packed.
    """

    def __init__(self, url, message):
        self.url = url
        super().__init__(f"{url}: {message}")


class FormatError(Error):
    """The database was written in a stored format this zpydb does not know (a newer one).

    Reading it with the old rules could misread it silently, so zpydb refuses
    to open it.  ``url`` names the database, ``found`` is the format stored in
    it and ``supported`` the newest format this zpydb reads.
    """

    def __init__(self, url, found, supported):
        self.url, self.found, self.supported = url, found, supported
        super().__init__(
            f"{url}: refused to open: the database is in stored format {found!r} and this "
            f"zpydb reads formats 0 to {supported} only (a newer zpydb wrote it: upgrade "
            f"zpydb to open it); nothing was read or changed")


class URLError(Error, ValueError):
    """A database URL zpydb cannot open; ``url`` holds it."""

    def __init__(self, url, message):
        self.url = url
        super().__init__(f"{url!r}: {message}")


class CommitInterrupted(KeyboardInterrupt):
    """Ctrl-C, pressed again while a commit waited for a server that stopped answering.

    The first Ctrl-C during a commit is held until the commit ends (so that it
    is applied whole or not at all); a second one while the commit still waits
    for the server breaks out.  Whether the change was applied is then unknown
    (``applied`` is None): look at ``db.history()`` once the server answers.
    """

    applied = None


class RequestError(Error, ValueError):
    """A ``zpydb web`` request that cannot be carried out as sent: nothing was written.

    A bad location (``/a//b.json``, a list index that is not a number), a body
    that is not strict JSON, a PATCH body that is not an object, a bad query
    parameter.  ``location`` is the request's URL path.
    """

    def __init__(self, location, message):
        self.location, self.message = location, message
        super().__init__(f"{location}: {message}" if location else message)


class PayloadTooLargeError(RequestError):
    """A request body larger than the server's ``--max-body``: nothing was read further."""


class PreconditionFailedError(Error):
    """An ``if-match`` ETag that is not the current one: nothing was written.

    ``etag`` is the current ETag and ``current`` the current value there
    (JSON-ready), so a client can retry with them at once (Firebase answers
    the same way).
    """

    def __init__(self, location, etag, current):
        self.location, self.etag, self.current = location, etag, current
        super().__init__(f"{location}: the data changed: its ETag is now {etag}; nothing "
                         f"was written (read it again and retry with the new ETag)")


class AccessError(Error):
    """A ``zpydb web`` request refused by the tokens file (zpydb/access.py)."""


class AuthenticationError(AccessError):
    """No token, or one that is in no tokens file entry."""


class ForbiddenError(AccessError):
    """A valid token whose read or write prefixes do not cover the path."""
