"""Time travel workloads: V1 ``path.history(10)`` as the database's history grows,
V2 reads of ``db.at(t)`` against reads of now.

V1 builds FileStorage databases of 10k and 100k transactions (300 and 3000 in
smoke mode) in which one path, ``db['cfg']['port']``, changed 10 times, spread
evenly; every other transaction writes elsewhere (an events dict, a counter).
The database is written with raw ZODB commits carrying the metadata zpydb's
statements record, with FileStorage's per-commit fsync turned off while
building (the file is the same; only its durability during the build
differs).  It then times ``db['cfg']['port'].history(10)``: the targets are
<= 100 ms at the largest size and the same order of time at both sizes (the
walk must not read the rest of the history).  A second pair of databases has
5% of the transactions write top-level keys beside ``'cfg'``: they rewrite the
data root's bucket that holds ``'cfg'``, a record on the path, so the walk
reads each of those revisions' metadata (no target; it shows that cost).

V2 compares ``db.at(t)['l'][3]`` with ``db['l'][3]`` (read of now), side by
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
from zpydb.ops import format_path
from zpydb.transactions import describe_transaction

from .common import alternate, ratio_of, ratio_row, run_batch, summarize, zpydb_for

# the module (ZODB.FileStorage's package attribute of that name is the class)
filestorage_module = importlib.import_module("ZODB.FileStorage.FileStorage")
PATH_CHANGES = 10
HISTORY_TARGET_S = 0.100
NEIGHBOURS = 0.05


@contextmanager
def no_fsync():
    """FileStorage without its fsync per commit (building a throw-away benchmark file)."""
    saved = filestorage_module.fsync
    filestorage_module.fsync = None
    try:
        yield
    finally:
        filestorage_module.fsync = saved


def build(path, transactions, changes=PATH_CHANGES, neighbours=0.0):
    """A Data.fs of ``transactions`` zpydb transactions; ``db['cfg']['port']`` changes
    ``changes`` times among them, evenly spread.

    The others write elsewhere: an events dict (5000 keys), a counter, and a
    fraction ``neighbours`` of them top-level keys beside ``'cfg'`` (in the data
    root's bucket that holds it: records on the path that change for others).
    Returns the seconds it took.
    """
    started = time.perf_counter()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zpydb.connect(path) as db:        # the data root and the stored format, as zpydb makes them
        db["cfg"] = {"port": 0, "host": "h"}
        db["events"] = {}
        db["n"] = 0
        db["n"] += 1                       # a Counter record
    every = max(1, transactions // changes)
    neighbour_every = round(1 / neighbours) if neighbours else 0
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
                    path = ("cfg", "port")
                elif neighbour_every and i % neighbour_every == 1:
                    path = (f"cfg{i % 20:02d}",)               # sorts right beside 'cfg'
                    data[path[0]] = i
                elif i % 10 == 0:
                    data["n"].add(1)
                    path = ("n",)
                else:
                    data["events"][i % 5000] = i
                    path = ("events", i % 5000)
                # the metadata zpydb's own statement records (transactions.describe_transaction)
                describe_transaction(txn, f"{format_path(path)} = ...", wrote=[path])
                tm.commit()
                if i % 1000 == 999:
                    conn.cacheMinimize()
        finally:
            conn.close()
            zdb.close()
    return time.perf_counter() - started


def _time_history(path, mode):
    with zpydb.connect(path) as db:
        got = db["cfg"]["port"].history(PATH_CHANGES)
        assert [c["value"] for c in got] == list(range(PATH_CHANGES, 0, -1)), got
        count, total, lats = run_batch(lambda i: db["cfg"]["port"].history(PATH_CHANGES),
                                       mode.rounds * 3, mode.batch_seconds)
    return summarize([count / total], lats)


def v1(env, mode, tick):
    sizes = [300, 3000] if mode.name == "smoke" else [10_000, 100_000]
    rows, timings = [], {}
    for neighbours in (0.0, NEIGHBOURS):
        for size in sizes:
            path = os.path.join(env.tmp, f"v1-{size}-{neighbours}", "Data.fs")
            seconds = build(path, size, neighbours=neighbours)
            stats = timings[size, neighbours] = _time_history(path, mode)
            label = "others elsewhere" if not neighbours else \
                f"{neighbours:.0%} of others beside 'cfg'"
            rows.append({"name": f"history({PATH_CHANGES}) of db['cfg']['port'], {label}",
                         "size": size, "build_s": round(seconds, 1), **stats})
            tick()
    small, large = sizes[0], sizes[-1]
    ratios = [
        ratio_of(f"history({PATH_CHANGES}) at {large:,} transactions: "
                 f"{HISTORY_TARGET_S * 1000:.0f} ms / median time",
                 HISTORY_TARGET_S, timings[large, 0.0]["median_us"] / 1e6, 1.0),
        ratio_of(f"history({PATH_CHANGES}) speed at {large:,} vs {small:,} transactions",
                 timings[large, 0.0]["ops_per_s"], timings[small, 0.0]["ops_per_s"], 0.5),
        ratio_of(f"the same with {NEIGHBOURS:.0%} neighbour writes (no target: they are "
                 f"records on the path)", timings[large, NEIGHBOURS]["ops_per_s"],
                 timings[small, NEIGHBOURS]["ops_per_s"]),
    ]
    return {"title": f"path.history({PATH_CHANGES}) as the database's history grows "
                     f"(FileStorage)", "rows": rows, "ratios": ratios}


def v2(env, mode, tick):
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

