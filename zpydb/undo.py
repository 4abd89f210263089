"""Undo and redo, derived from ZODB's own transaction log.

pyzdb kept an undo list in the server's memory: it vanished on restart and
each server had its own.  zpydb keeps no undo state at all.  Every transaction
zpydb commits carries an extension key ``zpydb`` saying what it was:

* ``write``: a change made by a statement or a transaction block;
* ``undo``:  ``DB.undo()`` of the entry whose log id is in ``zpydb_target``;
* ``redo``:  ``DB.undo()`` of an ``undo`` entry (undoing an undo re-applies it);
* ``init``:  creation of the data root (never undone);
* ``format``: the stored-format stamp written into an older database
  (session.py); it touches only ZODB's root mapping, and the walks pass over it.

The log (``DB.undoInfo``; its ``filter`` argument does not travel over ZEO, so
the walk filters here) is read newest first:

* **undo** target: the newest ``write``/``redo`` not cancelled by a newer
  ``undo`` (each ``undo`` seen cancels its target);
* **redo** target: the newest ``undo`` not already redone, stopping at the first
  ``write``: a new change ends the redo chain, as in an editor.

Because the state is the log itself, it is the same for every client and
survives restarts.  Packing the storage trims the log, and with it how far back
undo can go.

Notes name the original change: ``undo: db['x'] = 1``, and redoing it
``redo: db['x'] = 1`` (not ``redo: undo: ...``).  Inside an open ``lock()``,
``transaction()`` or ``atomic`` block of the same thread, undo/redo/history are
refused: undo commits on its own connection, behind the block's snapshot, so
the block would then commit on top of (or conflict with) a change it never saw.
"""

import datetime

from ZODB.POSException import POSKeyError
from ZODB.POSException import UndoError as POSUndoError

from . import errors, interrupts, nodes
from .session import DATA_KEY
from .transactions import describe_transaction
from .translate import translate_errors

TARGET_KEY = "zpydb_target"
BATCH = 100
MAX_WALK = 1_000_000


def undo(session, user=None):
    """Undo the newest change still in effect; UndoError when there is none.

    ``user``: recorded as the undo's user (None: the OS user).  Returns the
    undo's note (``undo: db['x'] = 1``); ``db.undo()`` itself returns None.
    """
    with interrupts.deferred():  # Ctrl-C between statements, never inside one
        target = _find(session, _undo_target, "nothing to undo")
        interrupts.checkpoint()
        return _apply(session, target, "undo", user)


def redo(session, user=None):
    """Re-apply the most recently undone change; UndoError when there is none.

    Returns the redo's note (``redo: db['x'] = 1``)."""
    with interrupts.deferred():
        target = _find(session, _redo_target, "nothing to redo")
        interrupts.checkpoint()
        return _apply(session, target, "redo", user)


def history(session, n=10):
    """The newest ``n`` zpydb changes, newest first, as plain dicts."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise errors.BadArgumentError(
            "db", f"history(n) needs a whole number n >= 0, not {nodes.short_repr(n, 40)}")
    if n == 0:
        return []
    _require_undo(session)
    changes = []
    with interrupts.deferred():
        for entry in _entries(session):
            if entry.get(DATA_KEY) in ("write", "undo", "redo"):
                changes.append(_describe(entry))
                if len(changes) >= n:
                    break
    return changes


def _describe(entry):
    return {
        "time": datetime.datetime.fromtimestamp(entry["time"]),
        "user": str(entry.get("user_name", "")).lstrip("/ ").strip(),
        "note": _text(entry.get("description", "")),
        "kind": entry.get(DATA_KEY),
    }


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _change_note(entry):
    """The original change an entry stands for: an undo's note is ``undo: <change>``."""
    text = _text(entry.get("description", ""))
    if entry.get(DATA_KEY) in ("undo", "redo") and text.startswith(("undo: ", "redo: ")):
        return text[len("undo: "):]
    return text


def _reason(exc):
    """str() of ZODB's UndoError; a MultipleUndoErrors that came over ZEO cannot format itself."""
    try:
        return str(exc)
    except Exception:
        return "some data were modified by a later transaction"


def refusal(what):
    """The error for db.``what``() while a block of this thread is open (executor.database)."""
    def refuse(session):
        return errors.UndoError(
            f"db.{what}() cannot run while a db.lock(), db.transaction() or db.atomic block "
            f"is open in this thread: it would act on committed changes behind the block's "
            f"back; call it after db.unlock() or the end of the block (nothing was changed)")
    return refuse


def _entries(session):
    """The undo log, newest first, in batches (bounded by MAX_WALK entries)."""
    first = 0
    with translate_errors(session.name):
        while first < MAX_WALK:
            batch = session.db.undoInfo(first, first + BATCH)
            yield from batch
            if len(batch) < BATCH:
                return
            first += BATCH


def _undo_target(entries):
    cancelled = set()
    for entry in entries:
        kind = entry.get(DATA_KEY)
        if kind in ("write", "redo"):
            if entry["id"] not in cancelled:
                return entry
        elif kind == "undo":
            cancelled.add(entry.get(TARGET_KEY))
        elif kind == "init":
            return None
    return None


def _redo_target(entries):
    redone = set()
    for entry in entries:
        kind = entry.get(DATA_KEY)
        if kind == "redo":
            redone.add(entry.get(TARGET_KEY))
        elif kind == "undo":
            if entry["id"] not in redone:
                return entry
        elif kind in ("write", "init"):
            return None
    return None


def _find(session, choose, nothing):
    _require_undo(session)
    target = choose(_entries(session))
    if target is None:
        raise errors.UndoError(nothing)
    return target


def _require_undo(session):
    if not session.db.supportsUndo():
        raise errors.UndoError(
            f"{session.name} keeps no undo log (memory:// and demo storages have none); "
            f"use a file, ZEO or history-preserving PostgreSQL database for undo/redo")


def _apply(session, entry, kind, user=None):
    change = _change_note(entry)
    note = f"{kind}: {change}"
    tm, _conn = session.connection()
    try:
        with translate_errors(session.name):
            txn = tm.begin()
            session.db.undo(entry["id"], txn)
            describe_transaction(txn, note, kind, user=user, **{TARGET_KEY: entry["id"]})
            try:
                tm.commit()
            except POSUndoError as exc:  # before translate_errors, whose str(exc) can fail
                raise errors.UndoError(_reason(exc)) from None
    except POSKeyError as exc:
        tm.abort()
        raise errors.UndoError(
            f"cannot {kind} {change!r}: a record it needs is "
            f"gone ({exc}); nothing was changed") from None
    except errors.UndoError as exc:
        tm.abort()
        raise errors.UndoError(
            f"cannot {kind} {change!r}: a later change touched "
            f"the same data ({exc}); nothing was changed") from None
    except Exception:
        tm.abort()
        raise
    return note
