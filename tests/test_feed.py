"""db[...].watch() and ``zpydb watch`` (zpydb/feed.py) against real storages.

The oracle is independent of the feed: a single writer notes, after each
statement, the id of the last transaction its own connection committed and the
value it reads back (a fresh read); a transaction is expected in the feed when
its statement committed one and the value's repr changed.  The feed must
deliver exactly those ids, in order, each once; applying the patches in turn to
the starting value must give each value; ``since=`` must resume with no gap or
duplicate.  Then the promises are attacked: a second process, the ZEO server
killed with SIGKILL and restarted, the connection cut under a watcher, an idle
watcher whose traffic is counted on the wire, Ctrl-C while waiting, closing
from another thread, and a closed database.
"""

import gc
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time

import jsonpatch
import pytest

import zpydb
from zpydb import feed
from zpydb.export import encode
from tests.servers import ZeoServer, stop_process
from devservers.proxy import Proxy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "<missing>"


# -- the oracle -----------------------------------------------------------------------

def last_tid(db):
    """The newest transaction this client's own connection has committed or seen.

    Read in a transaction of its own: a connection catches up with the storage when
    a transaction begins (zpydb opens connections in explicit-transaction mode), and
    ``db.undo()`` commits through the database's storage, not the connection's
    (RelStorage gives each connection its own storage instance)."""
    tm, conn = db._session.connection()
    tm.begin()
    try:
        return conn._storage.lastTransaction().hex()
    finally:
        tm.abort()


def read(path):
    try:
        return path.value()
    except (zpydb.KeyNotFoundError, zpydb.NotAContainerError, zpydb.BadIndexError):
        return MISSING


def random_statement(rng, w, number):
    """One statement of the writer's script (some touch db['cfg'], some do not)."""
    kind = rng.choice(["set", "set", "del", "append", "same", "noise", "top", "drop", "make",
                       "undo", "redo", "number"])
    key = rng.choice("abc")
    if kind == "set":
        w["cfg"][key] = rng.choice([number, f"s{number}", [number], {"n": number}, None])
    elif kind == "del":
        del w["cfg"][key]
    elif kind == "append":
        w["cfg"]["l"].append(number)
    elif kind == "same":  # a statement that leaves the value as it was
        w["cfg"][key] = w["cfg"][key].value()
    elif kind == "noise":
        w["noise"][f"k{number % 7}"] = number
    elif kind == "top":  # the same bucket as db['cfg'] in the root tree, another key
        w["other"] = number
    elif kind == "drop":
        del w["cfg"]
    elif kind == "undo":
        w.undo()
    elif kind == "redo":
        w.redo()
    elif kind == "number":  # 1 -> 1.0 -> True are changes although they compare equal
        w["cfg"]["a"] = rng.choice([1, 1.0, True])
    elif kind == "make":
        w["cfg"] = {"a": number, "l": []}


def run_script(w, rng, statements, whole=None):
    """Run the writer's script; return [(tid, value of db['cfg'])] of each transaction it
    committed (each statement commits one or none).  ``whole``: a list that gets
    (tid, value of db) too."""
    committed = []
    before = last_tid(w)
    for number in range(statements):
        try:
            random_statement(rng, w, number)
        except zpydb.Error:
            pass  # refused whole (a missing key, nothing to undo): no transaction
        tid = last_tid(w)
        if tid != before:
            committed.append((tid, read(w["cfg"])))
            if whole is not None:
                whole.append((tid, w.value()))
            before = tid
    return committed


def expected_changes(start, committed):
    """The (id, value) the feed must deliver: committed transactions whose value changed."""
    expected, previous = [], repr(start)
    for tid, value in committed:
        if repr(value) != previous:
            expected.append((tid, value))
            previous = repr(value)
    return expected


def collect(watch, last_id, limit=200):
    """Changes from ``watch`` up to and including ``last_id`` (the watch has a timeout)."""
    got = []
    if last_id is None:
        return got
    for change in watch:
        got.append(change)
        if change["id"] == last_id or len(got) >= limit:
            break
    return got


def check_chain(start, changes, expected):
    assert [c["id"] for c in changes] == [tid for tid, _ in expected]
    document = encode(None if start is MISSING else start)
    for change, (_tid, value) in zip(changes, expected):
        assert change["deleted"] is (value is MISSING)
        assert repr(change["value"]) == repr(None if value is MISSING else value)
        document = jsonpatch.apply_patch(document, change["patch"])
        assert document == encode(change["value"])


# -- the promise, on every backend -------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2])
def test_delivers_exactly_the_committed_changes_under_the_path(backend, seed):
    """Watcher and writer are two clients (on a file: two connects in one process)."""
    w = backend.connect()
    w["cfg"] = {"a": 0, "l": []}
    w["noise"] = {}
    db = backend.connect()
    start = read(db["cfg"])
    whole = []
    root_start = db.value()
    with db["cfg"].watch(timeout=30) as watch, db.watch(timeout=30) as everything:
        committed = run_script(w, random.Random(seed), 60, whole)
        expected = expected_changes(start, committed)
        assert len(expected) >= 10, expected  # the script changed the value many times
        changes = collect(watch, expected[-1][0] if expected else None)
        # db.watch() (everything) on the same transactions
        expected_root = expected_changes(root_start, whole)
        check_chain(root_start, collect(everything, expected_root[-1][0]), expected_root)
    check_chain(start, changes, expected)
    # kinds and notes come from the log: an undo is reported as one
    assert {c["kind"] for c in changes} <= {"write", "undo", "redo"}
    assert all(c["user"] and c["note"] for c in changes)

    # since= resumes after any delivered change, with no gap and no duplicate
    ids = [c["id"] for c in changes]
    for k in sorted({0, len(ids) // 2, len(ids) - 1}):
        resumed = list(db["cfg"].watch(since=ids[k], timeout=0))
        assert [c["id"] for c in resumed] == ids[k + 1:]
        check_chain(changes[k]["value"] if not changes[k]["deleted"] else MISSING,
                    resumed, expected[k + 1:])



def test_a_watcher_ignores_changes_elsewhere_and_sees_deep_ones(db):
    db["a"] = {"b": {"c": [1, 2, {"d": 1}]}}
    db["x"] = {}
    with db["a"]["b"]["c"][2].watch(timeout=10) as watch:
        for i in range(5):
            db["x"][i] = i            # another tree
            db["a"]["other"] = i      # the parent changes, the watched value does not
        db["a"]["b"]["c"][2]["d"] = 2
        db["a"]["b"]["c"].insert(0, 0)  # the path now names another element: a change
        change, shift = next(watch), next(watch)
    assert change["value"] == {"d": 2} and change["patch"] == [
        {"op": "replace", "path": "/d", "value": 2}]
    assert shift["value"] == 2 and shift["note"] == "db['a']['b']['c'].insert(0, 0)"


def test_a_watcher_far_behind_goes_through_the_log_in_bounded_steps(db, monkeypatch):
    """since= an old id: at most MAX_QUEUED changes are held, the rest read as consumed."""
    monkeypatch.setattr(feed, "MAX_QUEUED", 7)
    db["n"] = -1
    since = last_tid(db)
    for i in range(40):
        db["n"] = i
        db["m"] = i
    watch = db["n"].watch(since=since, timeout=10)
    first = next(watch)
    assert first["value"] == 0 and len(watch._events) < 7  # not all 40 at once
    rest = []
    for change in watch:
        rest.append(change["value"])
        if change["value"] == 39:
            break
    assert rest == list(range(1, 40))
    watch.close()


def test_a_watcher_not_read_for_long_forgets_notices_but_no_change(db, monkeypatch):
    """Past MAX_NOTICES unread transactions the notices are dropped for the log."""
    monkeypatch.setattr(feed, "MAX_NOTICES", 5)
    db["n"] = -1
    watch = db["n"].watch(timeout=10)
    for i in range(30):
        db["n"] = i
        db["m"] = i
    assert [c["value"] for c in collect_values(watch, 29)] == list(range(30))
    watch.close()


@pytest.mark.parametrize("backend", ["file", "postgres"], indirect=True)
def test_unread_notices_are_bounded_by_records_not_only_by_transactions(backend, monkeypatch):
    """A watcher nobody reads, under transactions that each write many records (a
    dict of dicts), holds at most MAX_NOTICE_OIDS of their oids, and still delivers
    every change.  (Counting transactions alone let 1,500 such commits of 300
    records keep 480,000 oids, 45 MB; 10,000 commits of 10,000 records would
    keep gigabytes.)"""
    monkeypatch.setattr(feed, "MAX_NOTICE_OIDS", 200)
    db = backend.connect()
    w = backend.connect()
    w["n"] = -1
    watch = db["n"].watch(timeout=30)
    inbox = watch._source
    held = 0
    for i in range(12):
        w["n"] = i
        w["big"] = {str(k): {"k": k, "i": i} for k in range(60)}  # 60+ new records
        deadline = time.monotonic() + 30  # the poller (PostgreSQL) has told the inbox
        while inbox._barrier() < bytes.fromhex(last_tid(w)) and time.monotonic() < deadline:
            time.sleep(0.02)
        with inbox._cond:
            span_oids = inbox._span[1] if inbox._span and inbox._span[1] else ()
            held = max(held, sum(len(oids) for _, oids in inbox._exact) + len(span_oids))
    assert held <= 200
    assert [c["value"] for c in collect_values(watch, 11)] == list(range(12))
    watch.close()


def test_timeout_ends_an_idle_watch(db):
    watch = db["quiet"].watch(timeout=0.5)
    started = time.monotonic()
    assert list(watch) == []
    assert 0.5 <= time.monotonic() - started < 20
    with pytest.raises(StopIteration):  # ended for good
        next(watch)
    started = time.monotonic()
    assert list(db["quiet"].watch(timeout=0)) == []
    assert time.monotonic() - started < 10


def test_minus_zero_is_a_change_and_nan_again_is_not(db):
    """0.0 and -0.0 compare equal in Python but are different values (repr, JSON,
    1 / x): like 1, 1.0 and True, a switch between them is delivered."""
    db["f"] = {"x": 0.0}
    with db["f"].watch(timeout=10) as watch:
        db["f"]["x"] = -0.0
        db["f"]["x"] = 0.0
        db["f"]["x"] = float("nan")
        db["f"]["x"] = float("nan")   # NaN again: the same value, not delivered
        db["f"]["x"] = -0.0
        got = [next(watch) for _ in range(4)]
    assert [repr(c["value"]["x"]) for c in got] == ["-0.0", "0.0", "nan", "-0.0"]
    assert got[0]["patch"] == [{"op": "replace", "path": "/x", "value": -0.0}]
    assert repr(got[0]["patch"][0]["value"]) == "-0.0"


def test_a_created_and_deleted_path(db):
    with db["k"].watch(timeout=10) as watch:
        db["k"] = [1]
        del db["k"]
        db["k"] = None  # None is a value: not the same as missing
        made, gone, none = next(watch), next(watch), next(watch)
    assert (made["deleted"], made["value"]) == (False, [1])
    assert (gone["deleted"], gone["value"]) == (True, None)
    assert (none["deleted"], none["value"]) == (False, None)
    assert made["patch"] == [{"op": "replace", "path": "", "value": [1]}]


def test_files_show_as_their_metadata_in_patches_and_json(db):
    """A stored file over export's 1 MB inline limit: the change says which file it is
    (its sha256), the value still reads the content."""
    import hashlib
    big = os.urandom(1_300_000)
    db["docs"] = {}
    with db["docs"].watch(timeout=20) as watch:
        db["docs"]["report"] = zpydb.File(big, name="r.bin")
        db["docs"]["report"] = zpydb.File(b"small", name="r.bin")
        first, second = next(watch), next(watch)
    meta = {"name": "r.bin", "content_type": "application/octet-stream", "size": 1_300_000,
            "sha256": hashlib.sha256(big).hexdigest()}
    assert first["patch"] == [{"op": "add", "path": "/report", "value": {"$file": meta}}]
    assert first["value"]["report"].read() == big
    after = feed.change_json(second)["value"]
    assert after["report"]["$file"]["sha256"] == hashlib.sha256(b"small").hexdigest()
    assert jsonpatch.apply_patch({"report": {"$file": meta}}, second["patch"]) == after
    assert json.loads(json.dumps(feed.change_json(first)))["value"] == {"report": {"$file": meta}}


def test_the_value_handed_out_is_a_private_copy(db):
    db["c"] = {"l": [1]}
    with db["c"].watch(timeout=10) as one, db["c"].watch(timeout=10) as two:
        db["c"]["n"] = 1
        first = next(one)
        first["value"]["l"].append("mine")  # must change neither the next patch nor `two`
        db["c"]["n"] = 2
        assert next(two)["value"] == {"l": [1], "n": 1}
        second = next(one)
    assert second["patch"] == [{"op": "replace", "path": "/n", "value": 2}]


# -- several processes, crashes, dropped connections -------------------------------------

def _start_cli_watch(url, path, since, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "zpydb", "watch", url, path, "--since", since, *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _read_lines(process, count, timeout):
    lines, buffer = [], b""
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            lines += [json.loads(line) for line in done]
    return lines


@pytest.mark.parametrize("backend", ["zeo", "postgres"], indirect=True)
def test_cli_watch_in_another_process_prints_each_change_at_once(backend):
    w = backend.connect()
    w["cfg"] = {"a": 0, "l": []}
    w["noise"] = {}
    since = last_tid(w)
    watcher = _start_cli_watch(backend.url, "db['cfg']", since, "--wait-timeout", "10")
    try:
        w["cfg"]["a"] = 1
        first = _read_lines(watcher, 1, 60)  # flushed per line: it arrives while running
        assert [line["value"] for line in first] == [{"a": 1, "l": []}]
        committed = run_script(w, random.Random(3), 40)
        expected = expected_changes({"a": 1, "l": []}, committed)
        lines = first + _read_lines(watcher, len(expected), 60)
    finally:
        stop_process(watcher)
    assert [line["id"] for line in lines[1:]] == [tid for tid, _ in expected]
    for line, (_tid, value) in zip(lines[1:], expected):
        assert line["value"] == encode(None if value is MISSING else value)
        assert line["time"][:2] == "20" and isinstance(line["patch"], list)


def test_a_consumer_killed_and_resumed_with_since_sees_each_change_once(zeo_server):
    """`zpydb watch` is SIGKILLed twice while changes go on; each restart passes the id
    of the last complete line it printed.  Together the runs print every change once."""
    w = zpydb.connect(zeo_server.url, wait_timeout=20)
    try:
        w["n"] = -1
        since = last_tid(w)
        printed, buffer = [], b""
        stop = threading.Event()

        def write():
            for i in range(150):
                w["n"] = i
                time.sleep(0.01)
            stop.set()

        writer = threading.Thread(target=write)
        writer.start()
        for run in range(3):
            watcher = _start_cli_watch(zeo_server.url, "db['n']", since)
            deadline = time.monotonic() + (1.0 if run < 2 else 60)
            try:
                while time.monotonic() < deadline:
                    ready, _, _ = select.select([watcher.stdout], [], [], 0.1)
                    if ready:
                        chunk = os.read(watcher.stdout.fileno(), 65536)
                        if not chunk:
                            break
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        printed += [json.loads(line) for line in lines]
                    if run == 2 and printed and printed[-1]["value"] == 149:
                        break
            finally:
                watcher.kill()  # SIGKILL: whatever it had not printed is simply not printed
                watcher.wait(10)
            buffer = b""        # a line cut by the kill is not a change it delivered
            if printed:
                since = printed[-1]["id"]
        writer.join(60)
        assert stop.is_set()
        assert [line["value"] for line in printed] == list(range(150))
        assert len({line["id"] for line in printed}) == 150
    finally:
        w.close()


def test_zeo_server_killed_and_restarted_loses_nothing(tmp_path):
    """The small loss check (bench/watch.py runs 10,000 statements and 5 kills):
    a writer process, `zpydb watch` in another process, the server SIGKILLed twice."""
    from bench.watch import loss_check
    with ZeoServer(tmp_path / "zeo") as server:
        result = loss_check(server, 300, 2, str(tmp_path / "logs"), budget=240)
    assert result["kills"] == 2 and result["complete"], result
    for count in ("lost", "dup", "reordered", "extra", "wrong_value", "ack_missing",
                  "write_dup", "not_applied_but_committed"):
        assert result[count] == 0, result
    assert result["delivered"] == result["expected"] > 0


def test_a_watcher_survives_server_restarts_in_process(zeo_server):
    """The watcher's own connection breaks (SIGKILL, then SIGTERM); writes go on
    between; every change arrives once, in order."""
    w = zpydb.connect(zeo_server.url, wait_timeout=20)
    db = zpydb.connect(zeo_server.url, wait_timeout=20)
    try:
        w["n"] = -1
        watch = db["n"].watch(timeout=60)
        expected = []
        for round_number, sig in enumerate([signal.SIGKILL, signal.SIGTERM, None]):
            for i in range(5):
                value = round_number * 10 + i
                w["n"] = value
                expected.append(value)
            if sig is not None:
                zeo_server.restart(sig)
        got = [change["value"] for change in collect_values(watch, expected[-1])]
        assert got == expected
        watch.close()
    finally:
        w.close()
        db.close()


def collect_values(watch, last_value):
    got = []
    for change in watch:
        got.append(change)
        if change["value"] == last_value:
            break
    return got


def test_a_cut_connection_loses_nothing(zeo_server):
    """The watcher's connection is dropped (a proxy closes it) 5 times while another
    client writes; it reconnects by itself and reads what it missed from the log."""
    w = zpydb.connect(zeo_server.url, wait_timeout=20)
    with Proxy(zeo_server.address) as proxy:
        db = zpydb.connect(f"zeo://127.0.0.1:{proxy.port}", wait_timeout=20)
        try:
            w["n"] = -1
            watch = db["n"].watch(timeout=60)
            got = []
            reader = threading.Thread(target=lambda: got.extend(collect_values(watch, 99)))
            reader.start()
            for i in range(100):
                w["n"] = i
                if i % 20 == 10:
                    assert proxy.cut() >= 1
            reader.join(90)
            assert not reader.is_alive()
            assert [c["value"] for c in got] == list(range(100))
            assert len({c["id"] for c in got}) == 100
            assert proxy.accepted >= 6  # it really reconnected each time
            watch.close()
        finally:
            db.close()
            w.close()


def test_an_idle_zeo_watcher_sends_nothing_to_the_server(zeo_server):
    """Counted on the wire: a proxy between the watcher's client and the server."""
    w = zpydb.connect(zeo_server.url)
    w["cfg"] = {"a": 1}
    w["other"] = {}
    with Proxy(zeo_server.address) as proxy:
        db = zpydb.connect(f"zeo://127.0.0.1:{proxy.port}")
        try:
            watch = db["cfg"].watch()
            got = []
            thread = threading.Thread(target=lambda: got.extend(collect_values(watch, {"a": 2})),
                                      daemon=True)
            thread.start()
            time.sleep(0.3)
            before = proxy.sent_up
            time.sleep(2.5)  # idle: nothing changes
            for i in range(20):  # changes in another tree: nothing the watched value was read from
                w["other"][f"k{i}"] = i
            time.sleep(0.5)
            assert proxy.sent_up == before
            # the counter does count requests: a fresh read of the same client asks the server
            assert db["other"]["k0"] == 0 and proxy.sent_up > before
            w["cfg"]["a"] = 2
            thread.join(30)
            assert [c["value"] for c in got] == [{"a": 2}]
            watch.close()
        finally:
            db.close()
            w.close()


def test_postgres_crash_and_restart_loses_nothing(tmp_path, postgres_cluster):
    """PostgreSQL is crashed (immediate shutdown) and restarted twice under a watcher.

    A cluster of its own with fsync and synchronous_commit on: the shared test
    cluster trades durability for speed, so a crash there loses commits."""
    from tests.pg import PostgresCluster
    with PostgresCluster(settings={"fsync": "on", "synchronous_commit": "on"}) as cluster:
        cluster.create_database("watch")
        url = cluster.url("watch", blob_dir=str(tmp_path / "blobs"))
        w = zpydb.connect(url, poll_interval=0.05)
        db = zpydb.connect(url, poll_interval=0.05)
        try:
            w["n"] = -1
            watch = db["n"].watch(timeout=120)
            expected = []
            for round_number in range(3):
                for i in range(5):
                    value = round_number * 10 + i
                    w["n"] = value
                    expected.append(value)
                if round_number < 2:
                    cluster.restart()
            assert [c["value"] for c in collect_values(watch, expected[-1])] == expected
            watch.close()
        finally:
            w.close()
            db.close()


def test_postgres_watchers_of_one_process_share_one_poller(postgres_cluster, tmp_path):
    """20 watchers hold one PostgreSQL connection between them, not 20, and all see
    the change; the poller goes away with the last watcher."""
    import psycopg2
    dbname = "share" + str(os.getpid())
    postgres_cluster.create_database(dbname)
    url = postgres_cluster.url(dbname, blob_dir=str(tmp_path / "blobs"))

    def connections():
        conn = psycopg2.connect(**postgres_cluster.dsn(dbname))
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                               (dbname,))
                return cursor.fetchone()[0] - 1  # not this one
        finally:
            conn.close()

    db = zpydb.connect(url, poll_interval=0.05)
    try:
        db["x"] = 0
        before = connections()
        watches = [db["x"].watch(timeout=30) for _ in range(20)]
        assert connections() <= before + 1
        db["x"] = 1
        assert [next(w)["value"] for w in watches] == [1] * 20
        for watch in watches:
            watch.close()
        assert not feed._hubs.get(db._session.db)
        assert connections() <= before
    finally:
        db.close()


def test_embedded_writer_threads_and_a_watcher_thread(fdb):
    """One process, one FileStorage: the feed follows commits made in other threads."""
    fdb["c"] = {}
    watch = fdb["c"].watch(timeout=30)
    errors = []

    def writer(name):
        try:
            for i in range(60):
                fdb["c"][f"{name}{i}"] = i
                fdb["elsewhere"] = i
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    changes = []
    for change in watch:
        changes.append(change)
        if len(change["value"]) == 120:
            break
    sizes = [len(c["value"]) for c in changes]
    assert sizes == list(range(1, 121))  # each key added once, one change each, in order
    watch.close()


# -- Ctrl-C, closing -----------------------------------------------------------------------

CTRL_C_SCRIPT = """
import sys, zpydb
db = zpydb.connect(sys.argv[1])
watch = db['x'].watch()
print('ready', flush=True)
try:
    next(watch)
except KeyboardInterrupt:
    print('interrupted', flush=True)
db['x'] = 5
print('value', next(watch)['value'], flush=True)
db.close()
"""


@pytest.mark.parametrize("backend", ["zeo", "postgres"], indirect=True)
def test_ctrl_c_interrupts_a_waiting_watcher_which_goes_on(backend, tmp_path):
    script = tmp_path / "wait.py"
    script.write_text(CTRL_C_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), backend.url], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.stdout.readline().strip() == "interrupted"
        assert time.monotonic() - sent < 5
        assert process.stdout.readline().strip() == "value 5"
        assert process.wait(30) == 0
    finally:
        stop_process(process)


CATCH_UP_SCRIPT = """
import sys, time, zpydb
db = zpydb.connect(sys.argv[1])
db['big'] = {f'k{i}': i for i in range(20000)}
since = db._session.connection()[1]._storage.lastTransaction().hex()
for i in range(150):
    db['big']['k0'] = -i - 1              # 150 changes of a big value: a long catch-up
watch = db['big'].watch(since=since)
print('ready', flush=True)
started = time.monotonic()
try:
    next(watch)
    print('not interrupted', flush=True)
except KeyboardInterrupt:
    print('interrupted', round(time.monotonic() - started, 2), flush=True)
values = [next(watch)['value']['k0'] for _ in range(150)]
print('values', values == [-i - 1 for i in range(150)], flush=True)
db.close()
"""


def test_ctrl_c_stops_a_long_catch_up_between_transactions(tmp_path):
    """Judging runs with Ctrl-C held (a read cut half way can wedge FileStorage), but a
    catch-up through many transactions delivers it between two of them."""
    script = tmp_path / "catch_up.py"
    script.write_text(CATCH_UP_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "d.fs")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        answer = process.stdout.readline().split()
        assert answer[0] == "interrupted", (answer, process.stderr.read())
        assert time.monotonic() - sent < 3
        assert process.stdout.readline().strip() == "values True"
        assert process.wait(60) == 0
    finally:
        stop_process(process)


@pytest.mark.parametrize("backend", ["file", "zeo"], indirect=True)
def test_close_with_and_garbage_collection_leave_no_listener(backend):
    db = backend.connect()
    instances = db._session.db._mvcc_storage._instances
    count = lambda: sum(1 for i in list(instances) if isinstance(i, feed._Pushed))  # noqa: E731
    before = count()
    with db["x"].watch() as watch:
        assert count() == before + 1
    assert count() == before
    with pytest.raises(StopIteration):
        next(watch)
    dropped = db["x"].watch()
    del dropped
    gc.collect()
    assert count() == before


def test_close_from_another_thread_ends_a_waiting_watch(db):
    watch = db["x"].watch()
    ended = threading.Event()

    def wait():
        assert list(watch) == []
        ended.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    time.sleep(0.3)
    watch.close()
    assert ended.wait(10)


def test_closing_the_database_ends_a_waiting_watch_with_an_error(backend):
    db = backend.connect()
    watch = db["x"].watch()
    outcome = []

    def wait():
        try:
            next(watch)
        except zpydb.Error as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    time.sleep(0.3)
    db.close()
    thread.join(10)
    assert outcome and "closed" in str(outcome[0])


# -- bad arguments ---------------------------------------------------------------------------

def test_bad_arguments_are_refused_naming_the_path(db):
    db["x"] = 1
    for since in ("zz", "0" * 16, 12, "0123456789abcde"):
        with pytest.raises(zpydb.BadArgumentError, match=r"db\['x'\].*since"):
            db["x"].watch(since=since)
    with pytest.raises(zpydb.BadArgumentError, match="no change with this id"):
        db["x"].watch(since="00000000000000ff")
    for timeout in (-1, "5", True, float("nan"), float("inf")):
        with pytest.raises(zpydb.BadArgumentError, match="timeout"):
            db["x"].watch(timeout=timeout)
    with db.transaction() as t:
        with pytest.raises(zpydb.BadArgumentError, match="transaction block"):
            t["x"].watch()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_bad_poll_interval_is_refused(backend):
    for interval in (0, -1, "1", float("nan")):
        db = backend.connect(poll_interval=interval)
        with pytest.raises(zpydb.BadArgumentError, match="poll_interval"):
            db["x"].watch()


def test_cli_watch_arguments(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "zpydb", "watch", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    result = run("nope.fs")
    assert result.returncode == 2 and "no such database" in result.stderr
    assert not (tmp_path / "nope.fs").exists()
    result = run("a.fs", "db['x']", "--since", "xyz")
    assert result.returncode == 2 and "--since" in result.stderr
    result = run("a", "b", "c")
    assert result.returncode == 2 and "at most" in result.stderr
    result = run("db[x]")
    assert result.returncode == 2 and "literal" in result.stderr

    db = zpydb.connect(str(tmp_path / "d.fs"))
    db["x"] = 1
    since = last_tid(db)
    db["x"] = 2
    db["y"] = 3
    db.close()
    result = run("d.fs", "db['x']", "--since", since)  # an embedded file: what is there now
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["value"] for line in lines] == [2]
    assert "embedded file" in result.stderr


def test_parse_id_round_trips_a_tid():
    assert feed.parse_id("040d4472e92bb5dd") == bytes.fromhex("040d4472e92bb5dd")
    with pytest.raises(zpydb.BadArgumentError):
        feed.parse_id("040d4472e92bb5dg")


def test_since_with_spaces_is_not_a_shorter_id(backend):
    """bytes.fromhex skips spaces: '040d4472e92bb5  ' would be a 7-byte tid that no
    storage expects (RelStorage's iterator fails on it with struct.error)."""
    db = backend.connect()
    db["x"] = 1
    real = last_tid(db)
    for since in (real[:14] + "  ", " " + real[:14] + " ", real[:2] + " " * 2 + real[4:],
                  "\u0660" * 16, real[:15] + "\n"):
        with pytest.raises(zpydb.BadArgumentError, match=r"since must be a change id"):
            db["x"].watch(since=since)
