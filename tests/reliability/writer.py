"""A writer process whose history can be checked afterwards.

    python -m tests.reliability.writer '{"url": ..., "log": ..., "run": "w1", ...}'

Loops until the stop file exists (or its deadline passes), each round one of:

* ``stmt``   - ``db['log'].append(tag)``
* ``new``    - ``db['log'].append({'t': tag})`` (a new persistent object: new oids)
* ``block``  - ``with db.transaction() as t:`` 10 appends ``tag/0`` .. ``tag/9``
* ``atomic`` - the same 10 appends through ``db.atomic``
* ``lock``   - the same 10 appends between pyzdb's ``db.lock()`` and ``db.unlock()``

Every step is one JSON line appended to the log with a single ``os.write`` on an
``O_APPEND`` descriptor, so a SIGKILL never leaves half a line:

* ``try``  before the write is issued;
* ``ack``  ONLY after the statement (or block) returned;
* ``err``  an exception: its type, message, whether it is a zpydb error, and what
  it claims about the outcome (``none`` = "nothing was applied", else ``unknown``);
* ``int``  a KeyboardInterrupt (SIGINT) that reached the loop.

A writer that trusts the error messages retries the same tag after an error that
claims nothing was applied (so a false claim shows up as a duplicate), and moves
on to a new tag after any other error.  With ``"catch_interrupt": true`` the
loop survives Ctrl-C and keeps using the same ``db`` object.
"""

import faulthandler
import json
import os
import random
import signal
import sys
import time

import zpydb

KINDS = (("stmt", 4), ("new", 2), ("block", 2), ("atomic", 2), ("lock", 1))
BLOCK_SIZE = 10


def claim_of(message):
    """What an error message says about the outcome: ``none`` or ``unknown``."""
    text = message.lower()
    if any(word in text for word in ("unknown", "may have", "might have", "may or may not",
                                     "not known", "cannot tell", "could not tell",
                                     "uncertain", "whether")):
        return "unknown"
    if any(word in text for word in ("nothing was applied", "was not applied",
                                     "not applied", "nothing of it", "no change was made",
                                     "was not committed", "nothing was written")):
        return "none"
    return "unknown"


class Log:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **event):
        event["at"] = round(time.time(), 4)
        os.write(self.fd, (json.dumps(event) + "\n").encode())


def do(db, kind, tag):
    if kind == "stmt":
        db["log"].append(tag)
    elif kind == "new":
        db["log"].append({"t": tag})
    elif kind == "block":
        with db.transaction() as t:
            for j in range(BLOCK_SIZE):
                t["log"].append(f"{tag}/{j}")
    elif kind == "atomic":
        def work(t):
            for j in range(BLOCK_SIZE):
                t["log"].append(f"{tag}/{j}")
        db.atomic(work)
    elif kind == "lock":
        try:
            db.lock()
            for j in range(BLOCK_SIZE):
                db["log"].append(f"{tag}/{j}")
        except BaseException:
            abandon(db)
            raise
        db.unlock()
    else:
        raise ValueError(kind)


def note_interrupt(log, tag, kind):
    """Log a Ctrl-C; a second one landing while logging must not end the loop."""
    for _ in range(5):
        try:
            log.write(ev="int", tag=tag, kind=kind)
            return
        except KeyboardInterrupt:
            continue


def abandon(db):
    """Leave no open lock() block behind for the next round (what an application's
    Ctrl-C handler does); a no-op when none is open."""
    try:
        db._executor.abandon_lock()
    except Exception:
        pass


def writes(db, log, rng, kinds, run, state, stop_file, deadline):
    """One round; False when it is time to stop."""
    try:
        abandon(db)     # a Ctrl-C that landed between lock() and its try left a block open
        if time.monotonic() >= deadline or os.path.exists(stop_file):
            return False
        if state["tag"] is None:
            state["seq"] += 1
            state.update(tag=f"{run}-{state['seq']}", kind=rng.choice(kinds), tries=0)
        tag, kind = state["tag"], state["kind"]
        state["tries"] += 1
        log.write(ev="try", tag=tag, kind=kind, n=state["tries"])
        try:
            do(db, kind, tag)
        except Exception as exc:
            message = str(exc)
            claim = claim_of(message)
            log.write(ev="err", tag=tag, kind=kind,
                      type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                      msg=message[:500], zpydb=isinstance(exc, zpydb.Error), claim=claim)
            if not (claim == "none" and state["tries"] < 5):
                state["tag"] = None                 # retry only what was "not applied"
            time.sleep(0.05)                        # an application's pause after an error
            return True
        log.write(ev="ack", tag=tag, kind=kind)
        state["tag"] = None
        return True
    except KeyboardInterrupt:
        note_interrupt(log, state["tag"], state["kind"])
        state["tag"] = None
        return True


def main(config):
    log = Log(config["log"])
    rng = random.Random(config.get("seed", 0))
    stop_file = config["stop"]
    deadline = time.monotonic() + config.get("deadline", 600)
    catch_interrupt = config.get("catch_interrupt", False)
    kinds = config.get("kinds") or [k for k, weight in KINDS for _ in range(weight)]
    run = config["run"]
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # stacks when it hangs
    if not catch_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    db = zpydb.connect(config["url"], wait_timeout=config.get("wait_timeout", 10))
    log.write(ev="open", pid=os.getpid())
    state = {"seq": 0, "tag": None, "kind": None, "tries": 0}
    # A Ctrl-C can land on any bytecode, the loop's own condition included: every
    # part of the loop is inside a try, and the loop itself is retried.
    while True:
        try:
            while writes(db, log, rng, kinds, run, state, stop_file, deadline):
                pass
            break
        except KeyboardInterrupt:
            note_interrupt(log, state["tag"], state["kind"])
            state["tag"] = None
    outcome = {"ev": "stop"}
    try:
        db.close()
    except BaseException as exc:  # reported, not hidden
        outcome["close_error"] = f"{type(exc).__name__}: {exc}"
    log.write(**outcome)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
