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

try:  # the C functions under signal.signal/getsignal, without their enum wrapping
    import _signal as _c_signal
except ImportError:  # pragma: no cover - not CPython
    _c_signal = signal

from .errors import CommitInterrupted

#: Signals held while a statement runs, when their handler is a Python callable.
HELD = (signal.SIGINT, signal.SIGTERM)

#: Source files whose frames mean "the main thread waits for the ZEO server".
_SERVER_WAITS = (os.path.join("ZEO", "asyncio", "client.py"),
                 os.path.join("ZEO", "asyncio", "futures.py"))

_holds = []  # the main thread's nested holds, outermost first

#: How the handlers are read and swapped: ``_signal``'s C functions, because
#: every statement swaps them twice and ``signal.signal``/``getsignal`` wrap
#: each call in enum conversions that cost more than the swap (3 µs vs 0.3 µs).
#: Module attributes so that tests can inject a signal at a precise swap.
_set_handler = _c_signal.signal
_get_handler = _c_signal.getsignal


class _Hold:
    __slots__ = ("commit", "pending", "previous", "broken", "handler")

    def __init__(self, commit):
        self.commit = commit  # True: a two-phase commit runs (hold on to the first Ctrl-C)
        self.pending = []     # (signum, frame) received while held
        self.previous = {}    # signum -> handler installed before this hold (outermost only)
        self.broken = False   # a Ctrl-C broke into this commit's wait already
        self.handler = self.record  # one bound method: installed and compared by identity

    def record(self, signum, frame):
        """The handler the outermost hold installs: the innermost hold takes the signal."""
        (_holds[-1] if _holds else self).take(signum, frame)

    def take(self, signum, frame):
        """Remember the signal; raise now only while waiting for the server."""
        self.pending.append((signum, frame))
        if not _waiting_for_server(frame):
            return
        commit = self.commit() if callable(self.commit) else self.commit
        if commit and not self.broken and len(self.pending) < 2:
            return  # the first Ctrl-C of a commit waits for the commit
        self.broken = commit
        _deliver_all_now(broke_commit=commit)


class deferred:
    """Hold SIGINT/SIGTERM for the duration of the ``with`` block, then deliver them.

    ``commit``: the block is a two-phase commit; a wait on the server inside it
    gives way to the second signal, not the first.  A function instead of True
    is asked when a signal comes: False while the commit can still be given up
    with nothing applied (a commit that has not voted: session.py's VoteMark),
    then a wait gives way to the first signal.  A class rather than a
    ``@contextmanager`` generator: every statement enters one or two of these,
    and the generator machinery cost more than the hold itself.

    Only the outermost hold swaps the handlers; a hold inside it (the commit
    inside a statement) is pushed on the stack, takes the signals that arrive
    while it is the innermost (with its own ``commit`` rule) and hands what it
    still holds to the hold around it when it ends.
    """

    __slots__ = ("commit", "hold")

    def __init__(self, commit=False):
        self.commit = commit
        self.hold = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        hold = self.hold = _Hold(self.commit)
        if _holds:  # nested: the outermost hold's handlers are in place
            _holds.append(hold)
            return None
        try:
            _install(hold)
            _holds.append(hold)
        except BaseException:  # a signal between two swaps: put everything back
            _end(hold)
            raise
        return None

    def __exit__(self, exc_type, exc, tb):
        hold, self.hold = self.hold, None
        if hold is not None:
            _end(hold)
        return False


def _end(hold):
    if hold in _holds:
        _holds.remove(hold)
    if _holds and not hold.previous:  # nested: the hold around it delivers what is left
        _holds[-1].pending.extend(hold.pending)
        return
    _restore(hold.previous)
    _deliver(hold.pending, hold.previous)


def checkpoint():
    """Deliver a held Ctrl-C now: the caller is at a point where stopping is safe.

    Only a point that is safe for *every* enclosing hold may call this (a
    statement before its commit, not a commit half way); the signal goes to
    the handler installed before the outermost hold, which raises.
    """
    if _holds and threading.current_thread() is threading.main_thread():
        for hold in _holds:
            if hold.pending:
                _deliver_all_now()
                return


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
        handler = _get_handler(signum)
        if callable(handler):  # SIG_DFL / SIG_IGN / None: nothing Python would raise
            hold.previous[signum] = handler
            _swap(signum, hold.handler)


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
            _set_handler(signum, handler)
            if _get_handler(signum) is handler:
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
