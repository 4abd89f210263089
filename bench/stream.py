"""X1: ``zpydb export`` and ``zpydb import`` stream: peak memory at two sizes, side by side.

Each run is the real command in a subprocess (start-up included), on every
backend, at a small and a large item count (100k and 1M outside --smoke);
its peak RSS (VmHWM, sampled until exit) is compared between the two sizes.
Streaming means the ratio stays near 1: what grows is only the database's
own caches (bounded by their settings) and, for import, ZODB's bookkeeping of
the one uncommitted transaction (~150-300 bytes per new persistent object: the
"records" shape, a dict of small dicts, makes one per item; a list or a dict
of strings makes one per BTree bucket / list chunk).

Every exported file is compared byte for byte with the document that was
imported (export writes what ``json.dump`` writes), so the numbers are of
runs that round-tripped.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

from .common import REPO, zpydb_for
from .procs import _wait4

#: Peak RSS at the large size / at the small size must stay below these (not for
#: "records").  Import's is higher: ZODB's ~300 bytes per new object (a dict of 1M
#: strings: ~67k buckets, ~20 MB); holding the document would take 3-5x.
TARGETS = {"export": 1.5, "import": 2.0}
TIMEOUT = 1800


def _document(path, shape, n):
    """Write the JSON that export writes for this shape (keys sorted, json.dump's spacing)."""
    with open(path, "w") as stream:
        if shape == "list":
            stream.write("[" + ", ".join(json.dumps(f"item {i:08d} of the list")
                                         for i in range(n)) + "]\n")
            return
        stream.write("{")
        for i in range(n):
            value = (f"value {i} of the dict" if shape == "dict" else
                     {"n": i, "s": f"item {i}"})
            stream.write((", " if i else "") + f'"k{i:08d}": ' + json.dumps(value))
        stream.write("}\n")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cli(*args):
    """Run ``zpydb ARGS`` bounded in time; (seconds, peak RSS MB)."""
    zpydb_cli = os.path.join(os.path.dirname(sys.executable), "zpydb")
    t0 = time.perf_counter()
    process = subprocess.Popen([zpydb_cli, *args, "--no-progress"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    code, rss = _wait4(process, TIMEOUT)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"zpydb {args[0]} failed: {process.stderr.read()[-2000:]}")
    process.stderr.close()
    return seconds, rss


def _url(backend, env, shape, n):
    """Where to import: a fresh Data.fs per run (its lock is the subprocess's), or the server."""
    if backend == "file":
        folder = os.path.join(env.tmp, f"x1-{shape}-{n}")
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, "Data.fs")
    return env.zeo.url if backend == "zeo" else env.pg_url


def _drop(backend, env, key):
    if backend != "file":
        db = zpydb_for(backend, env)
        try:
            del db[key]
        finally:
            db.close()


def x1(env, mode, tick):
    rows, ratios = [], []
    documents = {}
    try:
        for backend in env.backends:
            for shape in mode.stream_shapes:
                peaks = {}
                for n in mode.stream_sizes:
                    if (shape, n) not in documents:
                        documents[shape, n] = os.path.join(env.tmp, f"x1-{shape}-{n}.json")
                        _document(documents[shape, n], shape, n)
                    document = documents[shape, n]
                    key = f"x1-{shape}-{n}"
                    url = _url(backend, env, shape, n)
                    out = document + f".{backend}.out"
                    runs = {"import": _cli("import", document, url, "--path", f"db[{key!r}]"),
                            "export": _cli("export", url, "--path", f"db[{key!r}]", "-o", out)}
                    if _sha256(out) != _sha256(document):
                        raise RuntimeError(f"X1: export of {key} on {backend} differs from the "
                                           f"document imported")
                    os.unlink(out)
                    _drop(backend, env, key)
                    for direction, (seconds, rss) in runs.items():
                        rows.append({"name": f"{direction}/{backend} {shape}", "items": n,
                                     "ops_per_s": n / seconds, "median_us": 1e6 * seconds / n,
                                     "items_per_s": n / seconds, "maxrss_mb": round(rss, 1),
                                     "mb": round(os.path.getsize(document) / 1e6, 1)})
                        peaks.setdefault(direction, []).append(rss)
                    tick()
                ratios += _ratios(backend, shape, mode.stream_sizes, peaks)
    finally:
        for path in documents.values():
            os.unlink(path)
    return {"title": "export and import stream: peak RSS of the zpydb command at "
                     f"{mode.stream_sizes[0]} and {mode.stream_sizes[-1]} items (subprocess)",
            "rows": rows, "ratios": ratios}


def _ratios(backend, shape, sizes, peaks):
    small, large = sizes[0], sizes[-1]
    found = []
    for direction, (low, high) in peaks.items():
        ratio = {"name": f"{direction}/{backend} {shape}: peak RSS at {large} / at {small} "
                         f"items", "ratio": round(high / low, 3)}
        if shape != "records":  # one persistent object per item: ZODB's bookkeeping grows
            ratio["target"] = f"< {TARGETS[direction]}"
            ratio["pass"] = high / low < TARGETS[direction]
        found.append(ratio)
    return found
