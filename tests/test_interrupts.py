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
    # unguarded: each test sees the first statement put the guards in
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
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
            _let_signals_in()
        return old

    monkeypatch.setattr(interrupts, "_set_handler", signal_then_send)
    return armed


def _let_signals_in():
    """A signal sent to this process runs its Python handler at the next bytecode
    boundary of the main thread; a few bounded sleeps make sure it had its chance."""
    for _ in range(50):
        time.sleep(0.001)


def _assert_handlers_work():
    """Between statements each signal reaches the application's handler at once, and
    inside a statement it is held until the statement ended (the guard is in place)."""
    with pytest.raises(_Term):
        os.kill(os.getpid(), signal.SIGTERM)
        _let_signals_in()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        _let_signals_in()
    for signum in (signal.SIGINT, signal.SIGTERM):
        assert isinstance(signal.getsignal(signum), interrupts.Guard), signal.getsignal(signum)


def test_sigterm_while_the_guard_goes_in_leaves_both_signals_working(fdb, term_handler,
                                                                    monkeypatch):
    """The first statement puts a Guard around SIGINT's handler, then SIGTERM's.  A
    SIGTERM (an exception in this application) between the two reaches the application
    at once, before the statement began: nothing of it is applied, and the next
    statement guards what is still unguarded."""
    armed = _inject(monkeypatch, lambda s, h: s == signal.SIGINT and isinstance(h, interrupts.Guard),
                    signal.SIGTERM)
    with pytest.raises(_Term):
        fdb['x'] = 1
    monkeypatch.undo()
    assert not armed[0]
    assert interrupts._holds == []
    with pytest.raises(zpydb.KeyNotFoundError):
        fdb['x'].value()
    fdb['x'] = 2
    assert fdb['x'].value() == 2
    _assert_handlers_work()


def test_ctrl_c_while_the_guard_goes_in_is_held_until_the_statement_ended(fdb, term_handler,
                                                                         monkeypatch):
    """A Ctrl-C once SIGINT's guard is in (while SIGTERM's goes in) belongs to the
    statement: held, then raised at its first safe point, with nothing applied."""
    armed = _inject(monkeypatch, lambda s, h: s == signal.SIGTERM and isinstance(h, interrupts.Guard),
                    signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as raised:
        fdb['x'] = 1
    monkeypatch.undo()
    assert not armed[0]
    assert "_deliver" in [entry.name for entry in raised.traceback]  # held, then delivered
    with pytest.raises(zpydb.KeyNotFoundError):
        fdb['x'].value()
    _assert_handlers_work()


class _SendsSignal(dict):
    """A mapping that sends a signal to this process while zpydb reads it to store it."""

    def __init__(self, signum):
        super().__init__(a=1)
        self.signum = signum

    def __iter__(self):
        os.kill(os.getpid(), self.signum)
        _let_signals_in()
        return super().__iter__()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_statement_is_held_and_nothing_is_applied(fdb, term_handler, signum):
    fdb['x'] = 0
    with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else _Term) as raised:
        fdb['x'] = _SendsSignal(signum)
    assert "_deliver" in [entry.name for entry in raised.traceback]
    assert fdb['x'].value() == 0
    _assert_handlers_work()


def test_the_applications_later_handlers_are_honoured(fdb, term_handler):
    """A handler installed after zpydb's guard gets the signals (and is guarded by the
    next statement); putting back a handler saved earlier, a guard included, works."""
    fdb['x'] = 0
    saved = signal.getsignal(signal.SIGINT)
    got = []
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    os.kill(os.getpid(), signal.SIGINT)
    _let_signals_in()
    fdb['x'] = 1  # guards the new handler
    os.kill(os.getpid(), signal.SIGINT)
    _let_signals_in()
    assert got == [signal.SIGINT, signal.SIGINT]
    assert isinstance(signal.getsignal(signal.SIGINT), interrupts.Guard)
    signal.signal(signal.SIGINT, saved)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        _let_signals_in()
    assert got == [signal.SIGINT, signal.SIGINT]
    fdb['x'] = 2
    assert fdb['x'].value() == 2


_LAST_CLOSE_CHILD = r'''
import asyncio, signal, sys, zpydb
from zpydb import interrupts
first = zpydb.connect(sys.argv[1] + "/a.fs")
second = zpydb.connect(sys.argv[1] + "/b.fs")
first["x"] = 1
assert isinstance(signal.getsignal(signal.SIGINT), interrupts.Guard)
first.close()
assert isinstance(signal.getsignal(signal.SIGINT), interrupts.Guard), "second is open"
second["x"] = 2
second.close()
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

async def handler_in_the_loop():
    return signal.getsignal(signal.SIGINT)

assert asyncio.run(handler_in_the_loop()) is not signal.default_int_handler, "asyncio's"
print("ok", flush=True)
'''


def test_the_last_close_takes_the_guards_out(tmp_path):
    """While a database is open its statements keep the guards in; when the last one
    closes (in the main thread) the handlers are back as they were, so code that looks
    for Python's default handler (asyncio.run installs its own) finds it.  In a fresh
    process: the count of open databases is per process."""
    child = _child(_LAST_CLOSE_CHILD, str(tmp_path))
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip().endswith("ok"), out


def test_a_handler_that_passes_signals_on_to_the_guard_it_replaced(fdb, term_handler):
    """The common "log, then pass on" handler: the application saves
    ``signal.getsignal(SIGINT)`` (zpydb's Guard, once a statement ran), installs its
    own handler that calls the saved one, and the next statement guards that.  A
    Ctrl-C before the commit must still stop the statement with nothing applied, and
    the application's handler must run once per Ctrl-C.  Before the fix the held
    signal, handed on through the chain at the checkpoint, met the inner Guard while
    the statement still held signals and was held again: the statement was applied,
    then KeyboardInterrupt was raised, and the handler ran twice."""
    fdb['x'] = 0
    passed_on_to = signal.getsignal(signal.SIGINT)
    assert isinstance(passed_on_to, interrupts.Guard)
    calls = []

    def log_then_pass_on(signum, frame):
        calls.append(signum)
        passed_on_to(signum, frame)

    signal.signal(signal.SIGINT, log_then_pass_on)
    with pytest.raises(KeyboardInterrupt):
        fdb['x'] = _SendsSignal(signal.SIGINT)
    assert fdb['x'].value() == 0
    assert calls == [signal.SIGINT]
    with pytest.raises(KeyboardInterrupt):  # between statements: once, at once
        os.kill(os.getpid(), signal.SIGINT)
        _let_signals_in()
    assert calls == [signal.SIGINT, signal.SIGINT]
    fdb['x'] = 2
    assert fdb['x'].value() == 2


@pytest.mark.xfail(strict=True, reason=(
    "KNOWN, NOT FIXED (issue 13 attack): the Guard left around default_int_handler hides "
    "it from asyncio.Runner, which installs its own SIGINT handler (cancel the main task "
    "at its next await) only when signal.getsignal(SIGINT) IS signal.default_int_handler; "
    "unittest.installHandler checks the same. No small fix: a guard that is not in place "
    "between statements is the per-statement swap the Guard replaced (2.5 us)."))
def test_asyncio_run_after_a_statement_still_cancels_the_main_task(fdb, term_handler):
    """Without zpydb, a Ctrl-C inside asyncio.run() cancels the main task at its next
    await (synchronous code of the coroutine is never cut); after one zpydb statement
    the KeyboardInterrupt is raised wherever the main thread is instead."""
    import asyncio

    fdb['x'] = 0
    seen = []

    async def main():
        os.kill(os.getpid(), signal.SIGINT)
        _let_signals_in()
        seen.append("synchronous code went on")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled at the await")
            raise

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert seen == ["synchronous code went on", "cancelled at the await"]


class _WaitsWhileRead(dict):
    """A mapping whose reading (inside the statement storing it) waits for ``go``."""

    def __init__(self, reading, go):
        super().__init__(a=1)
        self.reading, self.go = reading, go

    def __iter__(self):
        self.reading.set()
        self.go.wait(30)
        return super().__iter__()


def test_a_process_forked_by_a_thread_during_a_statement_still_gets_ctrl_c(fdb, term_handler):
    """Another thread forks (a worker starting a subprocess with multiprocessing's fork)
    while the main thread is inside a statement.  The child's only thread is the forking
    one; the main thread's holds came along in memory but no statement of the child's
    will ever end them: before the fix the child held every Ctrl-C and SIGTERM for good
    (the inherited Guard saw a hold and recorded it)."""
    import threading

    fdb['x'] = 0
    reading, go, status = threading.Event(), threading.Event(), []

    def fork_then_interrupt_the_child():
        try:
            if not reading.wait(30):
                return
            pid = os.fork()
            if pid == 0:  # the child: exit 0 if Ctrl-C raised, 3 if it was swallowed
                code = 3
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    _let_signals_in()
                except KeyboardInterrupt:
                    code = 0
                os._exit(code)
            status.append(os.waitpid(pid, 0)[1])
        finally:
            go.set()

    forker = threading.Thread(target=fork_then_interrupt_the_child)
    forker.start()
    fdb['x'] = _WaitsWhileRead(reading, go)
    forker.join(60)
    assert [os.waitstatus_to_exitcode(s) for s in status] == [0]
    assert fdb['x'].value() == {'a': 1}
    _assert_handlers_work()


def test_a_statement_inside_the_applications_handler_holds_signals(fdb, term_handler):
    """A SIGTERM handler that records the shutdown in the database before raising runs
    while zpydb hands the held SIGTERM on; a Ctrl-C during that statement belongs to it
    (held, then raised at its safe point, nothing of it applied), not passed through
    at an arbitrary line as while signals are handed on to a chain of handlers."""
    fdb['x'] = 0
    passed_on_to = signal.getsignal(signal.SIGTERM)
    raised = []

    def record_then_pass_on(signum, frame):
        try:
            fdb['shutdown'] = _SendsSignal(signal.SIGINT)
        except KeyboardInterrupt as exc:
            raised.append([entry.name for entry in pytest.ExceptionInfo.from_exception(
                exc).traceback])
        passed_on_to(signum, frame)

    signal.signal(signal.SIGTERM, record_then_pass_on)
    with pytest.raises(_Term):
        fdb['x'] = _SendsSignal(signal.SIGTERM)
    assert len(raised) == 1 and raised[0][-1] == "_deliver", raised  # held, then delivered
    assert fdb['x'].value() == 0
    with pytest.raises(zpydb.KeyNotFoundError):
        fdb['shutdown'].value()
    _assert_handlers_work()
