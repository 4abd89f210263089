"""One write with a Ctrl-C delivered inside the two-phase commit, then more writes.

    python -m tests.reliability.probe URL PHASE KIND [SIGNAL]

A deterministic version of the random SIGINT attack (in the spirit of SQLite's
fault injection): the storage method of ``PHASE`` is wrapped so that, once, the
process sends itself SIGINT at that point of the commit:

* ``vote``   - at the start of the storage's ``tpc_vote`` (first phase);
* ``finish`` - inside the second phase: FileStorage's ``_finish_finish`` (after the
               status byte is written: where ZODB logs "Failure in _finish. Closing."),
               or, over ZEO, the client's ``tpc_finish`` call to the server.

KIND is ``stmt`` (one autocommit append) or ``block`` (10 appends in
``db.transaction()``).  Prints one JSON report: whether the KeyboardInterrupt
reached the caller, what the next statements on the SAME ``db`` did, and what a
fresh client reads.  SIGNAL ``term`` sends SIGTERM instead, to a Python handler that
turns it into an exception (``Terminated``), as servers and job runners do.
"""

import json
import os
import signal
import sys

import zpydb

from .writer import BLOCK_SIZE


ARMED = []   # non-empty: the next call of the wrapped method sends SIGNAL
FIRED = []
SIGNAL = [signal.SIGINT]


class Terminated(BaseException):
    """What the probe's SIGTERM handler raises."""


def on_term(signum, frame):
    raise Terminated()


def inject(phase):
    """Wrap, at class level and before any connection exists (ZODB's MVCC adapter
    copies bound storage methods when a connection opens), the method of ``phase``."""
    from ZEO.asyncio.client import ClientRunner
    from ZEO.ClientStorage import ClientStorage
    from ZODB.FileStorage import FileStorage
    if phase == "vote":
        targets = [(FileStorage, "tpc_vote"), (ClientStorage, "tpc_vote")]
    elif phase == "finish":
        targets = [(FileStorage, "_finish_finish"), (ClientRunner, "tpc_finish")]
    else:
        raise ValueError(phase)
    for owner, name in targets:
        real = getattr(owner, name)

        def interrupted(*args, _real=real, _name=name, **kwargs):
            if ARMED:
                ARMED.clear()
                FIRED.append(_name)
                os.kill(os.getpid(), SIGNAL[0])   # Ctrl-C lands here, mid-commit
            return _real(*args, **kwargs)

        setattr(owner, name, interrupted)


def write(db, kind, tag):
    if kind == "stmt":
        db["log"].append(tag)
    else:
        with db.transaction() as t:
            for j in range(BLOCK_SIZE):
                t["log"].append(f"{tag}/{j}")


def describe(exc):
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:400]


def main(url, phase, kind, sig="int"):
    report = {"phase": phase, "kind": kind, "signal": sig}
    if sig == "term":
        SIGNAL[0] = signal.SIGTERM
        signal.signal(signal.SIGTERM, on_term)
    inject(phase)
    db = zpydb.connect(url, wait_timeout=10)
    db["log"] = []
    ARMED.append(True)
    try:
        write(db, kind, "probe")
        report["probe"] = "returned"
    except KeyboardInterrupt:
        report["probe"] = "KeyboardInterrupt"
    except Terminated:
        report["probe"] = "Terminated"
    except BaseException as exc:
        report["probe"] = describe(exc)
    ARMED.clear()
    report["fired"] = FIRED
    after = []
    for i in range(3):
        try:
            db["log"].append(f"after{i}")
            after.append("ok")
        except BaseException as exc:
            after.append(describe(exc))
    report["after"] = after
    try:
        report["same_db_reads"] = len(db["log"]._run())
    except BaseException as exc:
        report["same_db_reads"] = describe(exc)
    try:
        db.close()
    except BaseException as exc:
        report["close"] = describe(exc)
    try:
        with zpydb.connect(url, wait_timeout=10) as fresh:
            report["items"] = [x if isinstance(x, str) else repr(x) for x in fresh["log"]._run()]
    except BaseException as exc:
        report["items"] = describe(exc)
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:5])
