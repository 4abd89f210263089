"""Time travel workloads: H1 ``path.history(10)`` as the database's history grows,
T1 reads of ``db.at(t)`` against reads of now.

H1 builds FileStorage databases of N transactions (the sizes of the mode) in
which one path, ``db['cfg']['port']``, changed 10 times, spread evenly; every
other transaction writes elsewhere (an events dict, a counter, other keys of
``cfg``'s neighbours in the data root).  The database is written with raw ZODB
commits, zpydb's metadata on each, and FileStorage's per-commit fsync turned
off while building (the file is the same; only its durability during the build
differs).  It then times ``db['cfg']['port'].history(10)`` on each: the
targets are <= 100 ms at the largest size and the same order of time at every
size (the walk must not read the rest of the history).

T1 compares ``db.at(t)['l'][3]`` with ``db['l'][3]`` (read of now), side by
side in alternating rounds, on every backend: target >= 0.8x.
"""

import importlib
import os
import time
from contextlib import contextmanager

import transaction
import ZODB
from ZODB.FileStorage import FileStorage

import zpydb

from .common import alternate, ratio_of, ratio_row, run_batch, summarize, zpydb_for

# the module (ZODB.FileStorage's package attribute of that name is the class)
filestorage_module = importlib.import_module("ZODB.FileStorage.FileStorage")
PATH_CHANGES = 10
HISTORY_TARGET_S = 0.100


@contextmanager
def no_fsync():
    """FileStorage without its fsync per commit (building a throw-away benchmark file)."""
    saved = filestorage_module.fsync
    filestorage_module.fsync = None
    try:
        yield
    finally:
        filestorage_module.fsync = saved


def build(path, transactions, changes=PATH_CHANGES, note_every=1):
    """A Data.fs of ``transactions`` zpydb transactions; ``db['cfg']['port']`` changes
    ``changes`` times among them.  Returns the seconds it took."""
    started = time.perf_counter()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zpydb.connect(path) as db:        # the data root and the stored format, as zpydb makes them
        db["cfg"] = {"port": 0, "host": "h"}
        db["events"] = {}
        db["n"] = 0
        db["n"] += 1                       # a Counter record
    every = max(1, transactions // changes)
    with no_fsync():
        storage = FileStorage(path)
        zdb = ZODB.DB(storage)
        tm = transaction.TransactionManager()
        conn = zdb.open(transaction_manager=tm)
        try:
            data = conn.root()["zpydb"]
            port = 0
            for i in range(transactions):
                txn = tm.begin()
                if i % every == every - 1 and port < changes:
                    port += 1
                    data["cfg"]["port"] = port
                    note = f"db['cfg']['port'] = {port}"
                elif i % 10 == 0:
                    data["n"].add(1)
                    note = "db['n'] += 1"
                elif i % 10 == 1:
                    data[f"k{i % 500}"] = i                  # top-level keys beside 'cfg'
                    note = f"db['k{i % 500}'] = {i}"
                else:
                    data["events"][i % 5000] = i
                    note = f"db['events'][{i % 5000}] = {i}"
                txn.note(note)
                txn.setUser("bench")
                txn.setExtendedInfo("zpydb", "write")
                tm.commit()
                if i % 1000 == 999:
                    conn.cacheMinimize()
        finally:
            conn.close()
            zdb.close()
    return time.perf_counter() - started


def h1(env, mode, tick):
    sizes = mode.extra.get("history_sizes") or ([300, 3000] if mode.name == "smoke"
                                                else [10_000, 100_000])
    rows, timings = [], {}
    for size in sizes:
        path = os.path.join(env.tmp, f"h1-{size}", "Data.fs")
        seconds = build(path, size)
        with zpydb.connect(path) as db:
            got = db["cfg"]["port"].history(PATH_CHANGES)
            assert [c["value"] for c in got] == list(range(PATH_CHANGES, 0, -1)), got
            count, total, lats = run_batch(lambda i: db["cfg"]["port"].history(PATH_CHANGES),
                                           mode.rounds * 3, mode.batch_seconds)
        stats = summarize([count / total], lats)
        timings[size] = stats
        rows.append({"name": f"history({PATH_CHANGES}) of db['cfg']['port']", "size": size,
                     "build_s": round(seconds, 1), **stats})
        tick()
    small, large = sizes[0], sizes[-1]
    ratios = [
        ratio_of(f"history({PATH_CHANGES}) at {large:,} transactions: "
                 f"{HISTORY_TARGET_S * 1000:.0f} ms / median time",
                 HISTORY_TARGET_S, timings[large]["median_us"] / 1e6, 1.0),
        ratio_of(f"history({PATH_CHANGES}) speed at {large:,} vs {small:,} transactions",
                 timings[large]["ops_per_s"], timings[small]["ops_per_s"], 0.5),
    ]
    return {"title": f"path.history({PATH_CHANGES}) as the database's history grows "
                     f"(FileStorage)", "rows": rows, "ratios": ratios}


def t1(env, mode, tick):
    dbs = {backend: zpydb_for(backend, env) for backend in env.backends}
    contestants, pasts = {}, []
    try:
        for backend, db in dbs.items():
            db["l"] = list(range(10))
            then = db.history(1)[0]["id"]
            db["other"] = "a later change"
            past = db.at(then)
            pasts.append(past)
            contestants[f"at/{backend}"] = lambda i, past=past: past["l"][3].value()
            contestants[f"now/{backend}"] = lambda i, db=db: db["l"][3].value()
        stats = alternate(contestants, mode.rounds, mode.n_read, mode.batch_seconds, tick)
    finally:
        for past in pasts:
            past.close()
        for db in dbs.values():
            db.close()
    ratios = [ratio_row(f"db.at(t) read vs current read ({backend})", stats[f"at/{backend}"],
                        stats[f"now/{backend}"], 0.8) for backend in dbs]
    return {"title": "db.at(t)['l'][3] vs db['l'][3]",
            "rows": [{"name": name, **values} for name, values in stats.items()],
            "ratios": ratios}

