"""interrupts.py: Ctrl-C and SIGTERM held per statement, and the ways out of a hold.

Found by the adversarial run against issues 10-12 (each failed before its fix):
a statement stuck on a silent server must still yield to Ctrl-C, and a signal in the
middle of swapping the handlers must not leave a recording handler behind.
Servers on 127.0.0.1 and free ports, stopped by PID; every wait bounded.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

import zpydb
from zpydb import interrupts
from tests.servers import ZeoServer

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(code, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([PYTHON, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=env)


_HUNG_CHILD = r'''
import sys, time, zpydb
db = zpydb.connect(sys.argv[1], wait_timeout=5)
db['x'] = 0
print("ready", flush=True)
sys.stdin.readline()
t = time.monotonic()
try:
    if sys.argv[2] == "write":
        db['x'] = 1
    elif sys.argv[2] == "inc":
        db['x'] += 1
    else:
        db['x'] + 0
    print("returned", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
except Exception as exc:
    print("error", type(exc).__name__, flush=True)
'''


@pytest.mark.parametrize("what", ["write", "inc", "read"])
def test_ctrl_c_escapes_a_statement_stuck_on_a_hung_server(zeo_server, what):
    """A ZEO server that stops answering (SIGSTOP: swapped out, paused, a network
    black hole) leaves a statement waiting in ZEO's io_call with no timeout.
    Before 8de9342 Ctrl-C got the user out at once; now interrupts.deferred()
    holds the Ctrl-C for the whole statement, and no checkpoint is ever reached:
    the process can only be SIGKILLed ("no hang" promise of interrupts.py)."""
    child = _child(_HUNG_CHILD, zeo_server.url, what)
    try:
        assert child.stdout.readline().strip() == "ready"
        os.kill(zeo_server.pid, signal.SIGSTOP)
        child.stdin.write("go\n")
        child.stdin.flush()
        time.sleep(1.0)
        # A read waits for its ping: one Ctrl-C.  A blind write (``= 1``, ``+= 1``)
        # skips the ping and waits in its commit, before the vote: the first Ctrl-C
        # breaks that wait (nothing can have been applied), the second the abort
        # ZODB then sends to the same silent server (session.py, VoteMark).
        allowed = 1 if what == "read" else 2
        out = None
        for _ in range(allowed):
            child.send_signal(signal.SIGINT)
            try:
                out, _ = child.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        if out is None:
            pytest.fail(f"{what}: {allowed} Ctrl-C did not interrupt a statement stuck on a "
                        f"hung server (it is held by interrupts.deferred)")
        assert "KeyboardInterrupt" in out, out
        os.kill(zeo_server.pid, signal.SIGCONT)
        with zpydb.connect(zeo_server.url, wait_timeout=10) as db:
            assert db['x'].value() == 0  # the interrupted statement applied nothing
    finally:
        os.kill(zeo_server.pid, signal.SIGCONT)
        if child.poll() is None:
            child.kill()
            child.wait(10)


class _Term(Exception):
    pass


def _raise_term(signum, frame):
    raise _Term()


@pytest.fixture
def term_handler():
    previous = signal.signal(signal.SIGTERM, _raise_term)
    previous_int = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, previous)
    signal.signal(signal.SIGINT, previous_int)


def _inject(monkeypatch, when, send):
    """Wrap the handler swap interrupts.py calls (``interrupts._set_handler``, the C
    ``signal.signal``): when ``when(signum, handler)`` is true once, send ``send`` to
    this process right after the handler changed."""
    real = interrupts._set_handler
    armed = [True]

    def signal_then_send(signum, handler):
        old = real(signum, handler)
        if armed[0] and when(signum, handler):
            armed[0] = False
            os.kill(os.getpid(), send)
        return old

    monkeypatch.setattr(interrupts, "_set_handler", signal_then_send)
    return armed


def _assert_handlers_work():
    assert signal.getsignal(signal.SIGTERM) is _raise_term, (
        f"SIGTERM handler left as {signal.getsignal(signal.SIGTERM)!r}: every later SIGTERM "
        f"is swallowed")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, (
        f"SIGINT handler left as {signal.getsignal(signal.SIGINT)!r}: every later Ctrl-C "
        f"is swallowed")


def test_ctrl_c_while_handlers_are_restored_leaves_sigterm_working(fdb, term_handler,
                                                                   monkeypatch):
    """interrupts.deferred(): _restore() puts SIGINT's handler back first; a Ctrl-C that
    arrives before SIGTERM's is back raises out of _restore and leaves the hold's
    lambda as the SIGTERM handler for good: every later SIGTERM is silently dropped."""
    fdb['x'] = 0
    armed = _inject(monkeypatch, lambda s, h: s == signal.SIGINT and h is signal.default_int_handler,
                    signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        fdb['x'] = 1
    monkeypatch.undo()
    assert not armed[0]
    _assert_handlers_work()


def test_sigterm_while_handlers_are_installed_leaves_ctrl_c_working(fdb, term_handler,
                                                                    monkeypatch):
    """interrupts._install(): SIGINT's hold handler goes in first; a SIGTERM (turned into
    an exception by the application) before SIGTERM's is in raises out of _install,
    outside deferred()'s try, and the SIGINT hold handler stays: Ctrl-C never works again."""
    fdb['x'] = 0
    armed = _inject(monkeypatch, lambda s, h: s == signal.SIGINT and h is not signal.default_int_handler,
                    signal.SIGTERM)
    with pytest.raises(_Term):
        fdb['x'] = 1
    monkeypatch.undo()
    assert not armed[0]
    _assert_handlers_work()
