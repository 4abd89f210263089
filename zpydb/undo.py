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
* **undo(id)** of one earlier entry: the log is walked back to it, noting which
  newer entry cancelled which (an ``undo`` cancels its target, a ``redo`` its
  ``undo``).  Following that chain from the entry gives the entry that carries
  its effect now: an even number of steps and the change is in effect, so that
  entry is undone (an ``undo`` entry is *redone*: its change comes back); an
  odd number and the change is already undone: UndoError, nothing changed.
  What it commits is an ordinary ``undo``/``redo`` entry with its target, so
  ``undo()``/``redo()`` afterwards read the log exactly as before: ``redo()``
  re-applies what ``undo(id)`` took away, ``undo()`` takes the newest change
  still in effect.

Every entry's ``id`` (in :func:`history`) is its transaction id in hex, the
same id time travel takes (``db.at(id)``, timetravel.py).

Because the state is the log itself, it is the same for every client and
survives restarts.  Packing the storage trims the log, and with it how far back
undo can go.

Notes name the original change: ``undo: db['x'] = 1``, and redoing it
``redo: db['x'] = 1`` (not ``redo: undo: ...``).  Inside an open ``lock()``,
``transaction()`` or ``atomic`` block of the same thread, undo/redo/history are
refused: undo commits on its own connection, behind the block's snapshot, so
the block would then commit on top of (or conflict with) a change it never saw.
"""

import base64
import binascii
import datetime
import re

from ZODB.POSException import POSKeyError
from ZODB.POSException import UndoError as POSUndoError

from . import errors, interrupts, nodes, written
from .session import DATA_KEY
from .transactions import describe_transaction
from .translate import translate_errors

TARGET_KEY = "zpydb_target"
BATCH = 100
MAX_BATCH = 10_000
MAX_WALK = 1_000_000
#: Log entries that are changes of the data (``history()`` lists them).
CHANGES = ("write", "undo", "redo")
HEX_ID = re.compile(r"[0-9a-f]{16}")


def undo(session, change=None, user=None):
    """Undo the newest change still in effect, or the change ``change`` (an id).

    UndoError when there is none, when ``change`` is already undone or when a
    later change touched the same data (nothing is changed then).  ``user``:
    recorded as the undo's user (None: the OS user).  Returns the undo's note
    (``undo: db['x'] = 1``); ``db.undo()`` itself returns None.
    """
    with interrupts.deferred():  # Ctrl-C between statements, never inside one
        if change is None:
            target, kind = _find(session, _undo_target, "nothing to undo"), "undo"
        else:
            target, kind = _find_change(session, parse_id(change, "undo"))
        interrupts.checkpoint()
        return _apply(session, target, kind, user)


def redo(session, user=None):
    """Re-apply the most recently undone change; UndoError when there is none.

    Returns the redo's note (``redo: db['x'] = 1``)."""
    with interrupts.deferred():
        target = _find(session, _redo_target, "nothing to redo")
        interrupts.checkpoint()
        return _apply(session, target, "redo", user)


def history(session, n=10):
    """The newest ``n`` zpydb changes, newest first, as plain dicts."""
    _check_count(n)
    if n == 0:
        return []
    _require_undo(session)
    changes = []
    with interrupts.deferred():
        for entry in _entries(session):
            if entry.get(DATA_KEY) in CHANGES:
                changes.append(_describe(entry))
                if len(changes) >= n:
                    break
    return changes


def history_before(session, n, before):
    """:func:`history` as it was before transaction id ``before`` (``db.at(t).history()``).

    The log is read newest first, so the entries after ``before`` are walked over.
    """
    _check_count(n)
    if n == 0:
        return []
    _require_undo(session)
    changes = []
    with interrupts.deferred():
        for entry in _entries(session):
            if entry.get(DATA_KEY) in CHANGES and tid_of(entry) < before:
                changes.append(_describe(entry))
                if len(changes) >= n:
                    break
    return changes


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise errors.BadArgumentError(
            "db", f"history(n) needs a whole number n >= 0, not {nodes.short_repr(n, 40)}")


def tid_of(entry):
    """The transaction id (8 bytes) of an undo log entry.

    FileStorage, ZEO (which passes FileStorage's on) and RelStorage all make
    the log id the base64 of the transaction id."""
    raw = entry["id"]
    return base64.decodebytes(raw if isinstance(raw, bytes) else raw.encode("ascii"))


def parse_id(change, what):
    """An id from ``history()`` (16 hex digits) or a history entry -> 8-byte tid."""
    if isinstance(change, dict) and "id" in change:
        change = change["id"]
    if isinstance(change, str) and HEX_ID.fullmatch(change.lower()):
        return binascii.unhexlify(change.lower())
    raise errors.BadArgumentError(
        "db", f"{what}(id) takes an id from db.history() (16 hex digits) or a history "
              f"entry, not {nodes.short_repr(change, 60)}")


def _describe(entry):
    return {
        "id": tid_of(entry).hex(),
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
    """The undo log, newest first, in batches (bounded by MAX_WALK entries).

    Each batch is twice the size of the one before (up to MAX_BATCH): FileStorage
    finds entry ``first`` by walking back from the newest, so a walk deep into
    the log in equal batches would cost the square of its length.
    """
    first, size = 0, BATCH
    with translate_errors(session.name):
        while first < MAX_WALK:
            batch = session.db.undoInfo(first, first + size)
            yield from batch
            if len(batch) < size:
                return
            first += size
            size = min(size * 2, MAX_BATCH)


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


def _find_change(session, tid):
    """The entry to undo (or redo) so that the change ``tid`` stops being in effect.

    Walks the log back to ``tid``, noting each entry's canceller, then follows
    the chain (see the module docstring).  Returns (entry, "undo" | "redo").
    """
    _require_undo(session)
    shown = tid.hex()
    cancellers = {}  # log id -> the (oldest) newer entry that cancelled it
    for entry in _entries(session):
        kind = entry.get(DATA_KEY)
        if tid_of(entry) == tid:
            break
        if kind in ("undo", "redo") and entry.get(TARGET_KEY) is not None:
            cancellers[entry[TARGET_KEY]] = entry
    else:
        raise errors.UndoError(
            f"no change {shown} in the undo log (not an id of this database, or packed "
            f"away); nothing was changed")
    if kind not in CHANGES:
        raise errors.UndoError(f"{shown} is not a change of the data (a {kind or 'raw'} "
                               f"transaction); nothing was changed")
    current, steps = entry, 0
    while current["id"] in cancellers:
        current, steps = cancellers[current["id"]], steps + 1
    if steps % 2:
        done = "redone" if kind == "undo" else "undone"
        raise errors.UndoError(
            f"{shown} ({_text(entry.get('description', ''))}) is already {done} by "
            f"{tid_of(current).hex()} ({_text(current.get('description', ''))}); nothing "
            f"was changed")
    return current, ("redo" if current.get(DATA_KEY) == "undo" else "undo")


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
            # it changes back what the target changed: the same paths (written.py)
            paths = entry.get(written.KEY)
            describe_transaction(txn, note, kind, user=user, **{TARGET_KEY: entry["id"]},
                                 **({written.KEY: paths} if isinstance(paths, (list, tuple))
                                    else {}))
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
