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
    │   ├── UnstorableValueError  (TypeError)   a value type zpydb cannot store
    │   ├── UnorderableKeyError   (TypeError)   dict keys that cannot be ordered
    │   └── ValueNotFoundError    (ValueError)  list.remove / list.index miss
    ├── ConflictError             another client changed the same data (retry)
    ├── UndoError                 nothing to undo/redo, or undo blocked
    ├── ReadOnlyError             writing through a read-only server/storage
    ├── DisconnectedError         the server did not answer in time
    ├── DatabaseLockedError       an embedded Data.fs is in use by another process
    └── URLError (ValueError)     a URL zpydb cannot open
"""

from transaction.interfaces import TransientError


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


class ConflictError(Error, TransientError):
    """A commit lost a race with another client's commit; nothing was applied.

    It is a ``transaction`` TransientError, so ``TransactionManager.run()`` /
    ``attempts()`` (and ``db.atomic``) retry it.
    """


class UndoError(Error):
    """Nothing to undo or redo, an undo blocked by later changes, or no undo support."""


class ReadOnlyError(Error):
    """A write sent to a read-only server or storage."""


class DisconnectedError(Error):
    """The storage server did not answer within the configured wait."""


class DatabaseLockedError(Error):
    """An embedded FileStorage is already open in another process."""


class URLError(Error, ValueError):
    """A database URL zpydb cannot open; ``url`` holds it."""

    def __init__(self, url, message):
        self.url = url
        super().__init__(f"{url!r}: {message}")
