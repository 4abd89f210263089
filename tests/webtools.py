"""Real ``zpydb web`` servers for the web tests, and an independent look at their database.

A :class:`Site` is a WebServer (a real uvicorn process on a free port) on a
fresh database of one backend, plus :meth:`Site.value`: the tree read by a
separate zpydb client, never through the web server.  An embedded Data.fs is
locked by the server, so it is read with a fresh read-only FileStorage (which
takes no lock and sees every transaction committed before it opened).
"""

import json
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import zpydb  # noqa: E402
from devservers.web import WebServer  # noqa: E402
from tests.servers import ZeoServer  # noqa: E402


class Site:
    def __init__(self, kind, url, server, zeo=None):
        self.kind, self.url, self.server, self.zeo = kind, url, server, zeo

    def __getattr__(self, name):  # request, json, base, port...
        return getattr(self.server, name)

    def open(self):
        if self.kind == "file":
            return zpydb.connect(self.url, read_only=True)
        return zpydb.connect(self.url, wait_timeout=10)

    def value(self, *steps):
        """The value at ``steps`` read by another client (None when it is not there)."""
        with self.open() as db:
            path = db
            for step in steps:
                path = path[step]
            try:
                return path.value()
            except (KeyError, IndexError):
                return None

    def history(self, n=5):
        with self.open() as db:
            return db.history(n)

    def get(self, path, headers=None):
        status, value = self.server.json("GET", path, headers=headers)
        assert status == 200, (status, value)
        return value

    def send(self, method, path, value=None, headers=None):
        """``(status, decoded body)`` of a write with ``value`` sent as JSON (None: no body)."""
        body = None if value is None and method == "DELETE" else json.dumps(value)
        status, _headers, data = self.server.request(method, path, body, headers)
        return status, (json.loads(data) if data else None)


def start_site(kind, tmp_path, request, *args, **server_options):
    """A Site on a fresh database of ``kind`` (file, zeo, postgres); stopped at teardown."""
    zeo = None
    if kind == "file":
        url = str(tmp_path / "Data.fs")
    elif kind == "zeo":
        zeo = ZeoServer(tmp_path / "zeo")
        zeo.start()
        request.addfinalizer(zeo.stop)
        url = zeo.url
    elif kind == "postgres":
        cluster = request.getfixturevalue("postgres_cluster")
        name = "w" + uuid.uuid4().hex[:12]
        cluster.create_database(name)
        url = cluster.url(name, blob_dir=str(tmp_path / "pg-blobs"))
    else:
        raise ValueError(kind)
    extra = ["--wait-timeout", "10"] if kind != "file" else []
    server = WebServer(url, *extra, *args, log_dir=tmp_path / "web", **server_options)
    server.start()
    request.addfinalizer(server.stop)
    return Site(kind, url, server, zeo)
