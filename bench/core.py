"""In-process workloads: W1 writes, R1 path reads, W2 growing dicts, W3 growing lists, I1 iteration,
L1 len() of a big dict, += on a big list, reversed iteration.

zpydb and its baselines (raw ZODB on the same storage, Redis, TinyDB, shelve) run
alternately in the same rounds (common.alternate) so machine noise hits them alike.
"""

import json
import os
import random
import shelve
import tempfile

from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping

from .common import alternate, peak_rss_mb, ratio_row, raw_for, raw_zeo, zpydb_for


class Opened:
    """zpydb and raw clients per backend, closed together."""

    def __init__(self, env, backends=None, fresh=True):
        self.z, self.raw = {}, {}
        for backend in backends or env.backends:
            opts = {} if fresh else {"fresh_reads": False}
            self.z[backend] = zpydb_for(backend, env, **opts)
            self.raw[backend] = raw_for(backend, env, fresh=fresh, zdb=self.z[backend])

    def close(self):
        for raw in self.raw.values():
            raw.close()
        for db in self.z.values():
            db.close()


def _tiny(env, name):
    from tinydb import TinyDB
    path = os.path.join(env.tmp, f"tinydb-{name}.json")
    return TinyDB(path)


def _shelf(env, name):
    return shelve.open(os.path.join(env.tmp, f"shelve-{name}"))


def _set(db, key, value):
    db[key] = value


def _rows(stats, **extra):
    return [{"name": name, **extra, **values} for name, values in stats.items()]


# -- W1 --------------------------------------------------------------------------------------

def w1(env, mode, tick):
    opened = Opened(env)
    contestants = {}
    for backend in opened.z:
        z, raw = opened.z[backend], opened.raw[backend]
        contestants[f"zpydb/{backend}"] = lambda i, z=z: _set(z, f"w1z{i % 1000}", i)
        contestants[f"raw/{backend}"] = lambda i, raw=raw: raw.write(
            lambda root: _set(root["zpydb"], f"w1r{i % 1000}", i))
    for kind, server in env.redis.items():
        contestants[f"redis-{kind}"] = lambda i, c=server.client: c.set(
            f"w1:{i % 1000}", json.dumps(i))
    tiny = _tiny(env, "w1")
    table = tiny.table("w1")
    table.truncate()
    table.insert_multiple({"k": k, "v": 0} for k in range(100))
    contestants["tinydb"] = lambda i: table.update({"v": i}, doc_ids=[i % 100 + 1])
    shelf = _shelf(env, "w1")

    def shelve_write(i):
        shelf[f"k{i % 1000}"] = i
        shelf.sync()
    contestants["shelve"] = shelve_write
    try:
        stats = alternate(contestants, mode.rounds, mode.n_write, mode.batch_seconds, tick)
    finally:
        opened.close()
        tiny.close()
        shelf.close()
    ratios = [ratio_row(f"zpydb/{b} vs raw/{b}", stats[f"zpydb/{b}"], stats[f"raw/{b}"], 0.9)
              for b in opened.z]
    for kind in env.redis:
        ratios.append(ratio_row(f"zpydb/zeo vs redis-{kind}", stats["zpydb/zeo"],
                                stats[f"redis-{kind}"]))
    for peer in ("tinydb", "shelve"):
        ratios.append(ratio_row(f"zpydb/file vs {peer}", stats["zpydb/file"], stats[peer]))
    return {"title": "durable single-statement writes of top-level keys",
            "rows": _rows(stats), "ratios": ratios}


# -- R1 --------------------------------------------------------------------------------------

def r1(env, mode, tick):
    fresh = Opened(env)
    cached = Opened(env, backends=["zeo"], fresh=False)
    value = list(range(10))
    for z in fresh.z.values():
        z["l"] = value
    contestants = {}
    read_modes = {"zeo": "fresh", "file": "local", "pg": "fresh"}
    for backend, z in fresh.z.items():
        raw = fresh.raw[backend]
        label = f"{backend}-{read_modes[backend]}"
        contestants[f"zpydb/{label}"] = lambda i, z=z: z["l"][3]._run()
        contestants[f"raw/{label}"] = lambda i, raw=raw: raw.read(
            lambda root: root["zpydb"]["l"][3])
    contestants["zpydb/zeo-cached"] = lambda i, z=cached.z["zeo"]: z["l"][3]._run()
    contestants["raw/zeo-cached"] = lambda i, raw=cached.raw["zeo"]: raw.read(
        lambda root: root["zpydb"]["l"][3])
    for kind, server in env.redis.items():
        server.client.set("r1l", json.dumps(value))
        contestants[f"redis-{kind}"] = lambda i, c=server.client: json.loads(c.get("r1l"))[3]
    tiny = _tiny(env, "r1")
    table = tiny.table("r1")
    table.truncate()
    table.insert({"l": value})
    contestants["tinydb"] = lambda i: table.get(doc_id=1)["l"][3]
    shelf = _shelf(env, "r1")
    shelf["l"] = value
    shelf.sync()
    contestants["shelve"] = lambda i: shelf["l"][3]
    try:
        stats = alternate(contestants, mode.rounds, mode.n_read, mode.batch_seconds, tick)
    finally:
        fresh.close()
        cached.close()
        tiny.close()
        shelf.close()
    targets = {"zeo-fresh": 0.8, "zeo-cached": 0.5, "file-local": 0.5, "pg-fresh": 0.8}
    ratios = [ratio_row(f"zpydb/{label} vs raw/{label}", stats[f"zpydb/{label}"],
                        stats[f"raw/{label}"], target)
              for label, target in targets.items() if f"zpydb/{label}" in stats]
    for kind in env.redis:
        ratios.append(ratio_row(f"zpydb/zeo-fresh vs redis-{kind}", stats["zpydb/zeo-fresh"],
                                stats[f"redis-{kind}"]))
    for peer in ("tinydb", "shelve"):
        ratios.append(ratio_row(f"zpydb/file-local vs {peer}", stats["zpydb/file-local"],
                                stats[peer]))
    return {"title": "path reads db['l'][3]._run() vs root['zpydb']['l'][3]",
            "rows": _rows(stats), "ratios": ratios}


# -- W2 --------------------------------------------------------------------------------------

def _fill(raw, getter, target_size, current, prefix, chunk=20000):
    """Grow the mapping getter(root) from current to target_size keys, chunk per commit."""
    rnd = random.Random(target_size)
    while current < target_size:
        step = min(chunk, target_size - current)
        items = {f"{prefix}{rnd.getrandbits(64):016x}": i for i in range(step)}
        raw.write(lambda root: getter(root).update(items))
        current += step
    return current


def w2(env, mode, tick):
    backends = ["file", "zeo"]
    opened = Opened(env, backends=backends)
    sizes_fs = {"file": env.file_path, "zeo": env.zeo_data_fs}
    for backend in backends:
        opened.z[backend]["w2d"] = {}

        def init(root):
            root["w2pm"] = PersistentMapping()
        opened.raw[backend].write(init)
    counts = {b: {"dict": 0, "top": 0, "pm": 0} for b in backends}
    tiny = _tiny(env, "w2")
    table = tiny.table("w2")
    shelf = _shelf(env, "w2")
    peer_dict = {}
    results = []
    pm_limit = 100000
    for size in mode.grow_sizes:
        contestants = {}
        rnd = random.Random(size * 7)
        for backend in backends:
            z, raw = opened.z[backend], opened.raw[backend]
            c = counts[backend]
            c["dict"] = _fill(raw, lambda root: root["zpydb"]["w2d"], size, c["dict"], "d")
            c["top"] = _fill(raw, lambda root: root["zpydb"], size, c["top"], "t")
            fs = sizes_fs[backend]
            key = lambda i, p: f"{p}{rnd.getrandbits(64):016x}"  # noqa: E731
            contestants[f"zpydb/{backend}/dict"] = (
                lambda i, z=z: _set(z["w2d"], key(i, "zd"), i), fs)
            contestants[f"raw/{backend}/dict"] = (
                lambda i, raw=raw: raw.write(
                    lambda root: _set(root["zpydb"]["w2d"], key(i, "rd"), i)), fs)
            contestants[f"zpydb/{backend}/top"] = (lambda i, z=z: _set(z, key(i, "zt"), i), fs)
            contestants[f"raw/{backend}/top"] = (
                lambda i, raw=raw: raw.write(lambda root: _set(root["zpydb"], key(i, "rt"), i)),
                fs)
            if size <= pm_limit:
                c["pm"] = _fill(raw, lambda root: root["w2pm"], size, c["pm"], "p")
                contestants[f"raw-PersistentMapping/{backend}"] = (
                    lambda i, raw=raw: raw.write(lambda root: _set(root["w2pm"], key(i, "rp"), i)),
                    fs)
        # peers hold one nested dict of `size` keys and rewrite it on each write
        while len(peer_dict) < size:
            peer_dict[f"k{len(peer_dict)}"] = len(peer_dict)
        for kind, server in env.redis.items():
            cl = server.client
            cl.set("w2", json.dumps(peer_dict))
            cl.delete("w2h")
            cl.hset("w2h", mapping=peer_dict)

            def rmw(i, cl=cl):
                d = json.loads(cl.get("w2"))
                d[f"n{i}"] = i
                cl.set("w2", json.dumps(d))
            contestants[f"redis-{kind}/json-rmw"] = (rmw, None)
            contestants[f"redis-{kind}/hset"] = (lambda i, cl=cl: cl.hset("w2h", f"n{i}", i), None)
        table.truncate()
        table.insert({"d": peer_dict})

        def tiny_write(i):
            doc = table.get(doc_id=1)
            doc["d"][f"n{i}"] = i
            table.update({"d": doc["d"]}, doc_ids=[1])
        contestants["tinydb"] = (tiny_write, None)
        shelf["d"] = peer_dict
        shelf.sync()

        def shelve_write(i):
            d = shelf["d"]
            d[f"n{i}"] = i
            shelf["d"] = d
            shelf.sync()
        contestants["shelve"] = (shelve_write, None)
        stats = alternate(_with_bytes(contestants), max(3, mode.rounds - 2), mode.n_grow,
                          min(1.0, mode.batch_seconds), tick)
        for name, values in stats.items():
            results.append({"name": name, "size": size, **values,
                            "bytes_per_write": _bytes_per_write(contestants, name)})
    opened.close()
    tiny.close()
    shelf.close()
    growth = _growth(results, mode.grow_sizes, 1.5,
                     [f"zpydb/{b}/{v}" for b in backends for v in ("dict", "top")])
    return {"title": "per-write cost into one dict as it grows (and db's own top-level keys)",
            "rows": results, "ratios": growth}


_BYTES = {}


def _with_bytes(contestants):
    """Wrap ops whose Data.fs is known so each call records the file's growth."""
    wrapped = {}
    for name, (op, path) in contestants.items():
        _BYTES[name] = [0, 0]
        if path is None:
            wrapped[name] = op
            continue

        def measured(i, op=op, path=path, name=name):
            before = os.path.getsize(path)
            op(i)
            _BYTES[name][0] += os.path.getsize(path) - before
            _BYTES[name][1] += 1
        wrapped[name] = measured
    return wrapped


def _bytes_per_write(contestants, name):
    total, count = _BYTES.get(name, (0, 0))
    return round(total / count, 1) if count else None


def _growth(results, sizes, target, names):
    """Cost at the largest size / cost at the smallest, from per-call median latencies."""
    ratios = []
    for name in names:
        by_size = {r["size"]: r["median_us"] for r in results if r["name"] == name}
        if sizes[0] in by_size and sizes[-1] in by_size and by_size[sizes[0]]:
            growth = by_size[sizes[-1]] / by_size[sizes[0]]
            ratios.append({"name": f"{name}: cost at {sizes[-1]} / cost at {sizes[0]}",
                           "ratio": round(growth, 3), "target": f"<= {target}",
                           "pass": bool(growth <= target)})
    return ratios


# -- W3 --------------------------------------------------------------------------------------

def w3(env, mode, tick):
    backends = ["file", "zeo"]
    opened = Opened(env, backends=backends)
    sizes_fs = {"file": env.file_path, "zeo": env.zeo_data_fs}
    first = mode.grow_sizes[0]
    for backend in backends:
        opened.z[backend]["w3"] = list(range(first))

        def init(root):
            root["w3pl"] = PersistentList(range(first))
        opened.raw[backend].write(init)
    results = []
    for size in mode.grow_sizes:
        contestants = {}
        for backend in backends:
            z, raw = opened.z[backend], opened.raw[backend]
            have = len(z["w3"])
            if have < size:
                z["w3"].extend(range(have, size))
            have_raw = raw.read(lambda root: len(root["w3pl"]))
            if have_raw < size:
                raw.write(lambda root: root["w3pl"].extend(range(have_raw, size)))
            fs = sizes_fs[backend]
            contestants[f"zpydb/{backend}/append"] = (lambda i, z=z: z["w3"].append(i), fs)
            contestants[f"raw-PersistentList/{backend}/append"] = (
                lambda i, raw=raw: raw.write(lambda root: root["w3pl"].append(i)), fs)
        stats = alternate(_with_bytes(contestants), max(3, mode.rounds - 2), mode.n_grow,
                          min(1.0, mode.batch_seconds), tick)
        for name, values in stats.items():
            results.append({"name": name, "size": size, **values,
                            "bytes_per_write": _bytes_per_write(contestants, name)})
    kinds = opened.z["file"]._session  # noqa: F841 (kept open until here)
    opened.close()
    growth = _growth(results, mode.grow_sizes, 2.0,
                     [f"zpydb/{b}/append" for b in backends])
    growth += _growth(results, mode.grow_sizes, 2.0,
                      [f"raw-PersistentList/{b}/append" for b in backends])
    for row in growth:
        if row["name"].startswith("raw-"):
            row["target"] = "contrast (no target)"
            row.pop("pass")
    return {"title": "append to one list as it grows (zpydb BigList vs raw PersistentList)",
            "rows": results, "ratios": growth}


# -- I1 --------------------------------------------------------------------------------------

def i1(env, mode, tick):
    n = mode.iter_size
    backends = [b for b in env.backends if b in ("file", "zeo", "pg")]
    opened = Opened(env, backends=backends)
    contestants = {}
    for backend in backends:
        z, raw = opened.z[backend], opened.raw[backend]
        z["i1l"] = list(range(n))
        z["i1d"] = {f"k{i:07d}": i for i in range(n)}
        contestants[f"zpydb/{backend}/list"] = lambda i, z=z: list(z["i1l"])
        contestants[f"raw/{backend}/list"] = lambda i, raw=raw: raw.read(
            lambda root: list(root["zpydb"]["i1l"]))
        contestants[f"zpydb/{backend}/dict"] = lambda i, z=z: list(z["i1d"].items())
        contestants[f"raw/{backend}/dict"] = lambda i, raw=raw: raw.read(
            lambda root: list(root["zpydb"]["i1d"].items()))
    for kind, server in env.redis.items():
        cl = server.client
        cl.delete("i1l", "i1h")
        for start in range(0, n, 10000):
            cl.rpush("i1l", *range(start, min(n, start + 10000)))
        cl.hset("i1h", mapping={f"k{i:07d}": i for i in range(n)})
        cl.set("i1j", json.dumps(list(range(n))))
        contestants[f"redis-{kind}/list"] = lambda i, cl=cl: cl.lrange("i1l", 0, -1)
        contestants[f"redis-{kind}/dict"] = lambda i, cl=cl: cl.hgetall("i1h")
        contestants[f"redis-{kind}/json-list"] = lambda i, cl=cl: json.loads(cl.get("i1j"))
    try:
        # warm the caches once: I1 measures iteration, R2 measures cold reads
        for op in contestants.values():
            op(0)
        stats = alternate(contestants, mode.rounds, 3, mode.batch_seconds, tick)
    finally:
        opened.close()
    rows = []
    for name, values in stats.items():
        rows.append({"name": name, **values, "items_per_s": values["ops_per_s"] * n})
    ratios = []
    for backend in backends:
        for what in ("list", "dict"):
            ratios.append(ratio_row(f"zpydb/{backend}/{what} vs raw/{backend}/{what}",
                                    stats[f"zpydb/{backend}/{what}"],
                                    stats[f"raw/{backend}/{what}"]))
    for kind in env.redis:
        for what in ("list", "dict"):
            ratios.append(ratio_row(f"zpydb/zeo/{what} vs redis-{kind}/{what}",
                                    stats[f"zpydb/zeo/{what}"], stats[f"redis-{kind}/{what}"]))
    return {"title": f"iterate a {n}-element list and a {n}-key dict (warm caches)",
            "size": n, "rows": rows, "ratios": ratios, "peak_rss_mb": peak_rss_mb()}


# -- L1 --------------------------------------------------------------------------------------

L1_IADD_ITEMS = 10


def l1(env, mode, tick):
    """Costs that must not grow with the value: len() of a big dict, += on a big list,
    and reversed() iterating as fast as forward iteration.

    * len(): ``len(db['d'])`` of a ``len_keys`` dict (a BigDict: one Length record)
      against ``len()`` of the same stored OOBTree through raw ZODB, which walks
      its buckets: O(1) against O(n), same data, same storage, both caches warm.
    * ``db['l'] += <10 items>`` on a list of ``iadd_list`` items against
      ``db['l'].append(x)`` (both one durable statement), and against what += cost
      before (read the list, add, write it back), for contrast.
    * ``reversed(db['i'])`` against ``iter(db['i'])`` for a list and a dict of
      ``iter_size`` items (batches of one snapshot both ways).
    """
    backends = [b for b in ("file", "zeo") if b in env.backends]
    opened = Opened(env, backends=backends)
    n, size, k = mode.len_keys, mode.iadd_list, L1_IADD_ITEMS
    extra = list(range(k))
    contestants = {}
    for backend in backends:
        z, raw = opened.z[backend], opened.raw[backend]
        z["l1d"] = {}
        for start in range(0, n, 100_000):  # 100k keys per statement
            z["l1d"].update({f"k{i:07d}": i for i in range(start, min(n, start + 100_000))})
        z["l1l"] = list(range(size))
        z["l1copy"] = list(range(size))
        z["l1i"] = list(range(mode.iter_size))
        z["l1id"] = {f"k{i:07d}": i for i in range(mode.iter_size)}
        contestants[f"zpydb/{backend}/len"] = lambda i, z=z: len(z["l1d"])
        contestants[f"raw/{backend}/len-OOBTree"] = lambda i, raw=raw: raw.read(
            lambda root: len(root["zpydb"]["l1d"].tree))
        contestants[f"zpydb/{backend}/iadd-{k}"] = lambda i, z=z: z["l1l"].__iadd__(extra)
        contestants[f"zpydb/{backend}/append"] = lambda i, z=z: z["l1l"].append(i)
        contestants[f"zpydb/{backend}/read-add-write-{k}"] = lambda i, z=z: z.__setitem__(
            "l1copy", z["l1copy"].value() + extra)
        contestants[f"zpydb/{backend}/list-forward"] = lambda i, z=z: sum(1 for _ in z["l1i"])
        contestants[f"zpydb/{backend}/list-reversed"] = lambda i, z=z: sum(
            1 for _ in reversed(z["l1i"]))
        contestants[f"zpydb/{backend}/dict-forward"] = lambda i, z=z: sum(1 for _ in z["l1id"])
        contestants[f"zpydb/{backend}/dict-reversed"] = lambda i, z=z: sum(
            1 for _ in reversed(z["l1id"]))
    try:
        for op in contestants.values():  # warm the caches once
            op(0)
        stats = alternate(contestants, mode.rounds, 20, min(2.0, mode.batch_seconds), tick)
    finally:
        opened.close()
    ratios = []
    for b in backends:
        ratios += [
            ratio_row(f"zpydb/{b}/len vs raw/{b}/len-OOBTree ({n} keys)",
                      stats[f"zpydb/{b}/len"], stats[f"raw/{b}/len-OOBTree"],
                      10.0 if n >= 100_000 else None),  # small dicts: per-statement overhead
            ratio_row(f"zpydb/{b}/iadd-{k} vs zpydb/{b}/append ({size} items)",
                      stats[f"zpydb/{b}/iadd-{k}"], stats[f"zpydb/{b}/append"], 0.5),
            ratio_row(f"zpydb/{b}/iadd-{k} vs zpydb/{b}/read-add-write-{k} (the old +=)",
                      stats[f"zpydb/{b}/iadd-{k}"], stats[f"zpydb/{b}/read-add-write-{k}"]),
            ratio_row(f"zpydb/{b}/list-reversed vs list-forward ({mode.iter_size} items)",
                      stats[f"zpydb/{b}/list-reversed"], stats[f"zpydb/{b}/list-forward"], 0.7),
            ratio_row(f"zpydb/{b}/dict-reversed vs dict-forward ({mode.iter_size} keys)",
                      stats[f"zpydb/{b}/dict-reversed"], stats[f"zpydb/{b}/dict-forward"], 0.7),
        ]
    return {"title": f"len() of a {n}-key dict, += on a {size}-item list, reversed iteration",
            "rows": _rows(stats), "ratios": ratios}


_ = (OOBTree, tempfile)


# -- W4 --------------------------------------------------------------------------------------

def _retrying(raw, func):
    """``raw.write(func)`` retried on conflicts, as zpydb retries: the clients' top-level
    keys share the root's buckets, and BTrees cannot merge every pair of changes."""
    for attempt in raw.tm.attempts(20):
        with attempt:
            func(raw.conn.root())


def _pinging(db):
    """``db`` whose writes all begin with the server round trip (no blind writes):
    zpydb before issue 13, for the A/B of W4.  Only this client object is changed."""
    executor = db._executor
    write = executor.write
    executor.write = lambda op, note, wrote=(), blind=False: write(op, note, wrote, blind=False)
    return db


def w4(env, mode, tick):
    """Durable writes over ZEO: blind writes without the ping (readCurrent on the path)
    vs every write pinging first, vs raw ZODB with and without ``server_sync``."""
    z = zpydb_for("zeo", env)
    z_ping = _pinging(zpydb_for("zeo", env))
    raws = {"nosync": raw_zeo(env.zeo.address, server_sync=False, tmpdir=env.tmp),
            "sync": raw_zeo(env.zeo.address, server_sync=True, tmpdir=env.tmp)}
    # each contestant writes its own keys, dict and list: a raw client without
    # server_sync has no retry, and a stale view of another's dict would conflict
    names = ["zpydb", "zpydb-ping"] + [f"raw-{sync}" for sync in raws]
    for name in names:
        z[f"w4-{name}"] = {"x": 0}
        z[f"w4l-{name}"] = []
    statements = {
        "top": (lambda db, i, n: db.__setitem__(f"w4t-{n}-{i % 1000}", i),
                lambda root, i, n: root["zpydb"].__setitem__(f"w4t-{n}-{i % 1000}", i)),
        "nested": (lambda db, i, n: db[f"w4-{n}"].__setitem__("x", i),
                   lambda root, i, n: root["zpydb"][f"w4-{n}"].__setitem__("x", i)),
        "append": (lambda db, i, n: db[f"w4l-{n}"].append(i),
                   lambda root, i, n: root["zpydb"][f"w4l-{n}"].append(i)),
    }
    contestants = {}
    for kind, (zop, rop) in statements.items():
        contestants[f"zpydb/{kind}"] = lambda i, zop=zop: zop(z, i, "zpydb")
        contestants[f"zpydb-ping/{kind}"] = lambda i, zop=zop: zop(z_ping, i, "zpydb-ping")
        for sync, raw in raws.items():
            contestants[f"raw-{sync}/{kind}"] = lambda i, rop=rop, raw=raw, n=f"raw-{sync}": (
                _retrying(raw, lambda root: rop(root, i, n)))
    try:
        stats = alternate(contestants, mode.rounds, mode.n_write, mode.batch_seconds, tick)
    finally:
        for raw in raws.values():
            raw.close()
        z.close()
        z_ping.close()
    ratios = []
    for kind in statements:
        ratios.append(ratio_row(f"{kind}: zpydb vs raw without server_sync",
                                stats[f"zpydb/{kind}"], stats[f"raw-nosync/{kind}"], 0.95))
        ratios.append(ratio_row(f"{kind}: zpydb pinging every write vs raw without server_sync",
                                stats[f"zpydb-ping/{kind}"], stats[f"raw-nosync/{kind}"]))
        ratios.append(ratio_row(f"{kind}: zpydb vs zpydb pinging every write",
                                stats[f"zpydb/{kind}"], stats[f"zpydb-ping/{kind}"]))
        ratios.append(ratio_row(f"{kind}: zpydb vs raw with server_sync",
                                stats[f"zpydb/{kind}"], stats[f"raw-sync/{kind}"]))
    return {"title": "durable ZEO writes: blind writes without the server_sync ping "
                     "(readCurrent on the path) vs pinging every write, vs raw ZODB",
            "rows": _rows(stats), "ratios": ratios}
