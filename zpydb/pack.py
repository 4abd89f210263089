"""Packing: drop old revisions, and with them old undo history, to reclaim space.

A FileStorage only grows: every change appends new object versions, and every
``zpydb.File`` revision keeps its blob.  ``db.pack(days=0)`` (and ``zpydb pack
URL [--days N]``) is ZODB's ``DB.pack(days=...)``: it keeps the current data,
every revision still needed to see the database as it was ``days`` days ago,
and the undo log of those days; older revisions, unreachable objects and their
blobs go.  Undo can no longer reach past the pack time (undo.py walks that log).
Over ZEO the server packs its own storage; a read-only replica refuses.

Refused, with nothing packed:

* inside an open ``lock()``/``transaction()``/``atomic`` block of this thread,
  as undo is: the block reads from a snapshot whose older revisions the pack
  may remove under it;
* on in-memory storages (``memory://``, ``demo:``): they live in this process
  only, keep no undo log zpydb can use, and have nothing on disk to reclaim,
  so a "pack" there would only suggest that something was saved.
"""

import math

import ZODB.POSException as POS
from ZODB.DemoStorage import DemoStorage
from ZODB.MappingStorage import MappingStorage

from . import errors, nodes
from .translate import DISCONNECTS, translate

SECONDS_PER_DAY = 86400
MEMORY_STORAGES = (MappingStorage, DemoStorage)


def pack(session, days=0):
    """Pack the storage of ``session``, keeping ``days`` days of history (0: none).

    ``days`` is checked (check_days) and a block of this thread refused
    (refusal) by the caller, the executor's ``database`` call.
    """
    check_days(days)
    _require_packable(session)
    storage = session.db.storage
    try:
        session.db.pack(days=days)
    except POS.ReadOnlyError:
        raise errors.ReadOnlyError(
            f"{session.name} is read-only (a read-only server, replica or file opened "
            f"read-only): pack the primary server or a file opened for writing") from None
    except DISCONNECTS as exc:
        raise translate(exc, session.name, storage) from None
    except (OSError, POS.POSError) as exc:
        raise errors.PackError(session.name, f"the pack failed ({type(exc).__name__}: "
                                             f"{_text(exc)}); the data are as before") from None


def check_days(days):
    """``days`` must be a finite number >= 0 (DB.pack would take a negative one as future)."""
    number = isinstance(days, (int, float)) and not isinstance(days, bool)
    if not number or not math.isfinite(days) or days < 0:
        raise errors.BadArgumentError(
            "db", f"pack(days) needs a number of days >= 0, not {nodes.short_repr(days, 40)}")


def refusal(session):
    """The error for db.pack() while a block of this thread is open (executor.database)."""
    return errors.PackError(
        session.name, "db.pack() cannot run while a db.lock(), db.transaction() or "
                      "db.atomic block is open in this thread: the block reads from a "
                      "snapshot the pack may remove; call it after db.unlock() or the "
                      "end of the block (nothing was packed)")


def _require_packable(session):
    storage = session.db.storage
    if isinstance(storage, MEMORY_STORAGES) or not callable(getattr(storage, "pack", None)):
        raise errors.PackError(
            session.name, "an in-memory database has no history on disk to pack "
                          "(memory:// and demo: keep no undo log); pack a file, ZEO or "
                          "PostgreSQL database")


def _text(exc):
    try:
        return " ".join(str(exc).split())
    except Exception:
        return ""
