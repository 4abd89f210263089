"""C2: many writer processes on ONE key: ``+=`` on a number and ``append`` to a list.

Contestants, per backend (ZEO, PostgreSQL):

* ``zpydb/<backend>``: ``db[key] += 1`` / ``db[key].append(item)``, zpydb's defaults.
* ``raw/<backend>``: raw ZODB, ``root['c2raw'][key]['n'] += 1`` on a plain int in a
  PersistentMapping / ``root['c2raw'][key].append(item)`` on a PersistentList, in its own
  retry loop (``transaction``'s ``attempts(100)`` with a full-jitter back-off).
* ``redis-always``: Redis INCR / RPUSH with ``appendfsync always`` (once per writer count;
  it does not depend on the ZODB backend).

Writers are processes from a pool started once (``bench.contention_worker``); a run
connects N of them, waits until all are ready, says go, and each does statements for
``c2_seconds`` (at most ``c2_max_ops``).  Every key is fresh per run.  Afterwards the
final counter / list is checked against what the workers acknowledged:

* ``failed``: statements that raised (the worker counts them and goes on);
* ``lost``: acknowledged updates missing from the final value;
* ``extra``: updates present although their statement raised (ambiguous commits);
* lists only: ``dup`` (an item twice) and ``reordered`` (a writer's items out of order);
* ZEO only: ``server_cpu_us``, runzeo's CPU time (psutil) per acknowledged statement,
  which includes the server-side conflict resolution.

Throughput is acknowledged statements / the longest worker's measured time, the median
over rounds; every round runs every writer count (order rotated) and, for each, every
contestant (order rotated), so load changes on a shared machine hit them alike.
Latency p50/p99 is over all acknowledged statements of all rounds.
"""

import json
import os
import select
import statistics
import subprocess
import sys
import time

from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from BTrees.OOBTree import OOBTree

from devservers.ports import stop_process

from .common import REPO, percentile, ratio_of, raw_for, zpydb_for

OPS = ("incr", "append")


class Pool:
    """Up to `size` long-lived worker processes (stderr to a log file, stopped by PID)."""

    def __init__(self, size, tmp):
        self.log_path = os.path.join(tmp, "c2-workers.log")
        self.log = open(self.log_path, "a")
        self.procs = []
        try:
            for _ in range(size):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.contention_worker"], cwd=REPO,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True))
            for proc in self.procs:
                hello = self.read(proc, 120)
                if not hello.get("hello"):
                    raise RuntimeError(f"c2 worker did not start: {hello}")
        except BaseException:
            self.close()
            raise

    def read(self, proc, timeout):
        """One JSON line from `proc`, waiting at most `timeout` seconds."""
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"c2 worker {proc.pid} silent for {timeout:.0f} s")
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"c2 worker {proc.pid} exited ({proc.poll()}); "
                               f"see {self.log_path}: {self.tail()}")
        return json.loads(line)

    def send(self, proc, obj):
        proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        proc.stdin.flush()

    def tail(self):
        try:
            with open(self.log_path) as stream:
                return stream.read()[-1500:]
        except OSError:
            return ""

    def close(self):
        for proc in self.procs:
            try:
                if proc.poll() is None:
                    proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_process(proc)
        self.log.close()


# -- preparing and checking one key -----------------------------------------------------------

def _prepare(env, contestant, op, key):
    """Create the fresh key (0 / empty list); return what the workers connect to."""
    system, _, backend = contestant.partition("/")
    if system == "zpydb":
        db = zpydb_for(backend, env)
        try:
            db[key] = 0 if op == "incr" else []
        finally:
            db.close()
        return env.zeo.url if backend == "zeo" else env.pg_url
    if system == "raw":
        raw = raw_for(backend, env)
        try:
            def init(root):
                if "c2raw" not in root:
                    root["c2raw"] = OOBTree()
                root["c2raw"][key] = PersistentMapping({"n": 0}) if op == "incr" \
                    else PersistentList()
            raw.write(init)
        finally:
            raw.close()
        return env.zeo.url if backend == "zeo" else env.pg_url
    server = env.redis["always"]
    server.client.delete(key)
    return f"redis://127.0.0.1:{server.port}"


def _final(env, contestant, op, key):
    """The final counter (int) or list (of 'wid:i' strings)."""
    system, _, backend = contestant.partition("/")
    if system == "zpydb":
        db = zpydb_for(backend, env)
        try:
            return db[key]._run()
        finally:
            db.close()
    if system == "raw":
        raw = raw_for(backend, env)
        try:
            def read(root):
                obj = root["c2raw"][key]
                return obj["n"] if op == "incr" else list(obj)
            return raw.read(read)
        finally:
            raw.close()
    client = env.redis["always"].client
    if op == "incr":
        return int(client.get(key) or 0)
    return [x.decode() for x in client.lrange(key, 0, -1)]


def check(op, final, reports):
    """failed / lost / extra (and dup / reordered for lists) from the workers' reports."""
    acked = sum(r["acked"] for r in reports)
    failed = sum(r["failed"] for r in reports)
    out = {"acked": acked, "failed": failed}
    if op == "incr":
        out["final"] = final
        out["lost"] = max(0, acked - final)
        out["extra"] = max(0, final - acked)
        return out
    seen = {}
    dup = reordered = 0
    last = {}
    for item in final:
        wid, _, index = str(item).partition(":")
        wid, index = int(wid), int(index)
        mine = seen.setdefault(wid, set())
        if index in mine:
            dup += 1
        mine.add(index)
        if index < last.get(wid, -1):
            reordered += 1
        last[wid] = index
    lost = extra = 0
    for r in reports:
        present = seen.get(r["wid"], set())
        failed_ids = set(r["failed_ids"])
        lost += sum(1 for i in range(r["attempted"]) if i not in failed_ids and i not in present)
        extra += sum(1 for i in failed_ids if i in present)
    out.update({"final": len(final), "lost": lost, "extra": extra, "dup": dup,
                "reordered": reordered})
    return out


def _cpu_of(pid):
    if not pid:
        return 0.0
    try:
        import psutil
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:
        return 0.0


# -- one run -----------------------------------------------------------------------------------

def run_once(env, pool, contestant, op, writers, seconds, max_ops, key):
    target = _prepare(env, contestant, op, key)
    system = "redis" if contestant.startswith("redis") else contestant.partition("/")[0]
    procs = pool.procs[:writers]
    for wid, proc in enumerate(procs):
        pool.send(proc, {"system": system, "target": target, "op": op, "key": key,
                         "wid": wid, "seconds": seconds, "max_ops": max_ops})
    answers = [pool.read(proc, 120) for proc in procs]
    errors = [a.get("error", str(a)) for a in answers if not a.get("ready")]
    if errors:
        for proc, answer in zip(procs, answers):  # the ready ones wait for "go": cancel
            if answer.get("ready"):
                pool.send(proc, "abort")
                pool.read(proc, 60)
        raise RuntimeError(f"c2 {contestant} {op} x{writers}: {errors[0]}")
    zeo_pid = env.zeo.pid if contestant.endswith("/zeo") else None
    server_cpu0 = _cpu_of(zeo_pid)
    t0 = time.perf_counter()
    for proc in procs:
        pool.send(proc, "go")
    # a statement in progress at the end may retry for its whole time budget
    reports = [pool.read(proc, seconds + 180) for proc in procs]
    wall = time.perf_counter() - t0
    server_cpu = _cpu_of(zeo_pid) - server_cpu0
    bad = [r["error"] for r in reports if "error" in r]
    if bad:
        raise RuntimeError(f"c2 {contestant} {op} x{writers}: {bad[0]}")
    final = _final(env, contestant, op, key)
    result = check(op, final, reports)
    longest = max(r["seconds"] for r in reports)
    result.update({"seconds": longest, "wall_s": wall,
                   "ops_per_s": result["acked"] / longest if longest else 0.0,
                   "errors": [m for r in reports for m in r["errors"]][:3],
                   "lat_us": [x for r in reports for x in r["lat_us"]]})
    if zeo_pid and result["acked"]:  # runzeo's CPU (incl. conflict resolution) per statement
        result["server_cpu_us"] = server_cpu / result["acked"] * 1e6
    retries = [r["raw_retries"] for r in reports if r.get("raw_retries") is not None]
    if retries:
        result["raw_retries"] = sum(retries)
    return result


# -- the workload ------------------------------------------------------------------------------

def contestants_for(env):
    names = []
    for backend in ["zeo"] + (["pg"] if env.pg_url else []):
        names += [f"zpydb/{backend}", f"raw/{backend}"]
    if "always" in env.redis:
        names.append("redis-always")
    return names


def c2(env, mode, tick):
    writers_list = mode.c2_writers
    names = contestants_for(env)
    rows = []
    runs = {(name, op, w): [] for name in names for op in OPS for w in writers_list}
    pool = Pool(max(writers_list), env.tmp)
    try:
        # every round visits every writer count (rotated), so a change in the machine's
        # load during the run hits 1 and 8 writers alike, not just the later ones
        for rnd in range(mode.c2_rounds):
            shift = rnd % len(writers_list)
            counts = writers_list[shift:] + writers_list[:shift]
            if rnd % 2:
                counts.reverse()
            for writers in counts:
                for op in OPS:
                    shift = (rnd + writers) % len(names)
                    order = names[shift:] + names[:shift]
                    if rnd % 2:
                        order.reverse()
                    for name in order:
                        key = f"c2-{op}-{writers}-{rnd}-{name.replace('/', '-')}"
                        runs[name, op, writers].append(run_once(
                            env, pool, name, op, writers, mode.c2_seconds, mode.c2_max_ops,
                            key))
                    tick()
    finally:
        pool.close()
    for writers in writers_list:
        for op in OPS:
            for name in names:
                rows.append(_row(name, op, writers, runs[name, op, writers]))
    return {"title": "N writer processes on ONE key: `+=` on a number and `append` to a "
                     "list (durable; final value checked against acknowledged statements)",
            "rows": rows, "ratios": _ratios(rows, names, writers_list)}


def _row(name, op, writers, runs):
    lats = sorted(x for r in runs for x in r["lat_us"])
    row = {"name": f"{name}/{op}", "system": name, "op": op, "writers": writers,
           "ops_per_s": statistics.median(r["ops_per_s"] for r in runs),
           "ops_per_s_rounds": [round(r["ops_per_s"], 1) for r in runs],
           "median_us": float(statistics.median(lats)) if lats else 0.0,
           "p99_us": float(percentile(lats, 99)) if lats else 0.0,
           "acked": sum(r["acked"] for r in runs),
           "failed": sum(r["failed"] for r in runs),
           "lost": sum(r["lost"] for r in runs),
           "extra": sum(r["extra"] for r in runs),
           "errors": [m for r in runs for m in r["errors"]][:3]}
    if op == "append":
        row["dup"] = sum(r["dup"] for r in runs)
        row["reordered"] = sum(r["reordered"] for r in runs)
    if any("server_cpu_us" in r for r in runs):
        row["server_cpu_us"] = statistics.median(r.get("server_cpu_us", 0.0) for r in runs)
    if any("raw_retries" in r for r in runs):
        row["raw_retries"] = sum(r.get("raw_retries", 0) for r in runs)
    return row


def _ratios(rows, names, writers_list):
    by = {(r["system"], r["op"], r["writers"]): r for r in rows}
    ratios = []
    lo = writers_list[0]
    hi = 8 if 8 in writers_list else writers_list[-1]
    for name in names:
        for op in OPS:
            one, many = by.get((name, op, lo)), by.get((name, op, hi))
            if not one or not many or lo == hi:
                continue
            row = ratio_of(f"{name}/{op}: throughput at {hi} / at {lo} writers",
                           many["ops_per_s"], one["ops_per_s"],
                           1.0 if name.startswith("zpydb/") else None)
            if "target" in row:
                row["target"] = ">= 1"
            ratios.append(row)

    for name in names:
        for op in OPS:
            if name.startswith("zpydb/"):
                mine = [r for r in rows if r["system"] == name and r["op"] == op]
                failed = sum(r["failed"] for r in mine)
                lost = sum(r["lost"] + r["extra"] + r.get("dup", 0) for r in mine)
                ratios.append({"name": f"{name}/{op}: failed statements, all writer counts",
                               "ratio": failed, "target": "0", "pass": failed == 0})
                ratios.append({"name": f"{name}/{op}: lost (+extra/dup) updates, all writer "
                                       f"counts", "ratio": lost, "target": "0",
                               "pass": lost == 0})
    for backend in ("zeo", "pg"):
        for op in OPS:
            for peer in (f"raw/{backend}", "redis-always"):
                z, p = by.get((f"zpydb/{backend}", op, hi)), by.get((peer, op, hi))
                if z and p and p["ops_per_s"]:
                    ratios.append({"name": f"zpydb/{backend} vs {peer}, {op}, {hi} writers",
                                   "ratio": round(z["ops_per_s"] / p["ops_per_s"], 3)})
    return ratios
