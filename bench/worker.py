"""Subprocess side of the benchmarks: ``python -m bench.worker MODE ARGS...``.

Each mode prints one JSON line (its last stdout line) with its timings and its own
peak RSS (ru_maxrss).  Loops are bounded in count and time.
"""

import json
import os
import resource
import sys
import tempfile
import time

import transaction

import zpydb

DEADLINE = 300.0


def maxrss_mb():
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited across fork+exec)."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _raw_zeo(address, server_sync=True):
    import ZEO
    host, port = address.rsplit(":", 1)
    return ZEO.DB((host, int(port)), server_sync=server_sync, wait_timeout=10,
                  blob_dir=tempfile.mkdtemp(prefix="bench-w-blobs-"), cache_size=64 << 20)


def _raw_any(target):
    if target.startswith("zeo://"):
        return _raw_zeo(target[len("zeo://"):])
    import ZODB
    import zodburi
    factory, dbkw = zodburi.resolve_uri(target)
    return ZODB.DB(factory(), **dbkw)


def r2(system, target, nkeys):
    """Cold reads: a brand-new client reads nkeys top-level keys, one statement each."""
    nkeys = int(nkeys)
    t0 = time.perf_counter()
    if system == "zpydb":
        db = zpydb.connect(target, wait_timeout=10)
        t1 = time.perf_counter()
        for i in range(nkeys):
            db[f"c{i}"]._run()
        t2 = time.perf_counter()
        db.close()
    else:
        zdb = _raw_any(target)
        tm = transaction.TransactionManager()
        conn = zdb.open(transaction_manager=tm)
        t1 = time.perf_counter()
        for i in range(nkeys):
            tm.begin()
            dict(conn.root()["zpydb"][f"c{i}"].items())
            tm.abort()
        t2 = time.perf_counter()
        conn.close()
        zdb.close()
    return {"connect_s": t1 - t0, "read_s": t2 - t1, "keys": nkeys,
            "keys_per_s": nkeys / (t2 - t1), "maxrss_mb": maxrss_mb()}


def b1(system, directory, json_path):
    """Bulk load the JSON object's items in ONE transaction."""
    with open(json_path) as stream:
        items = json.load(stream)
    n = len(items)
    rss_loaded = maxrss_mb()
    t0 = time.perf_counter()
    if system == "block":
        db = zpydb.connect(os.path.join(directory, "Data.fs"))
        with db.transaction() as t:
            for key, value in items.items():
                t[key] = value
        db.close()
    elif system == "raw":
        import ZODB
        from BTrees.OOBTree import OOBTree
        from ZODB.FileStorage import FileStorage
        zdb = ZODB.DB(FileStorage(os.path.join(directory, "Data.fs")))
        tm = transaction.TransactionManager()
        conn = zdb.open(transaction_manager=tm)
        tm.begin()
        data = conn.root().setdefault("zpydb", OOBTree())
        for key, value in items.items():
            data[key] = OOBTree(value)
        tm.commit()
        conn.close()
        zdb.close()
    elif system == "tinydb":
        from tinydb import TinyDB
        tdb = TinyDB(os.path.join(directory, "tiny.json"))
        tdb.insert_multiple({"k": k, **v} for k, v in items.items())
        tdb.close()
    elif system == "shelve":
        import shelve
        with shelve.open(os.path.join(directory, "shelf")) as shelf:
            for key, value in items.items():
                shelf[key] = value
    else:
        raise SystemExit(f"unknown system {system}")
    seconds = time.perf_counter() - t0
    return {"items": n, "seconds": seconds, "items_per_s": n / seconds,
            "maxrss_mb": maxrss_mb(), "rss_after_json_load_mb": rss_loaded}


def c1(system, target, worker_id, duration):
    """Write distinct keys for `duration` seconds after the parent says go."""
    duration = float(duration)
    if system == "zpydb":
        db = zpydb.connect(target, wait_timeout=10)

        def write(i):
            db[f"c1-{worker_id}-{i % 500}"] = i
        close = db.close
    else:
        zdb = _raw_any(target)
        tm = transaction.TransactionManager()
        conn = zdb.open(transaction_manager=tm)

        def write(i):
            for attempt in tm.attempts(10):
                with attempt:
                    conn.root()["zpydb"][f"c1-{worker_id}-{i % 500}"] = i

        def close():
            conn.close()
            zdb.close()
    write(-1)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    end = t0 + duration
    count = errors = 0
    while count < 10_000_000:
        try:
            write(count)
            count += 1
        except Exception:  # e.g. RelStorage lock timeouts under contention: count, go on
            errors += 1
            if errors > 1000:
                break
        if time.perf_counter() >= end:
            break
    seconds = time.perf_counter() - t0
    close()
    return {"ops": count, "errors": errors, "seconds": seconds, "maxrss_mb": maxrss_mb()}


def f1(system, action, target, path):
    """Store the file at `path` (action=write) or stream it back (action=read)."""
    chunk = 1 << 20
    if system == "zpydb":
        db = zpydb.connect(target, wait_timeout=30)
        t0 = time.perf_counter()
        if action == "write":
            db["f1"] = zpydb.File(path)
            size = os.path.getsize(path)
        else:
            handle = db["f1"]._run()
            size = 0
            with handle.open() as stream:
                for _ in range(1 << 20):
                    block = stream.read(chunk)
                    if not block:
                        break
                    size += len(block)
        seconds = time.perf_counter() - t0
        db.close()
    else:
        from ZODB.blob import Blob
        zdb = _raw_any(target)
        tm = transaction.TransactionManager()
        conn = zdb.open(transaction_manager=tm)
        t0 = time.perf_counter()
        tm.begin()
        if action == "write":
            blob = Blob()
            with blob.open("w") as out, open(path, "rb") as src:
                for _ in range(1 << 20):
                    block = src.read(chunk)
                    if not block:
                        break
                    out.write(block)
            conn.root()["f1raw"] = blob
            tm.commit()
            size = os.path.getsize(path)
        else:
            size = 0
            with conn.root()["f1raw"].open("r") as stream:
                for _ in range(1 << 20):
                    block = stream.read(chunk)
                    if not block:
                        break
                    size += len(block)
            tm.abort()
        seconds = time.perf_counter() - t0
        conn.close()
        zdb.close()
    return {"bytes": size, "seconds": seconds, "mb_per_s": size / seconds / 1e6,
            "maxrss_mb": maxrss_mb()}


MODES = {"r2": r2, "b1": b1, "c1": c1, "f1": f1}


def main(argv):
    mode, *args = argv
    report = MODES[mode](*args)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
