"""Ctrl-C (and a SIGTERM turned into an exception) lands between statements, never inside one.

A KeyboardInterrupt raised at an arbitrary line of ZODB leaves it half way:

* inside the two-phase commit, FileStorage logs "Failure in _finish. Closing."
  and closes itself; every later statement fails with ``ValueError: closed``;
* between ``FilePool.get()`` taking a file and the ``try`` that gives it back,
  the file stays "in use" for good and the next commit waits for it forever;
* between ``PersistentList.append`` changing the list and setting
  ``_p_changed``, the abort does not see the change and the NEXT commit on that
  connection stores it.

So every statement runs inside :func:`deferred`, which holds SIGINT and SIGTERM
(when a Python handler would turn them into an exception) and delivers them to
the handler that was installed before when the statement ends.  A statement
that has not reached its commit yet need not run to the end: it calls
:func:`checkpoint` at its safe points (before the commit, between retries),
which delivers a held Ctrl-C at once -- the statement is aborted as a whole and
nothing of it is applied.  A Ctrl-C that arrives during the commit waits the few
milliseconds the commit takes: the statement is applied as a whole.

Signal handlers can only be changed in the main thread; other threads never
receive signals in Python, so they need nothing.
"""

import signal
import threading
from contextlib import contextmanager

#: Signals held while a statement runs, when their handler is a Python callable.
HELD = (signal.SIGINT, signal.SIGTERM)

_holds = []  # the main thread's nested holds, outermost first


class _Hold:
    def __init__(self):
        self.pending = []   # (signum, frame) received while held
        self.previous = {}  # signum -> handler installed before this hold


@contextmanager
def deferred():
    """Hold SIGINT/SIGTERM for the duration of the block, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hold = _Hold()
    _install(hold)
    _holds.append(hold)
    try:
        yield
    finally:
        _holds.remove(hold)
        _restore(hold.previous)
        _deliver(hold)


def checkpoint():
    """Deliver a held Ctrl-C now: the caller is at a point where stopping is safe.

    Only a point that is safe for *every* enclosing hold may call this (a
    statement before its commit, not a commit half way); the signal goes to
    the handler installed before the outermost hold, which raises.
    """
    if not _holds or threading.current_thread() is not threading.main_thread():
        return
    pending = [item for hold in _holds for item in hold.pending]
    if not pending:
        return
    for hold in _holds:
        del hold.pending[:]
    outermost = _holds[0].previous
    for signum, frame in pending:
        handler = outermost.get(signum)
        if callable(handler):
            handler(signum, frame)


def _install(hold):
    """Record signals instead of raising; remember the handlers replaced."""
    for signum in HELD:
        handler = signal.getsignal(signum)
        if callable(handler):  # SIG_DFL / SIG_IGN / None: nothing Python would raise
            hold.previous[signum] = handler
            signal.signal(signum, lambda num, frame: hold.pending.append((num, frame)))


def _restore(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _deliver(hold):
    pending, hold.pending = hold.pending, []
    for signum, frame in pending:
        handler = hold.previous.get(signum)
        if callable(handler):
            handler(signum, frame)
