"""Ctrl-C (and a SIGTERM turned into an exception) never lands inside a commit.

A KeyboardInterrupt raised in the middle of ZODB's two-phase commit leaves
the storage half way: FileStorage logs "Failure in _finish. Closing." and
closes itself, and every later statement fails with ``ValueError: closed``.
:func:`deferred` holds SIGINT and SIGTERM (when a Python handler would turn
them into an exception) for the few milliseconds of a commit or abort, then
delivers them to the handler that was installed before: the statement is
either committed or aborted as a whole, and the interrupt still arrives.

Signal handlers can only be changed in the main thread; other threads never
receive signals in Python, so they need nothing.
"""

import signal
import threading
from contextlib import contextmanager

#: Signals held while a commit runs, when their handler is a Python callable.
HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred():
    """Hold SIGINT/SIGTERM for the duration of the block, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = _hold(pending)
    try:
        yield
    finally:
        _restore(previous)
        for signum, frame in pending:
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)


def _hold(pending):
    """Install recording handlers; return the handlers they replace."""
    previous = {}
    for signum in HELD:
        handler = signal.getsignal(signum)
        if callable(handler):  # SIG_DFL / SIG_IGN / None: nothing Python would raise
            previous[signum] = handler
            signal.signal(signum, lambda num, frame: pending.append((num, frame)))
    return previous


def _restore(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler)
