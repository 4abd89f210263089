"""Shared machinery: sizes per mode, timing, alternating rounds, servers, raw ZODB clients.

Every loop here is bounded twice: by a count and by a time budget.
"""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import transaction  # noqa: E402
import ZODB  # noqa: E402

import zpydb  # noqa: E402
from devservers.ports import free_port, stop_process, wait_for_port  # noqa: E402

HOST = "127.0.0.1"
ZEO_CACHE = 64 * 1024 * 1024


# -- modes ------------------------------------------------------------------------------

@dataclass
class Mode:
    name: str
    rounds: int            # alternating rounds for the zpydb-vs-baseline comparisons
    n_write: int           # ops per batch for single-statement writes
    n_read: int            # ops per batch for reads
    batch_seconds: float   # time bound per batch
    grow_sizes: list       # W2 / W3 checkpoints
    n_grow: int            # writes measured at each checkpoint
    bulk_sizes: list       # B1 item counts
    iter_size: int         # I1
    cold_keys: int         # R2
    clients: list          # C1 process counts
    c1_seconds: float
    s1_samples: int
    file_mb: int           # F1
    profile_writes: int
    pg: bool = True
    extra: dict = field(default_factory=dict)
    # C2: writer processes on one key, seconds per run, rounds, statements per writer
    c2_writers: list = field(default_factory=lambda: [1, 2, 4, 8, 16])
    c2_seconds: float = 2.0
    c2_rounds: int = 3
    c2_max_ops: int = 20000
    # L1: keys of the dict whose len() is measured, items of the list += / append grow
    len_keys: int = 1_000_000
    iadd_list: int = 200_000
    # X1: export/import peak memory at a small and a large item count; the shapes
    stream_sizes: list = field(default_factory=lambda: [100_000, 1_000_000])
    stream_shapes: list = field(default_factory=lambda: ["list", "dict"])


MODES = {
    "smoke": Mode("smoke", rounds=2, n_write=10, n_read=30, batch_seconds=0.5,
                  grow_sizes=[100, 2000], n_grow=5, bulk_sizes=[300], iter_size=2000,
                  cold_keys=200, clients=[1, 2], c1_seconds=0.5, s1_samples=10, file_mb=1,
                  profile_writes=20, c2_writers=[2], c2_seconds=0.3, c2_rounds=1,
                  c2_max_ops=30, len_keys=3000, iadd_list=3000, stream_sizes=[300, 3000],
                  stream_shapes=["list"]),
    "quick": Mode("quick", rounds=5, n_write=150, n_read=1000, batch_seconds=3.0,
                  grow_sizes=[1000, 10000, 100000], n_grow=60, bulk_sizes=[10000, 100000],
                  iter_size=100000, cold_keys=10000, clients=[1, 2, 4, 8], c1_seconds=3.0,
                  s1_samples=200, file_mb=64, profile_writes=300),
    "full": Mode("full", rounds=7, n_write=300, n_read=3000, batch_seconds=6.0,
                 grow_sizes=[1000, 10000, 100000, 1000000], n_grow=100,
                 bulk_sizes=[10000, 100000, 1000000], iter_size=100000, cold_keys=10000,
                 clients=[1, 2, 4, 8], c1_seconds=6.0, s1_samples=1000, file_mb=1024,
                 profile_writes=1000, stream_shapes=["list", "dict", "records"]),
}


# -- timing -----------------------------------------------------------------------------

def run_batch(op, n, max_seconds, start=0):
    """Call ``op(i)`` up to n times or until max_seconds passed (at least 3 calls).

    Returns (calls, seconds, per-call latencies).
    """
    latencies = []
    t_start = time.perf_counter()
    deadline = t_start + max_seconds
    for i in range(start, start + n):
        t0 = time.perf_counter()
        op(i)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if t1 > deadline and len(latencies) >= 3:
            break
    return len(latencies), time.perf_counter() - t_start, latencies


def alternate(contestants, rounds, n, max_seconds, progress=None):
    """Run each contestant's batch once per round, rotating the order every round.

    contestants: {name: op(i)}.  Returns {name: stats} with the median over rounds
    of ops/s and the median per-op latency over all calls.
    """
    names = list(contestants)
    per_round = {name: [] for name in names}
    latencies = {name: [] for name in names}
    offset = 0
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order.reverse()
        for name in order:
            count, seconds, lats = run_batch(contestants[name], n, max_seconds, start=offset)
            per_round[name].append(count / seconds if seconds else 0.0)
            latencies[name].extend(lats)
        offset += n
        if progress:
            progress()
    return {name: summarize(per_round[name], latencies[name]) for name in names}


def summarize(ops_per_round, lats):
    lats = sorted(lats)
    return {
        "ops_per_s": statistics.median(ops_per_round) if ops_per_round else 0.0,
        "ops_per_s_rounds": [round(x, 1) for x in ops_per_round],
        "median_us": statistics.median(lats) * 1e6 if lats else 0.0,
        "p99_us": percentile(lats, 99) * 1e6 if lats else 0.0,
        "calls": len(lats),
    }


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def ratio_row(name, zpydb_stats, base_stats, target=None):
    """zpydb's throughput / the baseline's, as a report row (``pass`` when a target is given).

    A baseline that measured no throughput (0 ops/s) gives no ratio: ``ratio`` is None,
    ``error`` says why, and a row with a target fails.
    """
    return ratio_of(name, zpydb_stats["ops_per_s"], base_stats["ops_per_s"], target)


def ratio_of(name, value, base, target=None):
    """``{"name", "ratio": value / base, "target", "pass"}``; no ratio when ``base`` is not > 0."""
    row = {"name": name}
    if base and base > 0:
        ratio = value / base
        row["ratio"] = round(ratio, 3)
    else:
        ratio = None
        row["ratio"] = None
        row["error"] = f"no ratio: the baseline measured {base!r} ops/s"
    if target is not None:
        row["target"] = target
        row["pass"] = ratio is not None and bool(ratio >= target)
    return row


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_hwm_mb(pid):
    """Peak RSS of a running process (Linux VmHWM), in MB."""
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


# -- raw ZODB clients ---------------------------------------------------------------------

class Raw:
    """A raw ZODB connection with its own transaction manager (the baseline)."""

    def __init__(self, db, owns_db=True):
        self.db = db
        self.owns_db = owns_db
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)

    @property
    def data(self):
        return self.conn.root()["zpydb"]

    def write(self, func):
        self.tm.begin()
        func(self.conn.root())
        self.tm.commit()

    def read(self, func):
        self.tm.begin()
        try:
            return func(self.conn.root())
        finally:
            self.tm.abort()

    def close(self):
        try:
            self.tm.abort()
            self.conn.close()
        finally:
            if self.owns_db:
                self.db.close()


def raw_zeo(address, server_sync=True, tmpdir=None):
    import ZEO
    blob_dir = tempfile.mkdtemp(prefix="bench-raw-blobs-", dir=tmpdir)
    db = ZEO.DB(address, server_sync=server_sync, blob_dir=blob_dir, wait_timeout=10,
                cache_size=ZEO_CACHE)
    return Raw(db)


def raw_url(url):
    import zodburi
    factory, dbkw = zodburi.resolve_uri(url)
    return Raw(ZODB.DB(factory(), **dbkw))


def raw_for(backend, env, fresh=True, zdb=None):
    """The raw-ZODB client on the same storage as zpydb's ``backend``."""
    if backend == "zeo":
        return raw_zeo(env.zeo.address, server_sync=fresh, tmpdir=env.tmp)
    if backend == "pg":
        return raw_url(env.pg_url)
    if backend == "file":
        # An embedded FileStorage is open once per process: share zpydb's ZODB.DB.
        return Raw(zdb._session.db, owns_db=False)
    raise ValueError(backend)


def zpydb_for(backend, env, **options):
    if backend == "zeo":
        return zpydb.connect(env.zeo.url, wait_timeout=10, **options)
    if backend == "pg":
        return zpydb.connect(env.pg_url, **options)
    if backend == "file":
        return zpydb.connect(env.file_path, **options)
    raise ValueError(backend)


# -- servers --------------------------------------------------------------------------------

class Redis:
    """redis-server on a free loopback port with its own temp dir."""

    CONFIGS = {
        # every write fsync'd before the reply: durable like a ZODB commit
        "always": ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        # redis' defaults: RDB snapshots only, a write is acknowledged from memory
        "default": [],
    }

    def __init__(self, tmp, kind):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"bench-redis-{kind}-", dir=tmp)
        self.port = free_port()
        self.process = None

    def start(self):
        exe = shutil.which("redis-server")
        command = [exe, "--port", str(self.port), "--bind", HOST, "--dir", self.dir,
                   "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")]
        self.process = subprocess.Popen(command + self.CONFIGS[self.kind],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port(HOST, self.port, 15, self.process)
        import redis
        self.client = redis.Redis(host=HOST, port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.client.ping()
                return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("redis did not answer PING")

    def stop(self):
        try:
            self.client.close()
        except Exception:
            pass
        stop_process(self.process)


DURABLE_PG = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


class Env:
    """Everything a run needs, started here and stopped by PID in stop()."""

    def __init__(self, tmp, use_pg=True, use_redis=True, log=print):
        self.tmp = tmp
        self.use_pg = use_pg
        self.use_redis = use_redis
        self.log = log
        self.zeo = self.replica = self.pg = None
        self.pg_url = None
        self.redis = {}
        self.notes = []
        self.file_path = os.path.join(tmp, "file", "Data.fs")

    @property
    def backends(self):
        return ["file", "zeo"] + (["pg"] if self.pg_url else [])

    def start(self):
        from devservers.zeo import ZeoServer
        self.zeo = ZeoServer(os.path.join(self.tmp, "zeo")).start()
        db = zpydb.connect(self.zeo.url, wait_timeout=10)  # the replica needs the root
        db.close()
        self.replica = ZeoServer(os.path.join(self.tmp, "replica"), kind="replica",
                                 upstream=self.zeo.address).start()
        if self.use_pg:
            try:
                from devservers.pg import PostgresCluster, find_pg_bin
                import relstorage  # noqa: F401
                if find_pg_bin():
                    self.pg = PostgresCluster(settings=DURABLE_PG)
                    self.pg.create_database("bench")
                    self.pg_url = self.pg.url("bench")
                else:
                    self.notes.append("PostgreSQL binaries not found: pg backend skipped")
            except Exception as exc:  # report, go on without pg
                self.notes.append(f"PostgreSQL unavailable: {exc!r}")
                self.pg = None
        if self.use_redis:
            if shutil.which("redis-server"):
                try:
                    for kind in Redis.CONFIGS:
                        self.redis[kind] = Redis(self.tmp, kind).start()
                except Exception as exc:
                    self.notes.append(f"redis unavailable: {exc!r}")
            else:
                self.notes.append("redis-server not installed: Redis peer skipped "
                                  "(scripts/ensure-redis.sh)")
        return self

    @property
    def zeo_data_fs(self):
        return os.path.join(str(self.zeo.data_dir), "Data.fs")

    def stop(self):
        for server in self.redis.values():
            server.stop()
        if self.pg is not None:
            try:
                self.pg.stop()
            except Exception:
                pass
        for server in (self.replica, self.zeo):
            if server is not None:
                server.stop()


def python_cmd(*args):
    return [sys.executable, "-m", "bench.worker", *map(str, args)]


def run_worker(args, timeout=600, stdin=None):
    """Run a bench.worker subprocess; return (its JSON report, its peak RSS in MB)."""
    import json
    process = subprocess.Popen(python_cmd(*args), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise RuntimeError(f"worker {args} timed out")
    if process.returncode != 0:
        raise RuntimeError(f"worker {args} failed ({process.returncode}): {err[-2000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    return report
