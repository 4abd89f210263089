"""WA: the change feed (``db[...].watch()``, zpydb/feed.py): latency and a loss check.

* **Latency**, commit to event in another process: the bench process writes
  ``db['lat'] = i`` (noting ``time.time()`` just before the statement, so the
  commit itself is included) while watcher processes (``bench.watch_worker
  watchers``) note ``time.time()`` when each change arrives.  Over ZEO and
  PostgreSQL, with 1 watcher and with 50 (10 processes of 5 threads: 10 ZEO
  connections; on PostgreSQL 10 pollers, one per process).  Writes are spaced
  (``GAP``: 30 ms on ZEO, 300 ms on PostgreSQL) so the figure is the delay of one
  change, not a queue.  Target: median <= 20 ms over
  ZEO.  PostgreSQL is polled (``poll_interval``, 0.1 s by default), so half an
  interval is its expected median.
* **Loss check** (:func:`loss_check`; tests/test_feed.py runs a small one): a
  writer process does STATEMENTS statements alternating ``db['loss'] = i`` and
  ``db['noise'] = i`` while the ZEO server is SIGKILLed and restarted RESTARTS
  times; ``zpydb watch URL "db['loss']" --since ID`` runs in another process.
  Afterwards the server's transaction log is the oracle: the watcher must have
  printed exactly the committed ``db['loss'] = i`` transactions, each once, in
  commit order, with their values, and the writer's acknowledged statements must
  all be in the log exactly once (zpydb's writes are exactly-once).
"""

import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import zpydb
from devservers.ports import stop_process, wait_for_port_closed

from .common import REPO, percentile, ratio_of

#: Seconds between two latency writes, per backend: longer than what one change
#: costs, so the figure is one change's delay, not a queue's.  PostgreSQL is polled
#: and every change opens database connections (docs/history.md).
GAP = {"zeo": 0.03, "pg": 0.3}
LATENCY_TARGET_MS = 20.0
SIZES = {  # mode -> (latency events, (watchers, processes) runs, loss statements, restarts,
           #          PostgreSQL too)
    "smoke": (5, [(1, 1)], 20, 1, False),
    "quick": (100, [(1, 1), (50, 10)], 10_000, 5, True),
    "full": (300, [(1, 1), (50, 10)], 10_000, 5, True),
}


def ticks(mode, env):
    events, runs, statements, restarts, with_pg = SIZES[mode.name]
    return len(runs) * (2 if env.pg_url and with_pg else 1) + 1


def wa(env, mode, progress):
    events, runs, statements, restarts, with_pg = SIZES[mode.name]
    rows, ratios = [], []
    backends = [("zeo", env.zeo.url)]
    pg = None
    if env.pg_url and with_pg:
        # 50 pollers plus their reads need more connections than the shared cluster allows
        from devservers.pg import PostgresCluster
        from .common import DURABLE_PG
        pg = PostgresCluster(settings={**DURABLE_PG, "max_connections": "400"})
        pg.create_database("watch")
        backends.append(("pg", pg.url("watch", blob_dir=os.path.join(env.tmp, "wa-pg-blobs"))))
    try:
        for backend, url in backends:
            for watchers, processes in runs:
                row = latency(url, watchers, processes, events, env.tmp, GAP[backend])
                row["name"] = f"{backend}: {watchers} watcher(s), commit -> event"
                rows.append(row)
                if backend == "zeo":
                    ratios.append(ratio_of(
                        f"ZEO, {watchers} watcher(s): {LATENCY_TARGET_MS:g} ms / median latency",
                        LATENCY_TARGET_MS, row["median_us"] / 1000, 1.0))
                progress()
    finally:
        if pg is not None:
            pg.stop()
    from devservers.zeo import ZeoServer
    with ZeoServer(os.path.join(env.tmp, "wa-loss")) as server:
        result = loss_check(server, statements, restarts, os.path.join(env.tmp, "wa-loss-logs"))
    rows.append(loss_row(result))
    wrong = sum(result[k] for k in ("lost", "dup", "reordered", "extra", "wrong_value",
                                    "ack_missing", "write_dup", "not_applied_but_committed"))
    ratios.append({"name": f"loss check: changes lost, duplicated, reordered or wrong "
                           f"({result['statements']} statements, {result['kills']} kills)",
                   "ratio": wrong, "target": "0", "pass": wrong == 0 and result["complete"]})
    progress()
    return {"title": "change feed: commit -> event latency in another process; loss check "
                     "across ZEO server kills",
            "rows": rows, "ratios": ratios, "loss_check": result}


def loss_row(result):
    return {"name": f"loss check: {result['statements']} statements, {result['kills']} "
                    f"SIGKILL restarts",
            "ops_per_s": result["acked"] / result["seconds"] if result["seconds"] else 0.0,
            "median_us": result["write_median_us"], "p99_us": result["write_p99_us"],
            "acked": result["acked"], "failed": result["failed"], "lost": result["lost"],
            "extra": result["extra"], "dup": result["dup"], "reordered": result["reordered"]}


# -- latency --------------------------------------------------------------------------

class _Lines:
    """JSON lines of a child's stdout, read with a deadline."""

    def __init__(self, process):
        self.process = process
        self.buffer = b""

    def read(self, timeout):
        """The next line as an object, or None at the deadline; EOFError when it exited."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError(f"process {self.process.pid} exited ({self.process.poll()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def latency(url, watchers, processes, events, tmp, gap=GAP["zeo"]):
    """Commit -> event delays of ``events`` changes seen by ``watchers`` watchers."""
    per_process = [watchers // processes + (1 if n < watchers % processes else 0)
                   for n in range(processes)]
    log = open(os.path.join(tmp, "wa-watchers.log"), "ab")
    procs = []
    db = zpydb.connect(url, wait_timeout=30)
    try:
        db["lat"] = -1
        for count in per_process:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.watch_worker", "watchers", url, "lat", str(count)],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log))
        readers = [_Lines(p) for p in procs]
        for reader in readers:
            if not (reader.read(120) or {}).get("ready"):
                raise RuntimeError("a watcher process did not start (see wa-watchers.log)")
        sent = {}
        started = time.perf_counter()
        for i in range(events):
            sent[i] = time.time()
            db["lat"] = i
            time.sleep(gap)
        delays, seen = [], 0
        deadline = time.monotonic() + 60
        for reader, count in zip(readers, per_process):
            last = {}
            while sum(1 for v in last.values() if v == events - 1) < count and \
                    time.monotonic() < deadline:
                line = reader.read(max(0.0, deadline - time.monotonic()))
                if line is None:
                    break
                last[line["w"]] = line["v"]
                if line["v"] in sent:
                    delays.append(line["t"] - sent[line["v"]])
                    seen += 1
        seconds = time.perf_counter() - started
    finally:
        for process in procs:
            try:
                process.stdin.close()
            except OSError:
                pass
        for process in procs:
            stop_process(process, signal.SIGTERM, 30) if process.poll() is None else None
        db.close()
        log.close()
    delays.sort()
    return {"watchers": watchers, "processes": processes, "events": events, "gap_s": gap,
            "ops_per_s": seen / seconds if seconds else 0.0,
            "median_us": statistics.median(delays) * 1e6 if delays else 0.0,
            "p99_us": percentile(delays, 99) * 1e6 if delays else 0.0,
            "missed": watchers * events - seen}


# -- loss check --------------------------------------------------------------------------

def loss_check(server, statements, restarts, log_dir, budget=1800.0):
    """Kill -9 and restart ``server`` (a devservers ZeoServer) ``restarts`` times while
    a writer process does ``statements`` statements and ``zpydb watch`` watches
    db['loss'] in another process; compare what it printed with the server's log.

    Returns counts (all 0 when nothing was lost) and ``complete`` (every process
    finished within ``budget`` seconds).
    """
    os.makedirs(log_dir, exist_ok=True)
    url = server.url
    deadline = time.monotonic() + budget
    db = zpydb.connect(url, wait_timeout=30)
    db["loss"] = -1
    since = db._session.db.storage.lastTransaction().hex()
    db.close()
    out_path = os.path.join(log_dir, "watch.jsonl")
    log = open(os.path.join(log_dir, "processes.log"), "ab")
    out = open(out_path, "wb")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "zpydb", "watch", url, "db['loss']", "--since", since,
         "--wait-timeout", "30"], cwd=REPO, stdout=out, stderr=log, stdin=subprocess.DEVNULL)
    writer = subprocess.Popen(
        [sys.executable, "-m", "bench.watch_worker", "write", url, str(statements)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    kill_points = [(k + 1) * statements // (restarts + 1) for k in range(restarts)]
    outcomes, kills, complete, started = [], 0, True, time.perf_counter()
    try:
        _wait_for_output(out_path, deadline)  # the watcher is connected and delivering
        reader = _Lines(writer)
        while True:
            try:
                line = reader.read(max(0.0, deadline - time.monotonic()))
            except EOFError:
                break
            if line is None:
                complete = False
                break
            if line.get("done"):
                break
            outcomes.append(line)
            if kill_points and len(outcomes) >= kill_points[0]:
                kill_points.pop(0)
                server.kill()
                wait_for_port_closed(server.host, server.port)
                time.sleep(0.2)
                server.start()
                kills += 1
        seconds = time.perf_counter() - started
        stop_process(writer, signal.SIGTERM, 30)
        committed = _committed_since(url, since)
        expected = [(tid, int(note.split("= ", 1)[1])) for tid, note in committed
                    if note.startswith("db['loss'] = ")]
        last = expected[-1][0] if expected else None
        if not _wait_for_id(out_path, last, deadline):
            complete = False
    finally:
        for process in (writer, watcher):
            stop_process(process, signal.SIGTERM, 30)
        out.close()
        log.close()
    delivered = _read_changes(out_path)
    return compare(expected, delivered, outcomes, committed, statements, kills, seconds,
                   complete)


def compare(expected, delivered, outcomes, committed, statements, kills, seconds, complete):
    """The loss check's verdict: every count is 0 when the feed lost nothing."""
    expected_ids = [tid for tid, _ in expected]
    got_ids = [change["id"] for change in delivered]
    expected_set, got_set = set(expected_ids), set(got_ids)
    in_order = [tid for tid in got_ids if tid in expected_set]
    values = dict(expected)
    notes = [note for _, note in committed]
    acked = [(o["key"], o["i"]) for o in outcomes if o["ok"]]
    refused = [(o["key"], o["i"]) for o in outcomes if not o["ok"] and o["applied"] is False]
    in_log = {}
    for note in notes:
        if note.startswith(("db['loss'] = ", "db['noise'] = ")):
            key = note[4:].split("']", 1)[0]
            in_log[(key, int(note.split("= ", 1)[1]))] = \
                in_log.get((key, int(note.split("= ", 1)[1])), 0) + 1
    write_us = sorted(o["us"] for o in outcomes if o["ok"])
    return {
        "statements": statements, "kills": kills, "seconds": round(seconds, 2),
        "acked": len(acked), "failed": len(outcomes) - len(acked),
        "expected": len(expected_ids), "delivered": len(got_ids),
        "lost": len(expected_set - got_set),
        "extra": len(got_set - expected_set),
        "dup": len(got_ids) - len(got_set),
        "reordered": 0 if in_order == [t for t in expected_ids if t in got_set] else 1,
        "wrong_value": sum(1 for change in delivered
                           if change["id"] in values and change["value"] != values[change["id"]]),
        "ack_missing": sum(1 for item in acked if in_log.get(item, 0) == 0),
        "write_dup": sum(1 for count in in_log.values() if count > 1),
        "not_applied_but_committed": sum(1 for item in refused if in_log.get(item, 0)),
        "write_median_us": statistics.median(write_us) if write_us else 0.0,
        "write_p99_us": percentile(write_us, 99) if write_us else 0.0,
        "complete": complete,
    }


def _committed_since(url, since_hex):
    """(tid hex, note) of every transaction after ``since_hex``, from the server's log."""
    from ZODB.utils import p64, u64
    db = zpydb.connect(url, wait_timeout=30)
    try:
        storage = db._session.db.storage
        start = p64(u64(bytes.fromhex(since_hex)) + 1)
        return [(info.tid.hex(), info.description.decode("utf-8", "replace"))
                for info in storage.iterator(start)]
    finally:
        db.close()


def _read_changes(path):
    changes = []
    with open(path, "rb") as stream:
        for line in stream:
            if line.endswith(b"\n"):  # a line cut by the final SIGTERM is not a change
                changes.append(json.loads(line))
    return changes


def _wait_for_output(path, deadline):
    while time.monotonic() < deadline:
        if os.path.getsize(path) > 0:
            return True
        time.sleep(0.02)
    return False


def _wait_for_id(path, last_id, deadline):
    """Wait until the watcher printed ``last_id`` (None: nothing expected)."""
    if last_id is None:
        return True
    needle = f'"id": "{last_id}"'.encode()
    while time.monotonic() < deadline:
        with open(path, "rb") as stream:
            if needle in stream.read():
                return True
        time.sleep(0.05)
    return False


def main(argv=None):
    """``python -m bench.watch loss STATEMENTS RESTARTS``: one loss check, JSON on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    from devservers.zeo import ZeoServer
    with tempfile.TemporaryDirectory(prefix="zpydb-loss-") as tmp:
        with ZeoServer(os.path.join(tmp, "zeo")) as server:
            result = loss_check(server, int(argv[1]), int(argv[2]), os.path.join(tmp, "logs"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
