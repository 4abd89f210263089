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
the application's handler when the statement ends.  The holding is done by a
:class:`Guard` the first statement puts around those handlers and leaves there:
between statements it passes each signal straight on.  A statement
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
receive signals in Python, so they need nothing (a child process another
thread forks mid-statement forgets the main thread's holds: they would never end).  Installing the guard cannot
be cut half way either: a signal before it is in reaches the application's
handler (no statement has begun), one after it is held, and each swap is
retried until it holds.
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
#: How many holds were open when :func:`_deliver` began handing held signals
#: on (innermost call last; 0: none).  A Guard the application's handler passes
#: a signal on to (a handler that saved the guard it replaced) passes it on too
#: instead of holding it again; only a hold begun since (a statement the handler
#: itself runs) holds signals.
_handed_on_at = [0]

#: How the handlers are read and installed: ``_signal``'s C functions, without
#: the enum conversions of ``signal.signal``/``getsignal`` (3 µs vs 0.3 µs).
#: Module attributes so that tests can inject a signal at a precise swap.
_set_handler = _c_signal.signal
_get_handler = _c_signal.getsignal


class Guard:
    """The SIGINT/SIGTERM handler a statement leaves in place: it passes every
    signal on to the handler it replaced (``previous``), except while a
    statement holds signals, when the innermost hold takes it.

    Swapping the handlers in and out around every statement cost two
    ``sigaction`` calls and their checks, 2.5 µs, a quarter of a cached read.
    A guard is installed once (by the first statement of the main thread, and
    again when the application installed another handler since: that one is
    wrapped in turn), so a statement only looks at the two handlers (0.1 µs).
    Between statements a signal reaches the application's handler at once,
    through this one call; ``signal.getsignal()`` shows the guard (its
    ``previous`` is the application's handler), and restoring a handler
    saved earlier, a guard included, works as it did.
    """

    __slots__ = ("previous",)

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, signum, frame):
        if len(_holds) > _handed_on_at[-1]:
            _holds[-1].take(signum, frame)
        else:
            self.previous(signum, frame)

    def __repr__(self):
        return f"<zpydb.interrupts.Guard around {self.previous!r}>"


class _Hold:
    __slots__ = ("commit", "pending", "broken")

    def __init__(self, commit):
        self.commit = commit  # True: a two-phase commit runs (hold on to the first Ctrl-C)
        self.pending = []     # (signum, frame) received while held
        self.broken = False   # a Ctrl-C broke into this commit's wait already

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

    The outermost hold makes sure the :class:`Guard` is in place; a hold inside
    it (the commit inside a statement) takes the signals that arrive while it
    is the innermost (with its own ``commit`` rule) and hands what it still
    holds to the hold around it when it ends.
    """

    __slots__ = ("commit", "hold")

    def __init__(self, commit=False):
        self.commit = commit
        self.hold = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        hold = self.hold = _Hold(self.commit)
        _holds.append(hold)
        if len(_holds) == 1:
            try:
                _guard()
            except BaseException:  # a signal before the guard was in: no statement yet
                self.hold = None
                _end(hold)
                raise
        return None

    def __exit__(self, exc_type, exc, tb):
        hold, self.hold = self.hold, None
        if hold is not None:
            _end(hold)
        return False


def _guard():
    """Put a :class:`Guard` around each held signal's handler, unless one is there.

    Only a Python callable is guarded: SIG_DFL, SIG_IGN and None raise nothing
    in Python code, so there is nothing to hold (SIGTERM's default ends the
    process, as it would without zpydb)."""
    for signum in HELD:
        handler = _get_handler(signum)
        if type(handler) is not Guard and callable(handler):
            _swap(signum, Guard(handler))


_users = 0  # open databases (Session): the last one to close takes the guards out
_users_lock = threading.Lock()


def retain():
    """A database was opened: its statements may put the guards in."""
    global _users
    with _users_lock:
        _users += 1


def release():
    """A database was closed.  The last one takes the guards out again, so that
    ``signal.getsignal()`` shows the application's own handlers and code that
    looks for Python's default one finds it (``asyncio.run`` installs its own
    SIGINT handler only then).  Only the main thread can change handlers; a
    guard left by a close in another thread passes every signal on."""
    global _users
    with _users_lock:
        _users = max(0, _users - 1)
        last = _users == 0
    if last and not _holds and threading.current_thread() is threading.main_thread():
        for signum in HELD:
            handler = _get_handler(signum)
            if type(handler) is Guard:
                _swap(signum, handler.previous)


def _end(hold):
    if _holds and _holds[-1] is hold:
        _holds.pop()
    elif hold in _holds:
        _holds.remove(hold)
    if _holds:  # nested: the hold around it delivers what is left
        _holds[-1].pending.extend(hold.pending)
        return
    _deliver(hold.pending)


def checkpoint():
    """Deliver a held Ctrl-C now: the caller is at a point where stopping is safe.

    Only a point that is safe for *every* enclosing hold may call this (a
    statement before its commit, not a commit half way); the signal goes to
    the application's handler (the one the guard passes signals on to), which
    raises.
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
    if broke_commit and any(num == signal.SIGINT for num, _frame in pending):
        raise CommitInterrupted("interrupted while the commit waited for the server: whether "
                          "the change was applied is unknown; see db.history()")
    _deliver(pending)


def _waiting_for_server(frame):
    """Is the interrupted frame (or a caller of it) ZEO's wait for a server reply?"""
    while frame is not None:
        if frame.f_code.co_filename.endswith(_SERVER_WAITS):
            return True
        frame = frame.f_back
    return False


def _forget_holds_of_other_threads():
    """In a child forked by a thread other than the one whose statements hold
    signals: those holds came along in memory, but their statements run on in
    the parent only, and nothing in the child would ever end them (every signal
    would be held for good).  The forking thread is the child's main thread now."""
    global _holding_thread
    if threading.get_ident() != _holding_thread:
        del _holds[:]
        del _handed_on_at[1:]
        _holding_thread = threading.get_ident()


#: The thread whose statements hold signals (the main thread; in a child forked
#: by another thread, that thread).
_holding_thread = threading.main_thread().ident
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_holds_of_other_threads)


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


def _deliver(pending):
    """Hand held signals to the application's handlers, in the order they came."""
    for signum, frame in pending:
        handler = _get_handler(signum)
        if type(handler) is Guard:
            handler = handler.previous
        if callable(handler):
            _handed_on_at.append(len(_holds))
            try:
                handler(signum, frame)
            finally:
                _handed_on_at.pop()
