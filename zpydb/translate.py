"""ZODB, ZEO and RelStorage exceptions -> zpydb errors that say what happened.

Which storage failures exist (:data:`DISCONNECTS`, :data:`COMMIT_FAILURES`,
:data:`LOCK_ERRORS`) and what each one becomes (:func:`translate`,
:func:`translate_errors`), for every layer that talks to a storage: the
executors (session.py, transactions.py) and the database-wide calls (undo.py,
pack.py).

This is not errors.py on purpose: errors.py is imported by everything,
including the unpickling guard (safety.py) that storage.py installs, and must
stay import-light and free of cycles; the translation needs ZEO, the optional
RelStorage/psycopg2 drivers and storage.py's ``server_behind_cache`` (and
storage.py itself imports errors.py).
"""

from contextlib import contextmanager

import ZODB.POSException as POS
from ZEO.Exceptions import ClientDisconnected, ServerException

from . import errors
from .storage import SERVER_BEHIND_MESSAGE, server_behind_cache

try:  # RelStorage: a lock it could not take in time is worth another attempt
    from relstorage.adapters.interfaces import UnableToAcquireLockError as _LockError
    LOCK_ERRORS = (_LockError,)
except ImportError:  # pragma: no cover - RelStorage is an optional extra
    LOCK_ERRORS = ()

try:  # RelStorage on psycopg2: the database server's connection broke
    import psycopg2
    from relstorage.adapters.interfaces import ReplicaClosedException
    DRIVER_DISCONNECTS = (psycopg2.OperationalError, psycopg2.InterfaceError,
                          ReplicaClosedException)
except ImportError:  # pragma: no cover - RelStorage is an optional extra
    DRIVER_DISCONNECTS = ()

#: The connection to the server broke: the statement may be run again once
#: the outcome of its commit is known (ZEO's, or PostgreSQL's through RelStorage).
DISCONNECTS = (ClientDisconnected,) + DRIVER_DISCONNECTS

#: Failures during a commit after which zpydb looks up the outcome (outcome.py).
COMMIT_FAILURES = DISCONNECTS + (ServerException, OSError)


#: The ZODB/ZEO exceptions :func:`translate` turns into zpydb errors.
TRANSLATED = DISCONNECTS + (POS.ReadOnlyError, POS.ConflictError, POS.UndoError,
              POS.Unsupported, ServerException) + LOCK_ERRORS


@contextmanager
def translate_errors(name, storage=None, budget=None):
    """ZODB/ZEO exceptions -> zpydb errors that say what happened in plain words."""
    try:
        yield
    except errors.Error:
        raise
    except TRANSLATED as exc:
        raise translate(exc, name, storage, budget) from (
            exc if isinstance(exc, POS.ConflictError) else None)


def translate(exc, name, storage=None, budget=None):
    """The zpydb error for one of the TRANSLATED exceptions."""
    if isinstance(exc, DRIVER_DISCONNECTS):
        return applied(errors.DisconnectedError(
            f"the connection of {name} to its database server broke "
            f"({describe_failure(exc)}); nothing was applied"), False)
    if isinstance(exc, ClientDisconnected):
        if server_behind_cache(storage):
            return errors.DisconnectedError(f"{name}: {SERVER_BEHIND_MESSAGE}")
        return applied(errors.DisconnectedError(
            f"the server of {name} is not reachable: the connection was lost or not made "
            f"within wait_timeout ({describe_failure(exc)}); nothing was applied; the client "
            f"reconnects by itself when the server is back"), False)
    if isinstance(exc, POS.ReadOnlyError):
        return errors.ReadOnlyError(
            f"{name} is read-only (a read-only server or replica); send writes to the "
            f"primary server")
    if isinstance(exc, POS.ConflictError) or isinstance(exc, LOCK_ERRORS):
        tried = f"; {budget.describe()}" if budget is not None else ""
        return applied(errors.ConflictError(
            f"another client kept changing the same data{tried}; nothing was applied "
            f"({describe_failure(exc)})"), False)
    if isinstance(exc, POS.UndoError):
        return errors.UndoError(f"cannot undo: {exc}")
    if isinstance(exc, (OSError, ServerException)):
        return applied(errors.StorageError(
            f"{name} could not store the change ({describe_failure(exc)}); nothing was "
            f"applied (checked in the transaction log)"), False)
    return errors.Error(
        f"{name} cannot do this: {exc} (zpydb.File needs a storage with blobs: a file, "
        f"ZEO or RelStorage database; memory:// has none)")


def applied(error, value):
    """Record on ``error`` what is known of the outcome (True, False, None: unknown)."""
    error.applied = value
    return error


def describe_failure(exc):
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
