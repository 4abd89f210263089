"""Workloads with other processes: R2 cold reads, B1 bulk load, C1 concurrent clients,
S1 replica staleness, F1 files; and P1, where the time of one durable ZEO write goes."""

import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from BTrees.OOBTree import OOBTree

import zpydb

from .common import (REPO, percentile, peak_rss_mb, python_cmd, raw_zeo, run_worker, vm_hwm_mb,
                     zpydb_for)


def _median_reports(reports, key):
    return statistics.median(r[key] for r in reports)


# -- FS: the fsync floor --------------------------------------------------------------------

def fsync_rate(directory, max_seconds=2.0, max_count=20000):
    """write(64 bytes)+fsync in a loop on a temp file in `directory`: fsyncs per second."""
    fd, path = tempfile.mkstemp(prefix="bench-fsync-", dir=directory)
    try:
        count = 0
        t0 = time.perf_counter()
        while count < max_count:
            os.write(fd, b"x" * 64)
            os.fsync(fd)
            count += 1
            if time.perf_counter() - t0 > max_seconds:
                break
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return {"fsyncs": count, "seconds": seconds, "fsyncs_per_s": count / seconds,
            "fsync_us": seconds / count * 1e6}


def fs(env, mode, tick):
    result = fsync_rate(str(env.zeo.data_dir), max_seconds=0.5 if mode.name == "smoke" else 3.0)
    tick()
    return {"title": "fsync floor: write(64 B) + fsync on the ZEO data directory's filesystem",
            "rows": [{"name": "write+fsync", "ops_per_s": result["fsyncs_per_s"],
                      "median_us": result["fsync_us"], **result}], "ratios": []}


# -- R2 -------------------------------------------------------------------------------------

def r2(env, mode, tick):
    n = mode.cold_keys
    z = zpydb_for("zeo", env)
    raw = raw_zeo(env.zeo.address, tmpdir=env.tmp)
    try:
        for start in range(0, n, 5000):
            chunk = range(start, min(n, start + 5000))
            raw.write(lambda root: root["zpydb"].update(
                {f"c{i}": OOBTree({"i": i, "name": f"item {i}"}) for i in chunk}))
    finally:
        raw.close()
        z.close()
    reports = {"zpydb": [], "raw": []}
    rounds = 2 if mode.name != "full" else 3
    for r in range(rounds):
        order = ["zpydb", "raw"] if r % 2 == 0 else ["raw", "zpydb"]
        for system in order:
            reports[system].append(run_worker(["r2", system, env.zeo.url, n]))
        tick()
    rows = []
    for system, reps in reports.items():
        rows.append({"name": f"{system}/zeo cold client", "keys": n,
                     "ops_per_s": _median_reports(reps, "keys_per_s"),
                     "median_us": 1e6 / _median_reports(reps, "keys_per_s"),
                     "connect_s": _median_reports(reps, "connect_s"),
                     "read_s": _median_reports(reps, "read_s"),
                     "maxrss_mb": max(r["maxrss_mb"] for r in reps),
                     "ops_per_s_rounds": [round(r["keys_per_s"], 1) for r in reps]})
    ratio = rows[0]["ops_per_s"] / rows[1]["ops_per_s"]
    return {"title": f"cold reads: a new client process reads {n} keys over ZEO, one "
                     f"statement (transaction) per key",
            "rows": rows, "ratios": [{"name": "zpydb vs raw (cold client)",
                                      "ratio": round(ratio, 3)}]}


# -- B1 -------------------------------------------------------------------------------------

def _wait4(process, timeout):
    """Wait for a Popen bounded in time; return (returncode, peak RSS MB) via wait4."""
    deadline = time.monotonic() + timeout
    peak = 0.0  # VmHWM sampled until exit (ru_maxrss would include the parent's at fork)
    while time.monotonic() < deadline:
        peak = max(peak, vm_hwm_mb(process.pid))
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, peak
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise RuntimeError(f"{process.args} took more than {timeout}s")


def b1(env, mode, tick):
    rows = []
    zpydb_cli = os.path.join(os.path.dirname(sys.executable), "zpydb")
    for n in mode.bulk_sizes:
        json_path = os.path.join(env.tmp, f"b1-{n}.json")
        with open(json_path, "w") as stream:
            json.dump({f"k{i:07d}": {"i": i, "name": f"item {i}"} for i in range(n)}, stream)
        for system in ("import", "block", "raw", "tinydb", "shelve"):
            directory = tempfile.mkdtemp(prefix=f"bench-b1-{system}-", dir=env.tmp)
            if system == "import":
                t0 = time.perf_counter()
                process = subprocess.Popen(
                    [zpydb_cli, "import", json_path, os.path.join(directory, "Data.fs"),
                     "--no-progress"], cwd=REPO, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE)
                code, rss = _wait4(process, 1800)
                seconds = time.perf_counter() - t0
                if code != 0:
                    raise RuntimeError(f"zpydb import failed: {process.stderr.read()[-2000:]}")
                report = {"items": n, "seconds": seconds, "items_per_s": n / seconds,
                          "maxrss_mb": rss, "note": "whole CLI process incl. start-up"}
            else:
                report = run_worker(["b1", system, directory, json_path], timeout=1800)
            size = sum(os.path.getsize(os.path.join(directory, f))
                       for f in os.listdir(directory) if os.path.isfile(os.path.join(directory, f)))
            rows.append({"name": f"{system}" if system in ("tinydb", "shelve") else
                         f"{'zpydb ' if system != 'raw' else ''}{system}/file",
                         "items": n, "ops_per_s": report["items_per_s"],
                         "median_us": 1e6 / report["items_per_s"], **report,
                         "disk_bytes": size})
            shutil.rmtree(directory, ignore_errors=True)
            tick()
        os.unlink(json_path)
    ratios = []
    for n in mode.bulk_sizes:
        by = {r["name"]: r for r in rows if r["items"] == n}
        for name in ("zpydb import/file", "zpydb block/file"):
            ratios.append({"name": f"{name} vs raw/file at {n} items",
                           "ratio": round(by[name]["ops_per_s"] / by["raw/file"]["ops_per_s"], 3)})
    if len(mode.bulk_sizes) > 1:
        lo, hi = mode.bulk_sizes[0], mode.bulk_sizes[-1]
        for name in ("zpydb import/file", "zpydb block/file", "raw/file"):
            a = [r for r in rows if r["name"] == name and r["items"] == lo][0]
            b = [r for r in rows if r["name"] == name and r["items"] == hi][0]
            per_k = (b["maxrss_mb"] - a["maxrss_mb"]) / ((hi - lo) / 1000)
            ratios.append({"name": f"{name}: peak RSS growth per 1000 items "
                                   f"({lo} -> {hi}), MB", "ratio": round(per_k, 3)})
    return {"title": "bulk load of N small items in one transaction (subprocess; file storage)",
            "rows": rows, "ratios": ratios}


# -- C1 -------------------------------------------------------------------------------------

def _c1_run(system, target, n, duration):
    procs = []
    try:
        for k in range(n):
            procs.append(subprocess.Popen(python_cmd("c1", system, target, k, duration),
                                          cwd=REPO, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        for p in procs:  # bounded: readline returns at EOF if the worker dies
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"c1 worker not ready: {line!r} {p.stderr.read()[-1500:]}")
        t0 = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=duration + 120)
            if p.returncode != 0:
                raise RuntimeError(f"c1 worker failed: {err[-1500:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    ops = sum(r["ops"] for r in reports)
    errors = sum(r.get("errors", 0) for r in reports)
    longest = max(r["seconds"] for r in reports)
    return {"ops": ops, "errors": errors, "seconds": longest, "wall_s": wall, "ops_per_s": ops / longest,
            "maxrss_mb": max(r["maxrss_mb"] for r in reports)}


def c1(env, mode, tick):
    targets = [("zeo", env.zeo.url)] + ([("pg", env.pg_url)] if env.pg_url else [])
    rows = []
    for n in mode.clients:
        for backend, target in targets:
            order = ["zpydb", "raw"] if n % 2 else ["raw", "zpydb"]
            for system in order:
                result = _c1_run(system, target, n, mode.c1_seconds)
                rows.append({"name": f"{system}/{backend}", "clients": n, **result,
                             "median_us": 1e6 * n / result["ops_per_s"] if result["ops"] else 0})
            tick()
    ratios = []
    for backend, _ in targets:
        for n in mode.clients:
            z = [r for r in rows if r["name"] == f"zpydb/{backend}" and r["clients"] == n][0]
            raw = [r for r in rows if r["name"] == f"raw/{backend}" and r["clients"] == n][0]
            ratios.append({"name": f"zpydb/{backend} vs raw/{backend}, {n} clients",
                           "ratio": round(z["ops_per_s"] / raw["ops_per_s"], 3)})
    return {"title": "N client processes writing distinct keys (durable commits): aggregate ops/s",
            "rows": rows, "ratios": ratios}


# -- S1 -------------------------------------------------------------------------------------

def s1(env, mode, tick):
    primary = zpydb_for("zeo", env)
    replica = zpydb.connect(env.replica.url, read_only=True, wait_timeout=10)
    delays, missed = [], 0
    try:
        primary["s1"] = -1
        for i in range(mode.s1_samples):
            primary["s1"] = i
            t0 = time.perf_counter()
            deadline = t0 + 2.0
            polls = 0
            while polls < 100000:
                polls += 1
                if replica.get("s1") == i:
                    delays.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() > deadline:
                    missed += 1
                    break
        tick()
    finally:
        replica.close()
        primary.close()
    delays.sort()
    row = {"name": "primary write -> visible on replica", "samples": len(delays),
           "missed_after_2s": missed,
           "median_us": statistics.median(delays) * 1e6 if delays else 0.0,
           "p99_us": percentile(delays, 99) * 1e6, "max_us": (delays[-1] * 1e6 if delays else 0.0),
           "ops_per_s": 1 / statistics.median(delays) if delays else 0.0}
    return {"title": "replica staleness: write on the primary (zpydb), poll a read-only ZEO "
                     "replica (zpydb, fresh_reads) until the value is visible",
            "rows": [row], "ratios": []}


# -- F1 -------------------------------------------------------------------------------------

def f1(env, mode, tick):
    if not hasattr(zpydb, "File"):
        return {"title": "large File over ZEO", "skipped": "zpydb.File is not available",
                "rows": [], "ratios": []}
    path = os.path.join(env.tmp, "f1.bin")
    with open(path, "wb") as stream:
        block = os.urandom(1 << 20)
        for _ in range(mode.file_mb):
            stream.write(block)
    rows = []
    try:
        for system in ("zpydb", "raw"):
            target = env.zeo.url
            for action in ("write", "read"):
                before = vm_hwm_mb(env.zeo.pid)
                report = run_worker(["f1", system, action, target, path], timeout=900)
                rows.append({"name": f"{system}/zeo {action}", "mb": mode.file_mb,
                             "ops_per_s": report["mb_per_s"], "unit": "MB/s",
                             "median_us": report["seconds"] * 1e6, **report,
                             "server_peak_rss_mb": vm_hwm_mb(env.zeo.pid),
                             "server_peak_rss_before_mb": before})
                tick()
    finally:
        os.unlink(path)
    by = {r["name"]: r for r in rows}
    ratios = [{"name": f"zpydb vs raw blob {a}",
               "ratio": round(by[f"zpydb/zeo {a}"]["mb_per_s"] / by[f"raw/zeo {a}"]["mb_per_s"], 3)}
              for a in ("write", "read")]
    return {"title": f"store and read a {mode.file_mb} MB File over ZEO (client subprocess)",
            "rows": rows, "ratios": ratios}


# -- P1 -------------------------------------------------------------------------------------

def _cpu_of(pid):
    import psutil
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def p1(env, mode, tick):
    """Where one durable ZEO write goes: client CPU, server CPU, fsync, the rest (waiting)."""
    n = mode.profile_writes
    z = zpydb_for("zeo", env)
    raw = raw_zeo(env.zeo.address, tmpdir=env.tmp)
    floor = fsync_rate(str(env.zeo.data_dir), max_seconds=1.0 if mode.name != "smoke" else 0.3)
    rows = []
    try:
        storage = raw.db.storage
        pings = []
        for _ in range(min(500, n)):
            t0 = time.perf_counter()
            storage.ping()
            pings.append(time.perf_counter() - t0)
        rtt = statistics.median(pings)
        ops = {"zpydb": lambda i: z.__setitem__(f"p1z{i % 100}", i),
               "raw": lambda i: raw.write(lambda root: root["zpydb"].__setitem__(f"p1r{i % 100}", i))}
        for rnd in range(2):
            for name in (["zpydb", "raw"] if rnd == 0 else ["raw", "zpydb"]):
                op = ops[name]
                op(0)
                server0, cpu0, t0 = _cpu_of(env.zeo.pid), time.process_time(), time.perf_counter()
                for i in range(n):
                    op(i)
                wall = (time.perf_counter() - t0) / n
                cpu = (time.process_time() - cpu0) / n
                server = (_cpu_of(env.zeo.pid) - server0) / n
                rows.append({"name": name, "round": rnd, "wall_us": wall * 1e6,
                             "client_cpu_us": cpu * 1e6, "server_cpu_us": server * 1e6,
                             "fsync_us": floor["fsync_us"], "ping_rtt_us": rtt * 1e6,
                             "ops_per_s": 1 / wall, "median_us": wall * 1e6})
            tick()
        profiles = {}
        for name, op in ops.items():
            prof = cProfile.Profile()
            prof.enable()
            for i in range(n):
                op(i)
            prof.disable()
            profiles[name] = _top(prof, 14)
    finally:
        raw.close()
        z.close()
    merged = []
    for name in ("zpydb", "raw"):
        mine = [r for r in rows if r["name"] == name]
        best = {k: statistics.median(r[k] for r in mine)
                for k in ("wall_us", "client_cpu_us", "server_cpu_us", "fsync_us", "ping_rtt_us",
                          "ops_per_s", "median_us")}
        # the server's fsync blocks its thread without CPU: count it apart from server CPU
        best["other_wait_us"] = max(0.0, best["wall_us"] - best["client_cpu_us"]
                                    - best["server_cpu_us"] - best["fsync_us"])
        best["distance_from_fsync_floor_x"] = best["wall_us"] / best["fsync_us"]
        merged.append({"name": name, **best})
    return {"title": "where one durable ZEO write goes (per write; client CPU by "
                     "process_time, server CPU by psutil on runzeo, fsync measured)",
            "rows": merged, "ratios": [{"name": "zpydb vs raw durable ZEO write",
                                        "ratio": round(merged[0]["ops_per_s"]
                                                       / merged[1]["ops_per_s"], 3)}],
            "fsync": floor, "profiles": profiles}


def _top(prof, count):
    out = []
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = stats.total_tt
    entries = []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        short = filename.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        entries.append({"function": f"{short}:{line}({func})", "calls": nc,
                        "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)})
    for key in ("tottime_s", "cumtime_s"):
        ranked = sorted(entries, key=lambda e: e[key], reverse=True)[:count]
        out.append({"by": key, "total_s": round(total, 4), "top": ranked})
    return out


_ = (peak_rss_mb,)
