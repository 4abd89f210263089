"""Opening databases from URLs (storage.py) and the connect()/client() entry points."""

import os
import ssl
import subprocess
import sys
import tempfile

import pytest

import zpydb
from zpydb import storage


def test_url_shorthands(tmp_path, monkeypatch):
    assert storage.normalize_url("127.0.0.1:8100") == "zeo://127.0.0.1:8100"
    assert storage.normalize_url(":8100") == "zeo://127.0.0.1:8100"
    assert storage.normalize_url("memory://") == "memory://"
    path_url = storage.normalize_url(str(tmp_path / "x.fs"))
    assert path_url.startswith(f"file://{tmp_path}/x.fs?blobstorage_dir=")
    monkeypatch.setenv("ZPYDB_URL", "memory://")
    assert storage.normalize_url(None) == "memory://"
    monkeypatch.delenv("ZPYDB_URL")
    monkeypatch.chdir(tmp_path)
    assert storage.normalize_url(None).startswith(f"file://{tmp_path}/var/Data.fs")


def test_embedded_default_lives_under_var(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZPYDB_URL", raising=False)
    with zpydb.connect() as db:
        db["x"] = 1
    assert (tmp_path / "var" / "Data.fs").exists() and (tmp_path / "var" / "blobs").is_dir()
    with zpydb.connect(f"file://{tmp_path}/var/Data.fs?blobstorage_dir={tmp_path}/var/blobs") as db:
        assert db["x"]._run() == 1


def test_close_releases_the_file_lock(tmp_path):
    url = str(tmp_path / "Data.fs")
    db = zpydb.connect(url)
    db["x"] = 1
    db.close()
    assert not os.path.exists(str(tmp_path / "Data.fs.lock")) or zpydb.connect(url).close() is None
    with pytest.raises(zpydb.Error, match="closed"):
        db["x"]._run()


def test_same_file_twice_in_one_process_shares_the_database(tmp_path):
    url = str(tmp_path / "Data.fs")
    first, second = zpydb.connect(url), zpydb.connect(url)
    first["x"] = 1
    assert second["x"]._run() == 1
    first.close()
    second["y"] = 2                       # still open: the storage closes with the last user
    second.close()


def test_a_locked_file_gives_a_clear_error(tmp_path):
    url = str(tmp_path / "Data.fs")
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import zpydb, sys; db = zpydb.connect({url!r}); print('ok'); "
                               f"sys.stdout.flush(); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(zpydb.DatabaseLockedError,
                           match=f"`zpydb serve --data-dir {tmp_path}`"):
            zpydb.connect(url)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_unknown_scheme_and_bad_options():
    with pytest.raises(zpydb.URLError, match="no storage is installed for the 'nosuch'"):
        zpydb.connect("nosuch://x")
    with pytest.raises(zpydb.URLError, match="unknown URL parameter"):
        zpydb.connect("memory://?bogus=1")
    with pytest.raises(TypeError, match="unknown zpydb.connect option"):
        zpydb.connect("memory://", colour="red")


def test_missing_postgres_extra_is_named():
    """Without RelStorage importable, a postgres:// URL says which extra to install."""
    code = ("import sys; sys.modules['relstorage'] = None\n"
            "import zpydb\n"
            "try:\n"
            "    zpydb.connect('postgres://u:p@127.0.0.1:1/db')\n"
            "except zpydb.URLError as error:\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert "pip install 'zpydb[postgres]'" in result.stdout, result.stderr


def test_zconfig_url(tmp_path):
    config = tmp_path / "db.conf"
    config.write_text(f"<filestorage main>\n  path {tmp_path}/z.fs\n</filestorage>\n")
    with zpydb.connect(f"zconfig://{config}") as db:
        db["z"] = 1
        db.undo()
        assert "z" not in db


def test_client_returns_root_and_connection(tmp_path):
    url = str(tmp_path / "Data.fs")
    db, conn = zpydb.client(url)
    assert isinstance(db, zpydb.Database) and not conn.closed
    db["x"] = 1
    assert db["x"]._run() == 1
    conn.close()
    assert conn.closed
    with pytest.raises(zpydb.Error, match="closed"):   # the handle closed db itself
        db["x"]._run()
    with zpydb.connect(url) as again:                  # and the write was durable
        assert again._run() == {"x": 1}


def test_the_client_handle_is_db_close_and_nothing_else(tmp_path):
    """Issue 11 item 4: closing through the handle must not leave a usable-looking db."""
    url = str(tmp_path / "Data.fs")
    db, handle = zpydb.client(url)
    assert [name for name in dir(handle) if not name.startswith("_")] == ["close", "closed"]
    db["kept"] = 1
    db.lock()
    db["x"] = 1
    handle.close()                                  # exactly db.close(): the block is aborted
    with pytest.raises(zpydb.Error):
        db.unlock()                                 # ...and says so, instead of returning
    with pytest.raises(zpydb.Error, match="closed"):
        db["y"] = 2
    with zpydb.connect(url) as again:
        assert again._run() == {"kept": 1}


def test_a_second_connect_with_other_options_is_refused(tmp_path):
    """Issue 11 item 5: one file in one process is one shared database; options cannot differ."""
    url = str(tmp_path / "Data.fs")
    first = zpydb.connect(url)
    try:
        with pytest.raises(zpydb.URLError, match="read_only=False.*cannot use read_only=True"):
            zpydb.connect(url, read_only=True)
        with pytest.raises(zpydb.URLError, match="retries"):
            zpydb.connect(url, retries=2)
        first["x"] = 1                              # the first one is unaffected
        same = zpydb.connect(url)                   # the same options share it
        assert same["x"]._run() == 1
        same.close()
    finally:
        first.close()
    with zpydb.connect(url, read_only=True) as reader:  # alone, read_only is honoured
        with pytest.raises(zpydb.ReadOnlyError):
            reader["x"] = 2
        assert reader["x"]._run() == 1


def test_a_non_database_file_is_refused_and_left_alone(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    with pytest.raises(zpydb.URLError, match="not a zpydb database"):
        zpydb.connect(str(junk))
    with pytest.raises(zpydb.URLError, match="is a directory"):
        zpydb.connect(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.txt"]
    assert junk.read_text() == "hello\n"
    with pytest.raises(zpydb.URLError, match="no such database file"):
        zpydb.connect(str(tmp_path / "missing.fs"), read_only=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.txt"]


def test_tls_options_need_all_three_files():
    with pytest.raises(zpydb.URLError, match="tls_cert, tls_key and tls_ca"):
        zpydb.connect("zeo://127.0.0.1:1", tls_cert="c.pem")


def test_missing_tls_files_are_named(tmp_path, monkeypatch):
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(zpydb.URLError) as caught:
        zpydb.connect("zeo://127.0.0.1:1", tls_cert="c.pem", tls_key="k.pem", tls_ca="ca.pme")
    message = str(caught.value)
    assert f"tls_ca 'ca.pme': no such file: {tmp_path}/ca.pme" in message
    assert "relative to the current directory" in message


# -- storages are built directly: no generated config files, server_sync as an argument --

def _spy_client_storage(monkeypatch):
    """Record the keyword arguments zpydb builds ZEO's ClientStorage with."""
    built = []

    class Spy(storage.ClientStorage):
        def __init__(self, address, **kw):
            built.append(kw)
            super().__init__(address, **kw)

    monkeypatch.setattr(storage, "ClientStorage", Spy)
    return built


def test_connecting_writes_no_temporary_config_file(tmp_path, monkeypatch):
    """Issue 13 item 1: TLS and embedded files used to go through a ZConfig file written
    to the temporary directory; now the storages are built directly, so the temporary
    directory stays empty (with a blob_dir given) or holds only the client's own blob
    directory, which close() removes."""
    from tests.servers import ZeoServer
    from zpydb.certs import make_dev_certs

    certs = make_dev_certs(tmp_path / "certs")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    built = _spy_client_storage(monkeypatch)
    tls = dict(tls_cert=certs["client"], tls_key=certs["client_key"], tls_ca=certs["ca"],
               wait_timeout=10)
    with ZeoServer(tmp_path / "zeo", kind="tls", certs=certs) as server:
        with zpydb.connect(server.url, blob_dir=str(tmp_path / "blobs"), **tls) as db:
            db["t"] = 1
            assert list(scratch.iterdir()) == []
        with zpydb.connect(server.url, **tls) as db:
            assert db["t"]._run() == 1
            made = list(scratch.iterdir())
            assert [p.name.startswith("zpydb-blobs-") and p.is_dir() for p in made] == [True]
            assert not [p for p in made[0].rglob("*") if p.suffix == ".conf"]
        assert list(scratch.iterdir()) == []         # the private blob dir went with close()
    assert len(built) == 2 and all(isinstance(kw["ssl"], ssl.SSLContext) for kw in built)
    assert all(kw["ssl"].check_hostname and kw["ssl_server_hostname"] == "127.0.0.1"
               for kw in built)
    with zpydb.connect(str(tmp_path / "x.fs")) as db:  # embedded: FileStorage with blob_dir
        db["f"] = zpydb.File(b"data", name="f.bin")
        assert isinstance(db._session.db.storage, storage.FileStorage)
        assert db._session.db.storage.blob_dir == str(tmp_path / "x.fs.blobs")
    assert list(scratch.iterdir()) == []


def test_fresh_reads_pings_the_server_itself(zeo_server, monkeypatch):
    """fresh_reads=True: a client sees another client's acknowledged write at its very
    next statement.  The ClientStorage is built without ``server_sync`` (a blind write
    may skip the round trip: session.py, "Writes without the ping"); zpydb pings the
    server itself before every other transaction (``OpenDatabase.sync``), and
    fresh_reads=False has no ping at all."""
    built = _spy_client_storage(monkeypatch)
    reader = zpydb.connect(zeo_server.url, wait_timeout=10)
    writer = zpydb.connect(zeo_server.url, wait_timeout=10)
    local = zpydb.connect(zeo_server.url, wait_timeout=10, fresh_reads=False)
    try:
        assert [kw["server_sync"] for kw in built] == [False, False, False]
        assert reader._session.opened.sync is not None
        assert local._session.opened.sync is None
        for i in range(20):
            writer["n"] = i
            assert reader["n"].value() == i          # immediately, not eventually
    finally:
        for db in (reader, writer, local):
            db.close()
