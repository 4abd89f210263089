"""HP: the hot path, per statement: µs of zpydb's Python over raw ZODB doing the same.

Each statement zpydb runs is what raw ZODB code would do (``tm.begin()``, walk
``root['zpydb']...``, ``tm.abort()``/``tm.commit()``) plus zpydb's own layers:
the Path proxy, the executor, the Ctrl-C hold (interrupts.py), the retry loop
and the transaction note (session.py, transactions.py), the path walk with its
errors (ops.py) and the plain copy of the result (nodes.py).  H1 measures
that difference on the embedded FileStorage, where nothing else (no round
trip) hides it, alternating zpydb and raw in the same rounds, and profiles
each zpydb statement with cProfile (``python -m bench --only HP``).

The statements (``k`` is a dict of a few keys, ``l`` a 10-item list):

* ``read``: ``db['k']['x'].value()`` / ``root['zpydb']['k']['x']``;
* ``compare``: ``db['k']['x'] == 1`` (a read, then ``==`` on the copy);
* ``write``: ``db['k']['x'] = i``, one durable transaction each;
* ``iter-list`` / ``iter-dict``: ``list(db['il'])`` / ``list(db['id'].items())``
  of ITER_SIZE items (µs per item);
* ``block``: ``with db.transaction() as t: t[key] = {...}`` BLOCK_SIZE times,
  the B1 document shape (µs per item; raw stores ``OOBTree(value)`` as B1 does).
"""

import cProfile
import io
import pstats
import time

from BTrees.OOBTree import OOBTree

from .common import Raw, alternate, ratio_row, zpydb_for
from .procs import _top

ITER_SIZE = 10000
BLOCK_SIZE = 2000
#: statements per batch and profiled calls, per statement kind
PER_OP = {"read": 2000, "compare": 2000, "write": 150, "iter-list": 5, "iter-dict": 5,
          "block": 2}
#: items per call (per-item µs for the iterations and the block)
ITEMS = {"iter-list": ITER_SIZE, "iter-dict": ITER_SIZE, "block": BLOCK_SIZE}


def _statements(db, raw):
    """{kind: (zpydb op(i), raw op(i))}."""

    def raw_read(i):
        return raw.read(lambda root: root["zpydb"]["k"]["x"])

    def raw_compare(i):
        return raw.read(lambda root: root["zpydb"]["k"]["x"]) == 1

    def raw_write(i):
        raw.write(lambda root: root["zpydb"]["k"].__setitem__("x", i))

    def raw_iter_list(i):
        return raw.read(lambda root: list(root["zpydb"]["il"]))

    def raw_iter_dict(i):
        return raw.read(lambda root: list(root["zpydb"]["id"].items()))

    def z_block(i):
        with db.transaction() as t:
            for n in range(BLOCK_SIZE):
                t[f"b{i % 4}-{n}"] = {"i": n, "name": f"item {n}"}

    def raw_block(i):
        def load(root):
            data = root["zpydb"]
            for n in range(BLOCK_SIZE):
                data[f"r{i % 4}-{n}"] = OOBTree({"i": n, "name": f"item {n}"})
        raw.write(load)

    return {
        "read": (lambda i: db["k"]["x"].value(), raw_read),
        "compare": (lambda i: db["k"]["x"] == 1, raw_compare),
        "write": (lambda i: db["k"].__setitem__("x", i), raw_write),
        "iter-list": (lambda i: list(db["il"]), raw_iter_list),
        "iter-dict": (lambda i: list(db["id"].items()), raw_iter_dict),
        "block": (z_block, raw_block),
    }


def hp(env, mode, tick):
    db = zpydb_for("file", env)
    raw = Raw(db._session.db, owns_db=False)  # an embedded FileStorage opens once per process
    rows, ratios, profiles = [], [], {}
    try:
        db["k"] = {"x": 1, "y": 2, "z": 3}
        db["il"] = list(range(ITER_SIZE))
        db["id"] = {f"k{i:06d}": i for i in range(ITER_SIZE)}
        statements = _statements(db, raw)
        for op_z, op_raw in statements.values():  # warm both caches
            op_z(0)
            op_raw(0)
        smoke = mode.name == "smoke"
        for kind, (op_z, op_raw) in statements.items():
            n = max(2, PER_OP[kind] // (20 if smoke else 1))
            stats = alternate({"zpydb": op_z, "raw": op_raw}, mode.rounds, n,
                              mode.batch_seconds)
            items = ITEMS.get(kind, 1)
            z_us = stats["zpydb"]["median_us"] / items
            raw_us = stats["raw"]["median_us"] / items
            for name in ("zpydb", "raw"):
                rows.append({"name": f"{name}/{kind}", **stats[name],
                             "us_per_item": round(stats[name]["median_us"] / items, 3)})
            unit = "item" if kind in ITEMS else "statement"
            row = ratio_row(f"{kind}: zpydb vs raw ({z_us - raw_us:+.2f} µs per {unit}, "
                            f"median {z_us:.2f} vs {raw_us:.2f})", stats["zpydb"], stats["raw"])
            row["over_raw_us"] = round(z_us - raw_us, 3)
            ratios.append(row)
            profiles[kind] = _profile(op_z, n, items)
            tick()
    finally:
        raw.close()
        db.close()
    return {"title": "the hot path per statement: zpydb vs raw ZODB on the embedded file "
                     "(µs per statement or item; profiles of the zpydb statements)",
            "rows": rows, "ratios": ratios, "profiles": profiles}


def _profile(op, n, items):
    """cProfile of ``n`` calls; also the own time per statement (or item) by module."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(n):
        op(i)
    prof.disable()
    wall = time.perf_counter() - t0
    tables = _top(prof, 12)
    by_module = {}
    stats = pstats.Stats(prof, stream=io.StringIO())
    for (filename, _line, _func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        by_module[_module_of(filename)] = by_module.get(_module_of(filename), 0.0) + tt
    per = n * items
    tables.append({"by": "module_us_per_unit", "profiled_wall_s": round(wall, 4),
                   "modules": {k: round(v / per * 1e6, 3)
                               for k, v in sorted(by_module.items(), key=lambda kv: -kv[1])}})
    return tables


def _module_of(filename):
    """``zpydb/ops.py`` -> ``zpydb.ops``; a library file -> its top package."""
    if "zpydb/" in filename and "site-packages" not in filename:
        return "zpydb." + filename.rsplit("zpydb/", 1)[1].removesuffix(".py").replace("/", ".")
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0]
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "stdlib"

