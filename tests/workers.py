"""Client workloads run as separate OS processes (or threads for an embedded file).

    python -m tests.workers MODE URL SEED COUNT [OPTIONS-JSON]

Each worker connects its own client and runs COUNT statements of MODE.  A
statement that raises is *counted* (``failed``, with the first messages in
``errors``) and the worker goes on, so a test can assert "zero failed
statements" and still see how many failed.  The last line on stdout is
``report {json}``.  Loops are bounded in count and by ``DEADLINE`` seconds
(statements not started by then are reported as ``unfinished``).

With ``{"sync": true}`` in OPTIONS the worker connects, prints ``ready`` and
waits for a ``go`` line on stdin before its first statement, so that all the
workers of a test really run at the same time (process start-up on a busy
machine takes a while).  :func:`run_workers` is the parent side of that.

Modes (the data must exist before the workers start; see each mode):

* ``increment``      ``db[key] += 1`` (key ``n``)
* ``append``         ``db[key].append("SEED:i")`` (key ``items``): unique tags
* ``atomic_incr``    ``db.atomic`` read-modify-write of ``db[key]`` (key ``counter``)
* ``bank``           ``db.atomic`` transfers between the accounts of ``db['accounts']``;
                     reports the net change per account, audits the total
* ``distinct_keys``  ``db[key]["SEED-i"] = i`` (key ``shared``)
* ``churn``          inserts and deletes of the worker's own keys of one dict (key
                     ``shared``): :func:`churn_keys` says which keys must remain
* ``skew``           the write-skew rounds of tests/test_isolation.py (parent-driven)
"""

import json
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import zpydb

REPO = Path(__file__).resolve().parent.parent

#: A worker starts no new statement after this many seconds.
DEADLINE = 120.0
#: Start-up (import, connect) of all workers of one test, on a busy machine.
START_TIMEOUT = 90.0
#: What the parent waits for the reports after ``go``.
FINISH_TIMEOUT = DEADLINE + 60.0


class Tally:
    """Counts of one worker: statements done, statements that raised, their messages."""

    def __init__(self, seed):
        self.seed = seed
        self.done = 0
        self.failed = 0
        self.unfinished = 0
        self.errors = []
        self.ok = []          # sequence numbers of statements that succeeded
        self.extra = {}
        self.started = time.monotonic()

    def statement(self, seq, func):
        """Run one statement; count it; the result or None when it raised."""
        try:
            result = func()
        except Exception as exc:  # every failed statement counts, whatever it is
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:500])
            return None
        self.done += 1
        self.ok.append(seq)
        return result

    def loop(self, count):
        """range(count), ending early (the rest counted unfinished) at the DEADLINE."""
        for seq in range(count):
            if time.monotonic() - self.started > DEADLINE:
                self.unfinished = count - seq
                return
            yield seq

    def report(self):
        return {"seed": self.seed, "done": self.done, "failed": self.failed,
                "unfinished": self.unfinished, "errors": self.errors, "ok": self.ok,
                "seconds": round(time.monotonic() - self.started, 3), **self.extra}


def tag(seed, seq):
    return f"{seed}:{seq}"


# -- modes: mode(db, seed, count, tally, options, link) -------------------------------

def increment(db, seed, count, tally, options, link):
    key = options.get("key", "n")
    for seq in tally.loop(count):
        def bump():
            db[key] += 1
        tally.statement(seq, bump)


def append(db, seed, count, tally, options, link):
    key = options.get("key", "items")
    for seq in tally.loop(count):
        tally.statement(seq, lambda: db[key].append(tag(seed, seq)))


def atomic_incr(db, seed, count, tally, options, link):
    key = options.get("key", "counter")

    def bump(t):
        t[key] = t[key]._run() + 1
    for seq in tally.loop(count):
        tally.statement(seq, lambda: db.atomic(bump))


def bank(db, seed, count, tally, options, link):
    """Random transfers, each one ``db.atomic`` block; every 4th op an audit of the total."""
    rng = random.Random(seed)
    accounts = sorted(db["accounts"].keys())
    total = options.get("total")
    net = {name: 0 for name in accounts}
    bad_totals = []
    moved = 0
    for seq in tally.loop(count):
        source, target = rng.sample(accounts, 2)
        amount = rng.randint(1, 30)

        def transfer(t):
            balance = t["accounts"][source]._run()
            if balance < amount:
                return 0
            t["accounts"][source] = balance - amount
            t["accounts"][target] = t["accounts"][target]._run() + amount
            return amount
        done = tally.statement(seq, lambda: db.atomic(transfer))
        if done:
            net[source] -= done
            net[target] += done
            moved += 1
        if total is not None and seq % 4 == 3:
            snapshot = db["accounts"]._run()        # one read transaction: one snapshot
            if sum(snapshot.values()) != total or min(snapshot.values()) < 0:
                bad_totals.append(snapshot)
    tally.extra.update(net=net, moved=moved, bad_totals=bad_totals[:3],
                       bad_total_count=len(bad_totals))


def distinct_keys(db, seed, count, tally, options, link):
    key = options.get("key", "shared")
    for seq in tally.loop(count):
        tally.statement(seq, lambda: db[key].__setitem__(f"{seed}-{seq}", seq))


def churn(db, seed, count, tally, options, link):
    """Statement i inserts ``SEED-i``; every third one deletes (del, then pop) the key
    the statement before it inserted.  Only this worker's keys: they never collide."""
    key = options.get("key", "shared")
    for seq in tally.loop(count):
        if seq % 3 == 2 and seq % 2:
            tally.statement(seq, lambda: db[key].__delitem__(f"{seed}-{seq - 1}"))
        elif seq % 3 == 2:
            tally.statement(seq, lambda: db[key].pop(f"{seed}-{seq - 1}"))
        else:
            tally.statement(seq, lambda: db[key].__setitem__(f"{seed}-{seq}", seq))


def churn_keys(reports):
    """The keys the ``churn`` workers leave: inserted, not deleted, by statements that succeeded."""
    keys = {}
    for report in reports:
        ok = set(report["ok"])
        for seq in sorted(ok):
            if seq % 3 == 2:
                keys.pop(f"{report['seed']}-{seq - 1}", None)
            else:
                keys[f"{report['seed']}-{seq}"] = seq
    return keys


def skew(db, seed, count, tally, options, link):
    """COUNT write-skew rounds, each in ``db['skew<round>']``, driven by the parent.

    Round r: wait for ``round``; run ``db.atomic(decide)`` where decide reads the two
    watched keys and, if both are 1, sets this worker's key to 0.  On its FIRST attempt
    decide prints ``read`` after reading and waits for ``commit`` (the parent sends it once
    both workers have read), so the two blocks always overlap; retries do not wait.  Then
    print ``done ATTEMPTS``.
    """
    keys = options["keys"]
    mine = keys[seed % 2]
    for seq in range(count):
        link.expect("round")
        attempts = []

        def decide(t, seq=seq, attempts=attempts):
            attempts.append(1)
            d = t[f"skew{seq}"]
            both = d[keys[0]]._run() == 1 and d[keys[1]]._run() == 1
            if len(attempts) == 1:
                link.say("read")
                link.expect("commit")
            if both:
                d[mine] = 0
        tally.statement(seq, lambda: db.atomic(decide))
        link.say(f"done {len(attempts)}")


MODES = {f.__name__: f for f in (increment, append, atomic_incr, bank, distinct_keys, churn,
                                  skew)}


# -- the worker process --------------------------------------------------------------

class _StdioLink:
    """The worker's side of the line protocol with the parent (stdout/stdin)."""

    def say(self, line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def expect(self, word):
        line = sys.stdin.readline()
        if not line:
            raise SystemExit(f"worker: stdin closed while waiting for {word!r}")
        if line.split()[0] != word:
            raise SystemExit(f"worker: expected {word!r}, got {line!r}")
        return line


def _run_job(url, mode, seed, count, options, link):
    connect = {"wait_timeout": 30, **options.get("connect", {})}
    with zpydb.connect(url, **connect) as db:
        if options.get("sync"):
            link.say("ready")
            link.expect("go")
        tally = Tally(seed)
        MODES[mode](db, seed, count, tally, options, link)
        link.say("report " + json.dumps(tally.report()))


def serve(link):
    """A pool worker: run ``job {json}`` lines one after another until ``quit``/EOF."""
    while True:
        line = sys.stdin.readline()
        if not line or line.strip() == "quit":
            return
        job = json.loads(line.split(" ", 1)[1])
        _run_job(job["url"], job["mode"], job["seed"], job["count"],
                 {**job["options"], "sync": True}, link)


def main(argv):
    link = _StdioLink()
    if argv[1] == "serve":
        return serve(link)
    mode, url, seed, count = argv[1], argv[2], int(argv[3]), int(argv[4])
    options = json.loads(argv[5]) if len(argv) > 5 else {}
    _run_job(url, mode, seed, count, options, link)


# -- the parent side -----------------------------------------------------------------

class WorkerDied(AssertionError):
    pass


class WorkerProcess:
    """One ``python -m tests.workers`` child: lines in, lines out, stopped by PID."""

    def __init__(self, mode, url, seed, count, options, log_dir):
        self.seed = seed
        self.log_path = Path(log_dir) / f"worker-{mode}-{seed}.log"
        args = (["serve"] if mode == "serve" else
                [mode, url, str(seed), str(count), json.dumps(options)])
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.workers", *args],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, bufsize=1)
        self.lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self):
        return self.process.pid

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # EOF

    def stderr_tail(self, chars=3000):
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def expect(self, word, deadline):
        """The next line, which must start with ``word``; waits until ``deadline``."""
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise WorkerDied(f"worker {self.seed} (pid {self.pid}) sent no {word!r} in time; "
                             f"stderr:\n{self.stderr_tail()}") from None
        if line is None:
            self.process.wait(10)
            raise WorkerDied(f"worker {self.seed} (pid {self.pid}) exited "
                             f"{self.process.returncode} before {word!r}; "
                             f"stderr:\n{self.stderr_tail()}")
        if line.split(" ", 1)[0] != word:
            raise WorkerDied(f"worker {self.seed}: expected {word!r}, got {line[:300]!r}")
        return line

    def send(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def report(self, deadline, last=True):
        line = self.expect("report", deadline)
        if not last:  # a pool worker: it stays up for the next job
            return json.loads(line.split(" ", 1)[1])
        self.process.stdin.close()
        self.process.wait(max(1.0, deadline - time.monotonic()))
        if self.process.returncode != 0:
            raise WorkerDied(f"worker {self.seed} exited {self.process.returncode}; "
                             f"stderr:\n{self.stderr_tail()}")
        return json.loads(line.split(" ", 1)[1])

    def kill(self):
        if self.process.poll() is None:
            try:
                self.process.kill()  # by PID (Popen.kill sends SIGKILL to this child only)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except Exception:
                pass


def start_workers(url, mode, clients, count, log_dir, **options):
    """Start ``clients`` synchronised workers and wait until each has connected."""
    options = {"sync": True, **options}
    procs = []
    try:
        for seed in range(clients):
            procs.append(WorkerProcess(mode, url, seed, count, options, log_dir))
        deadline = time.monotonic() + START_TIMEOUT
        for proc in procs:
            proc.expect("ready", deadline)
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return procs


def run_workers(url, mode, clients, count, log_dir, **options):
    """Start the workers, let them go at once, return their reports (killed on failure)."""
    procs = start_workers(url, mode, clients, count, log_dir, **options)
    try:
        for proc in procs:
            proc.send("go")
        deadline = time.monotonic() + FINISH_TIMEOUT
        return [proc.report(deadline) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()


class WorkerPool:
    """Long-lived worker processes that run one job after another.

    Starting Python and importing ZODB/RelStorage in 16 processes takes many
    seconds on a busy 2-core machine; a test module starts its pool once and
    every test sends its job (URL, mode, count) to the first ``clients`` workers.
    Each job connects its own client and closes it at the end.  Any failure kills
    the whole pool (by PID); it starts again on the next job.
    """

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.procs = []

    def _grow(self, clients):
        while len(self.procs) < clients:
            self.procs.append(WorkerProcess("serve", None, len(self.procs), 0, {},
                                            self.log_dir))

    def start(self, url, mode, clients, count, **options):
        """Send the job to ``clients`` workers and wait until each has connected."""
        self._grow(clients)
        procs = self.procs[:clients]
        try:
            for seed, proc in enumerate(procs):
                proc.send("job " + json.dumps({"url": url, "mode": mode, "seed": seed,
                                               "count": count, "options": options}))
            deadline = time.monotonic() + START_TIMEOUT
            for proc in procs:
                proc.expect("ready", deadline)
        except BaseException:
            self.stop()
            raise
        return procs

    def collect(self, procs, deadline):
        try:
            return [proc.report(deadline, last=False) for proc in procs]
        except BaseException:
            self.stop()
            raise

    def run(self, url, mode, clients, count, **options):
        """Run one job on ``clients`` workers at once; their reports."""
        procs = self.start(url, mode, clients, count, **options)
        try:
            for proc in procs:
                proc.send("go")
        except BaseException:
            self.stop()
            raise
        return self.collect(procs, time.monotonic() + FINISH_TIMEOUT)

    def stop(self):
        procs, self.procs = self.procs, []
        for proc in procs:
            try:
                proc.send("quit")
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            proc.kill()


def run_threads(db, mode, clients, count, **options):
    """The same workloads as threads sharing one client (embedded FileStorage)."""
    tallies = [Tally(seed) for seed in range(clients)]
    crashed = []

    def work(tally):
        try:
            MODES[mode](db, tally.seed, count, tally, options, None)
        except BaseException as exc:
            crashed.append(exc)
    threads = [threading.Thread(target=work, args=(tally,), daemon=True) for tally in tallies]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + FINISH_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish in time"
    assert not crashed, crashed
    return [tally.report() for tally in tallies]


def summary(reports):
    """Totals over the reports of one run (for assertions and their messages)."""
    return {"done": sum(r["done"] for r in reports),
            "failed": sum(r["failed"] for r in reports),
            "unfinished": sum(r["unfinished"] for r in reports),
            "errors": [e for r in reports for e in r["errors"]][:5],
            "seconds": max((r["seconds"] for r in reports), default=0.0)}


if __name__ == "__main__":
    main(sys.argv)
