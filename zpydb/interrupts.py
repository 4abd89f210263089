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

A statement can also wait for a ZEO server that stopped answering (paused, a
network black hole): ZEO waits for a connected server's reply without a timeout.
A Ctrl-C that finds the statement waiting there is raised at once (as it always
was: the wait is an abortable point, the statement aborts).  During a commit the
second Ctrl-C breaks the wait, and every further one the next wait (the abort
that follows asks the same silent server); the statement then ends with
:class:`~zpydb.errors.CommitInterrupted`: whether it was applied is unknown.

Signal handlers can only be changed in the main thread; other threads never
receive signals in Python, so they need nothing.  Swapping the handlers cannot
be cut half way either (a signal in the middle could leave a handler that
records signals forever): each swap is retried until it holds.
"""

import os
import signal
import threading
from contextlib import contextmanager

from .errors import CommitInterrupted

#: Signals held while a statement runs, when their handler is a Python callable.
HELD = (signal.SIGINT, signal.SIGTERM)

#: Source files whose frames mean "the main thread waits for the ZEO server".
_SERVER_WAITS = (os.path.join("ZEO", "asyncio", "client.py"),
                 os.path.join("ZEO", "asyncio", "futures.py"))

_holds = []  # the main thread's nested holds, outermost first


class _Hold:
    def __init__(self, commit):
        self.commit = commit  # True: a two-phase commit runs (hold on to the first Ctrl-C)
        self.pending = []     # (signum, frame) received while held
        self.previous = {}    # signum -> handler installed before this hold
        self.broken = False   # a Ctrl-C broke into this commit's wait already

    def record(self, signum, frame):
        """The handler while held: remember the signal; raise now only while waiting."""
        self.pending.append((signum, frame))
        if not _waiting_for_server(frame):
            return
        if self.commit and not self.broken and len(self.pending) < 2:
            return  # the first Ctrl-C of a commit waits for the commit
        self.broken = self.commit
        _deliver_all_now(broke_commit=self.commit)


@contextmanager
def deferred(commit=False):
    """Hold SIGINT/SIGTERM for the duration of the block, then deliver them.

    ``commit``: the block is a two-phase commit; a wait on the server inside it
    gives way to the second signal, not the first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hold = _Hold(commit)
    try:
        _install(hold)
        _holds.append(hold)
        yield
    finally:
        if hold in _holds:
            _holds.remove(hold)
        _restore(hold.previous)
        _deliver(hold.pending, hold.previous)


def checkpoint():
    """Deliver a held Ctrl-C now: the caller is at a point where stopping is safe.

    Only a point that is safe for *every* enclosing hold may call this (a
    statement before its commit, not a commit half way); the signal goes to
    the handler installed before the outermost hold, which raises.
    """
    if _holds and threading.current_thread() is threading.main_thread():
        _deliver_all_now()


def _deliver_all_now(broke_commit=False):
    pending = [item for hold in _holds for item in hold.pending]
    for hold in _holds:
        del hold.pending[:]
    if not pending:
        return
    outermost = _holds[0].previous
    if broke_commit and any(num == signal.SIGINT for num, _frame in pending):
        raise CommitInterrupted("interrupted while the commit waited for the server: whether "
                          "the change was applied is unknown; see db.history()")
    _deliver(pending, outermost)


def _waiting_for_server(frame):
    """Is the interrupted frame (or a caller of it) ZEO's wait for a server reply?"""
    while frame is not None:
        if frame.f_code.co_filename.endswith(_SERVER_WAITS):
            return True
        frame = frame.f_back
    return False


def _install(hold):
    """Record signals instead of raising; remember the handlers replaced."""
    for signum in HELD:
        handler = signal.getsignal(signum)
        if callable(handler):  # SIG_DFL / SIG_IGN / None: nothing Python would raise
            hold.previous[signum] = handler
            _swap(signum, hold.record)


def _restore(previous):
    """Put every handler back, even if a signal's handler raises in between."""
    raised = None
    for signum, handler in previous.items():
        try:
            _swap(signum, handler)
        except BaseException as exc:  # the swap itself held; restore the others first
            raised = raised or exc
    if raised is not None:
        raise raised


def _swap(signum, handler):
    """``signal.signal`` that holds even if a signal's handler raises around it."""
    raised = None
    for _ in range(100):
        try:
            signal.signal(signum, handler)
            if signal.getsignal(signum) is handler:
                break
        except BaseException as exc:  # a handler that ran between two bytecodes
            raised = raised or exc
    if raised is not None:
        raise raised


def _deliver(pending, handlers):
    for signum, frame in pending:
        handler = handlers.get(signum)
        if callable(handler):
            handler(signum, frame)
