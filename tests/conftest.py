"""Shared fixtures: one ``db`` fixture parametrized over every real backend.

The behaviour suites (paths, undo, transactions, files, the reference
session) take ``backend`` or ``db`` and so run on:

* ``file``     - an embedded FileStorage in a temp dir;
* ``zeo``      - a real ``runzeo`` process on 127.0.0.1 and a free port;
* ``postgres`` - RelStorage on a real PostgreSQL cluster made for the test run.

``ZPYDB_TEST_BACKENDS=file,zeo`` narrows the set for a quick local run; CI runs
all three.  A machine without PostgreSQL skips the postgres backend loudly,
except under CI (``CI`` set), where that is a failure.
"""

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# A shell that starts a command in the background (`make test &`, CI runners) starts
# it with SIGINT ignored, and Python then installs no KeyboardInterrupt handler, in
# this process and in every child: the Ctrl-C tests would send SIGINTs into the void.
# Users run zpydb with the default handler; so do the tests (children inherit it:
# a handled signal is reset to the default on exec, and Python installs its own).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import zpydb  # noqa: E402
from tests.pg import PostgresCluster, find_pg_bin  # noqa: E402
from tests.servers import ZeoServer  # noqa: E402

ALL_BACKENDS = ("file", "zeo", "postgres")
BACKENDS = tuple(b for b in os.environ.get("ZPYDB_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",")
                 if b)


class Backend:
    """One fresh database on one backend; ``connect()`` opens another client to it."""

    def __init__(self, name, url, server=None):
        self.name = name
        self.url = url
        self.server = server
        self.clients = []

    def connect(self, **options):
        options.setdefault("wait_timeout", 10)
        db = zpydb.connect(self.url, **options)
        self.clients.append(db)
        return db

    def close_all(self):
        for db in self.clients:
            try:
                db.close()
            except Exception:
                pass

    def __repr__(self):
        return f"<Backend {self.name} {self.url}>"


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory):
    if find_pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed in CI: scripts/ensure-postgres.sh must install it")
        pytest.skip("PostgreSQL server binaries not found: POSTGRES BACKEND NOT TESTED "
                    "(run `make postgres` or apt-get install postgresql)")
    cluster = PostgresCluster()  # initdb + start; stopped by PID below
    yield cluster
    cluster.stop()


def make_backend(name, tmp_path, request):
    if name == "file":
        return Backend(name, str(tmp_path / "Data.fs"))
    if name == "zeo":
        server = ZeoServer(tmp_path / "zeo")
        server.start()
        request.addfinalizer(server.stop)
        return Backend(name, server.url, server)
    if name == "postgres":
        cluster = request.getfixturevalue("postgres_cluster")
        dbname = "t" + uuid.uuid4().hex[:12]
        cluster.create_database(dbname)
        # RelStorage stores blobs in the database; blob_dir is the client's blob cache
        # (shared_blob_dir=False by default).  Without it, storing a zpydb.File fails.
        return Backend(name, cluster.url(dbname, blob_dir=str(tmp_path / "pg-blobs")))
    raise ValueError(name)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    made = make_backend(request.param, tmp_path, request)
    yield made
    made.close_all()


@pytest.fixture
def db(backend):
    return backend.connect()


@pytest.fixture
def file_backend(tmp_path, request):
    made = make_backend("file", tmp_path, request)
    yield made
    made.close_all()


@pytest.fixture
def fdb(file_backend):
    """A database on the embedded FileStorage only (for tests of non-storage logic)."""
    return file_backend.connect()


@pytest.fixture
def zeo_server(tmp_path):
    server = ZeoServer(tmp_path / "zeo")
    server.start()
    yield server
    server.stop()

