"""A CPU hog for the concurrency tests: one busy-looping process per core.

CI runners and developer machines are shared and slow; the concurrency tests
must pass while every core is busy with something else.  This module lives in
the repository (CI has no helper scripts outside it)::

    from tests.load import CpuHog, cpu_hog      # cpu_hog: a module-scoped fixture
    from tests.load import worker_pool           # writer processes, one pool per module

    with CpuHog() as hog:                        # os.cpu_count() busy processes
        ...                                      # run the writers
    # stopped by PID on exit (SIGKILL, waited for, bounded)

Each hog is ``python -c <busy loop>`` that also ends by itself after
``lifetime`` seconds, so a test run that dies without its teardown (kill -9 of
pytest) leaves nothing spinning for long.  ``ZPYDB_TEST_CPU_HOG=0`` turns the
hog off for a quick local run; CI and ``make test`` keep it on.
"""

import atexit
import os
import signal
import subprocess
import sys
import time

import pytest

#: A hog ends by itself after this many seconds even if nobody stops it.
DEFAULT_LIFETIME = 900.0
STOP_TIMEOUT = 10.0

# Busy loop; looks at the clock only every 200,000 iterations so it stays a
# pure CPU burner, and quits once its lifetime is over.
_BUSY = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
n = 0
while True:
    n += 1
    if n % 200000 == 0 and time.monotonic() > end:
        break
"""


def enabled():
    return os.environ.get("ZPYDB_TEST_CPU_HOG", "1").strip().lower() not in ("0", "no", "off",
                                                                            "false")


class CpuHog:
    """``processes`` (default ``os.cpu_count()``) busy-looping child processes."""

    def __init__(self, processes=None, lifetime=DEFAULT_LIFETIME):
        self.count = processes if processes is not None else (os.cpu_count() or 1)
        self.lifetime = lifetime
        self.processes = []

    @property
    def pids(self):
        return [p.pid for p in self.processes]

    def start(self):
        if self.processes:
            raise RuntimeError("this CpuHog is already running")
        atexit.register(self.stop)
        for _ in range(self.count):
            self.processes.append(subprocess.Popen(
                [sys.executable, "-c", _BUSY, str(self.lifetime)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def running(self):
        """How many hogs are alive right now."""
        return sum(1 for p in self.processes if p.poll() is None)

    def cpu_seconds(self):
        """CPU time the hogs have used so far (from /proc; 0 where unavailable)."""
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        total = 0.0
        for process in self.processes:
            try:
                with open(f"/proc/{process.pid}/stat") as stream:
                    fields = stream.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self):
        """SIGKILL every hog by PID and reap it (bounded); returns how many were still alive."""
        atexit.unregister(self.stop)
        alive = 0
        for process in self.processes:
            if process.poll() is None:
                alive += 1
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self.processes = []
        return alive

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return f"<CpuHog {self.running()}/{self.count} busy, pids {self.pids}>"


class _NoHog:
    count = 0
    pids = []

    def running(self):
        return 0

    def cpu_seconds(self):
        return 0.0


@pytest.fixture(scope="module")
def cpu_hog():
    """Every core busy for the whole test module (off with ``ZPYDB_TEST_CPU_HOG=0``)."""
    if not enabled():
        yield _NoHog()
        return
    hog = CpuHog().start()
    try:
        yield hog
        # the load was really there the whole time: no hog died early
        assert hog.running() == hog.count, f"a CPU hog exited early: {hog!r}"
    finally:
        hog.stop()


def busy(hog=None):
    """A context manager: ``with busy(): ...`` (a no-op when the hog is turned off)."""
    if not enabled():
        return _NullContext()
    return hog or CpuHog()


class _NullContext:
    def __enter__(self):
        return _NoHog()

    def __exit__(self, *exc_info):
        return False


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    """Writer processes started once per test module (tests/workers.py ``WorkerPool``)."""
    from tests.workers import WorkerPool

    pool = WorkerPool(tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop()
