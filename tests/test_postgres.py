"""zpydb on RelStorage/PostgreSQL, against a real PostgreSQL server.

A session fixture starts a private cluster (devservers/pg.py: initdb in a temporary
directory, 127.0.0.1 and a free port only) and stops it at the end; every test
gets a fresh database.  Without PostgreSQL server binaries the tests are skipped
on a developer machine (run `make postgres`) and FAIL in CI.
"""

import argparse
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
import transaction
from persistent.mapping import PersistentMapping

from zpydb.copy import DestinationNotEmptyError, copy_database, register_commands
from zpydb.errors import URLError
from zpydb.storage import open_database

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_TIMEOUT = 90


@pytest.fixture(scope="session")
def pg_cluster(postgres_cluster):
    """The session's throw-away cluster (tests/conftest.py; skipped loudly, or failed in CI)."""
    return postgres_cluster


@pytest.fixture
def pg_db(pg_cluster):
    """A fresh, empty database; yields its name."""
    name = "zpydb_" + uuid.uuid4().hex[:12]
    pg_cluster.create_database(name)
    try:
        yield name
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_url(pg_cluster, pg_db):
    return pg_cluster.url(pg_db)


def commit(conn, note, **values):
    root = conn.root()
    for key, value in values.items():
        root[key] = value
    txn = transaction.get()
    txn.note(note)
    txn.setExtendedInfo("zpydb-test", note)
    transaction.commit()


def undo_log_key(db):
    return [(entry["id"], entry["description"], entry["user_name"], entry.get("zpydb-test"))
            for entry in db.undoLog(0, 100)]


def make_filestorage(path):
    """A Data.fs with a few transactions, one of them an undo."""
    handle = open_database(str(path))
    try:
        conn = handle.db.open()
        commit(conn, "first", a=1, nested=PersistentMapping({"l": [1, 2, 3]}))
        commit(conn, "second", b=2)
        commit(conn, "third", a=10)
        last = handle.db.undoLog(0, 1)[0]["id"]
        handle.db.undo(last)
        transaction.get().note("undo third")
        transaction.commit()
        conn.close()
        return undo_log_key(handle.db)
    finally:
        handle.close()


def root_contents(url):
    handle = open_database(url)
    try:
        conn = handle.db.open()
        root = conn.root()
        result = {key: (dict(value) if isinstance(value, PersistentMapping) else value)
                  for key, value in root.items()}
        conn.close()
        return result, undo_log_key(handle.db)
    finally:
        handle.close()


def test_url_form_resolves_to_relstorage(pg_cluster, pg_db):
    url = pg_cluster.url(pg_db, keep_history=True, cache_local_mb=0)
    assert url.startswith("postgres://zpydb:") and "@127.0.0.1:" in url
    assert "keep_history=true" in url
    handle = open_database(url)
    try:
        assert type(handle.storage).__name__ == "RelStorage"
        assert handle.storage._options.keep_history is True
        assert handle.name == f"postgres://127.0.0.1:{pg_cluster.port}/{pg_db}"  # no password
    finally:
        handle.close()
    with pytest.raises(URLError, match="no_such_option"):
        open_database(pg_cluster.url(pg_db, no_such_option=1))


def test_commit_and_undo(pg_url):
    handle = open_database(pg_url)
    try:
        db = handle.db
        assert db.supportsUndo()
        conn = db.open()
        commit(conn, "set x to 1", x=1)
        commit(conn, "set x to 2", x=2)
        log = db.undoLog(0, 100)
        assert [entry["description"] for entry in log[:2]] == ["set x to 2", "set x to 1"]
        db.undo(log[0]["id"])
        transaction.get().note("undo")
        transaction.commit()
        transaction.begin()
        assert conn.root()["x"] == 1
        conn.close()
        # A second connection (fresh cache) reads the undone state from the server.
        other = db.open()
        assert other.root()["x"] == 1
        other.close()
    finally:
        handle.close()


def test_history_free_has_no_undo(pg_cluster, pg_db):
    handle = open_database(pg_cluster.url(pg_db, keep_history=False))
    try:
        assert not handle.db.supportsUndo()
    finally:
        handle.close()


PEER_SCRIPT = textwrap.dedent("""\
    import os, sys, time, transaction
    from zpydb.storage import open_database
    url, me, other = sys.argv[1:4]
    handle = open_database(url)
    conn = handle.db.open()
    for attempt in transaction.manager.attempts(10):
        with attempt:
            conn.root()[me] = os.getpid()
    deadline = time.monotonic() + 30
    while True:
        transaction.begin()  # polls the database for other processes' commits
        if other in conn.root():
            print(conn.root()[other], flush=True)
            break
        if time.monotonic() > deadline:
            sys.exit(f"{me}: never saw {other}")
        time.sleep(0.05)
    transaction.abort()
    conn.close()
    handle.close()
""")


def test_two_processes_see_each_others_writes(pg_url):
    handle = open_database(pg_url)  # creates the root before the peers race for it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    peers = {}
    try:
        for me, other in (("alice", "bob"), ("bob", "alice")):
            peers[me] = subprocess.Popen(
                [sys.executable, "-c", PEER_SCRIPT, pg_url, me, other], cwd=ROOT, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        outputs = {}
        for me, proc in peers.items():
            out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
            assert proc.returncode == 0, f"{me} failed:\n{err}"
            outputs[me] = int(out.strip())
        assert outputs["alice"] == peers["bob"].pid
        assert outputs["bob"] == peers["alice"].pid
        # This process sees both writes too.
        conn = handle.db.open()
        assert conn.root()["alice"] == peers["alice"].pid
        assert conn.root()["bob"] == peers["bob"].pid
        conn.close()
    finally:
        for proc in peers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        handle.close()


def test_copy_file_to_postgres_and_back(tmp_path, pg_url):
    source = tmp_path / "src" / "Data.fs"
    log = make_filestorage(source)
    assert len(log) == 5  # initial database creation, first, second, third, undo

    summary = copy_database(str(source), pg_url, progress=False)
    assert summary.transactions == 5
    assert summary.records >= 5
    assert summary.seconds >= 0

    back = tmp_path / "back" / "Data.fs"
    copy_database(pg_url, str(back), progress=False)

    expected = {"a": 1, "b": 2, "nested": {"l": [1, 2, 3]}}
    for url in (str(source), pg_url, str(back)):
        contents, copied_log = root_contents(url)
        assert contents == expected, url
        assert copied_log == log, url

    # The copied history is usable: undo "second" in PostgreSQL.
    handle = open_database(pg_url)
    try:
        second = [e for e in handle.db.undoLog(0, 100) if e["description"] == "second"][0]
        handle.db.undo(second["id"])
        transaction.commit()
        conn = handle.db.open()
        assert "b" not in conn.root()
        conn.close()
    finally:
        handle.close()


def test_copy_refuses_non_empty_destination(tmp_path, pg_url):
    source = tmp_path / "src" / "Data.fs"
    make_filestorage(source)
    handle = open_database(pg_url)  # opening a DB commits "initial database creation"
    try:
        conn = handle.db.open()
        commit(conn, "already here", keep="me")
        conn.close()
        before = undo_log_key(handle.db)
    finally:
        handle.close()

    with pytest.raises(DestinationNotEmptyError, match="already has transactions"):
        copy_database(str(source), pg_url, progress=False)

    # Nothing was written, and both storages were closed (the Data.fs lock is free).
    contents, after = root_contents(pg_url)
    assert after == before and contents == {"keep": "me"}
    contents, _log = root_contents(str(source))
    assert contents["b"] == 2


def test_copy_with_files_between_file_and_postgres(tmp_path, pg_url):
    import zpydb
    source, back = str(tmp_path / "src.fs"), str(tmp_path / "back.fs")
    with zpydb.connect(source) as db:
        db["doc"] = zpydb.File(b"blob content " * 1000, name="doc.txt")
        db["doc"] = zpydb.File(b"second version", name="doc.txt")
    copy_database(source, pg_url, progress=False)
    copy_database(pg_url, back, progress=False)
    with zpydb.connect(back) as db:
        assert db["doc"]._run().read() == b"second version"
        db.undo()                                   # the history came along, blobs too
        assert db["doc"]._run().read() == b"blob content " * 1000


def test_copy_command(tmp_path, pg_url, capsys):
    source = tmp_path / "src" / "Data.fs"
    make_filestorage(source)
    parser = argparse.ArgumentParser(prog="zpydb")
    register_commands(parser.add_subparsers())

    args = parser.parse_args(["copy", str(source), pg_url, "--no-progress"])
    assert args.func(args) == 0
    assert "copied 5 transactions" in capsys.readouterr().out

    args = parser.parse_args(["copy", str(source), pg_url, "--no-progress"])
    assert args.func(args) == 1
    assert "already has transactions" in capsys.readouterr().err


def test_zpydb_shell_on_a_postgres_url(pg_url):
    run = [sys.executable, "-m", "zpydb", "shell", pg_url, "-c"]
    first = subprocess.run(run + ["db['x'] = [1, 2]; db['x'].append(3)"], capture_output=True,
                           text=True, timeout=SUBPROCESS_TIMEOUT, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(run + ["db.undo(); db['x']"], capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT, cwd=ROOT)
    assert second.stdout.strip() == "[1, 2]", second.stderr


def _idle_in_transaction(pg_cluster, dbname):
    """The sessions on ``dbname`` other than this query's that sit inside an open
    transaction (a RelStorage snapshot held: vacuum cannot clean behind it)."""
    import psycopg2

    con = psycopg2.connect(**pg_cluster.dsn(dbname))
    try:
        con.autocommit = True
        with con.cursor() as cursor:
            cursor.execute("SELECT pid, state, query FROM pg_stat_activity WHERE datname = %s "
                           "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'",
                           (dbname,))
            return cursor.fetchall()
    finally:
        con.close()


def test_reads_leave_no_snapshot_held(pg_cluster, pg_db):
    """Reads begin no Transaction (session.py's begin_read/end_read: the connection's
    newTransaction and afterCompletion directly); after every kind of read, done, failed,
    iterated whole or left half way, in a thread or a read-only block, no zpydb
    connection may be left 'idle in transaction' on the server."""
    import threading

    import zpydb

    db = zpydb.connect(pg_cluster.url(pg_db))
    try:
        db['big'] = {f"k{i}": i for i in range(3000)}
        db['items'] = list(range(2000))
        db['x'] = {'a': 1}
        checks = {}
        for _ in range(50):
            assert db['x']['a'].value() == 1
            assert len(db['big']) == 3000 and 'k5' in db['big']
            assert db['big'].get('missing') is None
        checks["point reads"] = _idle_in_transaction(pg_cluster, pg_db)
        assert sum(1 for _ in db['big'].items()) == 3000
        assert sum(db['items']) == sum(range(2000))
        checks["whole iterations"] = _idle_in_transaction(pg_cluster, pg_db)
        half = iter(db['big'].items())
        next(half)
        checks["an iteration left half way"] = _idle_in_transaction(pg_cluster, pg_db)
        for _ in range(10):
            with pytest.raises(zpydb.KeyNotFoundError):
                db['nope']['x'].value()
        checks["failed reads"] = _idle_in_transaction(pg_cluster, pg_db)
        reader = threading.Thread(target=lambda: [db['x'].value() for _ in range(50)])
        reader.start()
        reader.join(SUBPROCESS_TIMEOUT)
        checks["reads in a thread"] = _idle_in_transaction(pg_cluster, pg_db)
        with db.transaction() as t:
            assert t['x'].value() == {'a': 1}
        checks["a read-only block"] = _idle_in_transaction(pg_cluster, pg_db)
        assert checks == {what: [] for what in checks}
    finally:
        db.close()
