"""Helpers of the reliability suite (tests/test_reliability.py).

* :mod:`tests.reliability.writer`  - a child process that writes in a loop and
  logs every attempt, acknowledgement and error (the Jepsen-style history);
* :mod:`tests.reliability.history` - reads that log back and checks it against
  the data: lost, duplicated, half-applied, untruthful errors;
* :mod:`tests.reliability.probe`   - one write with a Ctrl-C injected inside the
  two-phase commit (a deterministic version of the random SIGINT attack);
* :mod:`tests.reliability.proxy`   - a TCP proxy that drops a ZEO connection at a
  chosen moment of a commit (reply of tpc_finish lost, vote never delivered);
* :mod:`tests.reliability.report`  - the figures of a run as a markdown table.

Sizes: the short version runs inside ``make test``; ``ZPYDB_TORTURE=1`` (``make
torture``) runs the long version.  Each test appends its figures as one JSON line
to ``$ZPYDB_RELIABILITY_RESULTS`` when that is set.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
TORTURE = os.environ.get("ZPYDB_TORTURE", "") not in ("", "0")
RESULTS = os.environ.get("ZPYDB_RELIABILITY_RESULTS")


def scale(short, long):
    """``short`` in ``make test``, ``long`` under ``ZPYDB_TORTURE=1``."""
    return long if TORTURE else short


def record(attack, **figures):
    """Append one attack's figures to $ZPYDB_RELIABILITY_RESULTS (if set)."""
    figures = {"attack": attack, "torture": TORTURE, **figures}
    if RESULTS:
        with open(RESULTS, "a") as out:
            out.write(json.dumps(figures, sort_keys=True) + "\n")
    return figures


def child_env():
    """Environment for child processes: the repo importable, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def fstest(path, timeout=120):
    """``python -m ZODB.scripts.fstest PATH``: (ok, output)."""
    result = subprocess.run([sys.executable, "-m", "ZODB.scripts.fstest", str(path)],
                            capture_output=True, text=True, timeout=timeout)
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0 and not output, output


def wait_until(predicate, timeout, what, interval=0.02):
    """Poll ``predicate()`` until true; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
