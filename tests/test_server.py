"""The ZEO server side: bundled configs, `zpydb serve`/`certs`, replicas and TLS.

Every test runs real runzeo processes (devservers/zeo.py) on 127.0.0.1 and free ports.
"""

import argparse
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import transaction
import ZEO
from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ReadOnlyError

try:
    from tests.servers import (REPO, ZeoServer, ZeoServerError, free_port, port_open,
                               wait_for_port, wait_for_port_closed)
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from servers import (REPO, ZeoServer, ZeoServerError, free_port, port_open,
                         wait_for_port, wait_for_port_closed)

from zpydb import server as zserver
from zpydb.certs import make_dev_certs, make_other_ca
from zpydb.errors import DisconnectedError
from zpydb.storage import Options, open_database

WAIT = 2  # seconds a refused client waits before giving up


def zeo_db(address, tmp_path, name, **kw):
    kw.setdefault("wait_timeout", 5)
    return ZEO.DB(address, blob_dir=str(tmp_path / f"client-blobs-{name}"), **kw)


def commit(db, **items):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        with tm:
            conn.root().update(items)
    finally:
        conn.close()


def read_root(db):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        tm.begin()
        return dict(conn.root())
    finally:
        tm.abort()
        conn.close()


@pytest.fixture
def primary(tmp_path):
    with ZeoServer(tmp_path / "primary") as server:
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    paths = make_dev_certs(directory)
    paths["other"] = make_other_ca(directory)
    return paths


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    with ZeoServer(tmp_path_factory.mktemp("tls"), kind="tls", certs=certs) as server:
        yield server


# -- helpers ------------------------------------------------------------------

def test_free_port_and_wait_for_port():
    port = free_port()
    assert not port_open("127.0.0.1", port)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", port, timeout=0.3)
    assert time.monotonic() - started < 2


def test_failed_start_shows_the_log(tmp_path):
    server = ZeoServer(tmp_path / "bad", config=tmp_path / "missing.conf")
    with pytest.raises((ZeoServerError, FileNotFoundError)):
        server.start()
    server = ZeoServer(tmp_path / "bad2", start_timeout=10,
                       extra_args=["-X", "zeo/transaction-timeout=notanumber"])
    with pytest.raises(ZeoServerError, match="transaction-timeout|notanumber"):
        server.start()
    assert not server.running


# -- the bundled read-write config --------------------------------------------

def test_primary_commits_and_keeps_data_across_restart(primary, tmp_path):
    assert primary.url == f"zeo://127.0.0.1:{primary.port}"
    assert primary.pid and primary.running
    db = zeo_db(primary.address, tmp_path, "a")
    try:
        commit(db, answer=42, nested={"l": [1, 2, 3]})
        assert read_root(db)["answer"] == 42
    finally:
        db.close()
    assert (primary.data_dir / "Data.fs").stat().st_size > 0
    assert (primary.data_dir / "blobs").is_dir()

    primary.restart()
    db = zeo_db(primary.address, tmp_path, "b")
    try:
        assert read_root(db) == {"answer": 42, "nested": {"l": [1, 2, 3]}}
    finally:
        db.close()
    assert primary.stop() == 0
    assert not primary.running


def test_kill_is_sigkill(primary):
    primary.kill()
    assert primary.process.returncode == -signal.SIGKILL
    wait_for_port_closed("127.0.0.1", primary.port)


def test_runzeo_command_defaults_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = zserver.runzeo_command()
    assert command[0] == os.path.join(os.path.dirname(sys.executable), "runzeo")
    assert command[1:3] == ["-C", str(REPO / "zeo_configs" / "zeo.conf")]
    info = zserver.describe_command(command)
    assert info["address"] == "127.0.0.1:8100" and not info["read_only"]
    assert info["storages"][0]["path"] == str(tmp_path / "var" / "zeo" / "Data.fs")
    assert (tmp_path / "var" / "zeo").is_dir()  # created: FileStorage would not

    info = zserver.describe_command(zserver.runzeo_command(address="9999", data_dir="d"))
    assert info["address"] == "127.0.0.1:9999"
    assert info["storages"][0]["blob_dir"] == str(tmp_path / "d" / "blobs")

    info = zserver.describe_command(zserver.runzeo_command(read_only=True))
    assert info["address"] == "127.0.0.1:8101" and info["read_only"]
    assert info["storages"][0]["upstream"] == "127.0.0.1:8100"
    info = zserver.describe_command(zserver.runzeo_command(upstream="127.0.0.1:7000"))
    assert info["storages"][0]["upstream"] == "127.0.0.1:7000"

    with pytest.raises(ValueError):
        zserver.runzeo_command(address="nonsense")
    with pytest.raises(ValueError, match="zeoclient"):
        zserver.runzeo_command(config=zserver.bundled_config("zeo.conf"), read_only=True)


def test_runzeo_command_starts_a_server(tmp_path):
    port = free_port()
    command = zserver.runzeo_command(address=f"127.0.0.1:{port}", data_dir=tmp_path / "data")
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 30, process)
        db = zeo_db(("127.0.0.1", port), tmp_path, "c")
        try:
            commit(db, x=1)
        finally:
            db.close()
    finally:
        process.terminate()
        assert process.wait(10) == 0
    assert (tmp_path / "data" / "Data.fs").exists()


def test_register_commands():
    parser = argparse.ArgumentParser()
    zserver.register_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "--read-only", "--upstream", "127.0.0.1:1",
                              "--address", "127.0.0.1:2", "--data-dir", "d"])
    assert args.func is zserver.serve
    assert (args.read_only, args.upstream, args.address, args.data_dir, args.config) == \
        (True, "127.0.0.1:1", "127.0.0.1:2", "d", None)
    args = parser.parse_args(["certs", "somewhere"])
    assert args.func is zserver.certs and args.directory == "somewhere"


def test_serve_upstream_needs_read_only(capsys):
    parser = argparse.ArgumentParser()
    zserver.register_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "--upstream", "127.0.0.1:1"])
    assert args.func(args) == 2
    assert "--read-only" in capsys.readouterr().err


def test_zpydb_serve_runs_in_foreground_and_forwards_sigterm(tmp_path):
    port = free_port()
    data = tmp_path / "served"
    code = "import sys; from zpydb.server import main; sys.exit(main())"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(tmp_path / "out", "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--address", f"127.0.0.1:{port}",
             "--data-dir", str(data)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port("127.0.0.1", port, 30, process)
        db = zeo_db(("127.0.0.1", port), tmp_path, "d")
        try:
            commit(db, served=True)
        finally:
            db.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    wait_for_port_closed("127.0.0.1", port)  # the runzeo child is gone too
    output = (tmp_path / "out").read_text()
    assert f"listening on 127.0.0.1:{port}" in output
    assert str(data / "Data.fs") in output
    assert "terminated by SIGTERM" in output  # runzeo got the forwarded signal


def test_zpydb_certs(tmp_path, capsys):
    assert zserver.main(["certs", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    for name in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem",
                 "client.pem", "client-key.pem"):
        path = tmp_path / "c" / name
        assert path.is_file() and str(path) in out
        if name.endswith("-key.pem"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "tls_cert=" in out and "tls_key=" in out and "tls_ca=" in out


# -- replica ------------------------------------------------------------------

def test_replica_serves_primary_data_and_refuses_writes(primary, tmp_path):
    db = zeo_db(primary.address, tmp_path, "primary")
    try:
        commit(db, before=1)  # also creates the root the replica needs
        with ZeoServer(tmp_path / "replica", kind="replica", upstream=primary.address) as replica:
            rdb = zeo_db(replica.address, tmp_path, "replica", read_only=True)
            try:
                assert read_root(rdb) == {"before": 1}

                commit(db, after=2)
                deadline = time.monotonic() + 10
                while read_root(rdb).get("after") != 2:
                    assert time.monotonic() < deadline, "primary write never reached the replica"
                    time.sleep(0.01)

                tm = transaction.TransactionManager()
                conn = rdb.open(tm)
                conn.root()["nope"] = 1
                with pytest.raises(ReadOnlyError):
                    tm.commit()
                tm.abort()
                conn.close()
            finally:
                rdb.close()

            # A read-write client cannot register with a read-only server at all.
            with pytest.raises(ClientDisconnected):
                ClientStorage(replica.address, wait_timeout=WAIT,
                              blob_dir=str(tmp_path / "rw-blobs"))
            # zpydb clients connect to a replica with read_only=True.
            opened = open_database(replica.url, Options(read_only=True, wait_timeout=5))
            try:
                assert read_root(opened.db)["after"] == 2
            finally:
                opened.close()
    finally:
        db.close()


# -- TLS ----------------------------------------------------------------------

def tls_options(certs, cert="client", key="client_key", ca="ca"):
    return Options(tls_cert=certs[cert], tls_key=certs[key], tls_ca=certs[ca],
                   wait_timeout=WAIT)


def test_tls_client_with_cert_from_the_ca_works(tls_server, certs):
    opened = open_database(tls_server.url, tls_options(certs))
    try:
        commit(opened.db, secret="tls")
        assert read_root(opened.db)["secret"] == "tls"
    finally:
        opened.close()


def test_tls_refuses_plain_client(tls_server):
    with pytest.raises(DisconnectedError):
        open_database(tls_server.url, Options(wait_timeout=WAIT))


def test_tls_refuses_client_without_certificate(tls_server, certs, tmp_path):
    import ssl
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certs["ca"])
    with pytest.raises(ClientDisconnected):
        ClientStorage(tls_server.address, ssl=context, ssl_server_hostname="127.0.0.1",
                      wait_timeout=WAIT, blob_dir=str(tmp_path / "nocert-blobs"))
    # The same client with the certificate loaded connects (so the refusal above is
    # about the missing certificate, not the CA or hostname settings).
    context.load_cert_chain(certs["client"], certs["client_key"])
    storage = ClientStorage(tls_server.address, ssl=context, ssl_server_hostname="127.0.0.1",
                            wait_timeout=5, blob_dir=str(tmp_path / "cert-blobs"))
    assert storage.is_connected()
    storage.close()


def test_tls_refuses_client_cert_from_another_ca(tls_server, certs):
    other = certs["other"]
    options = Options(tls_cert=other["client"], tls_key=other["client_key"],
                      tls_ca=certs["ca"], wait_timeout=WAIT)
    with pytest.raises(DisconnectedError):
        open_database(tls_server.url, options)


def test_tls_from_a_client_config_file(tls_server, certs, tmp_path):
    """zodburi's zeo:// has no TLS; a zconfig:// file with ZEO's <clientstorage> does."""
    config = tmp_path / "client.conf"
    config.write_text(
        "%import ZEO\n"
        "<clientstorage main>\n"
        f"  server {tls_server.hostport}\n"
        f"  blob-dir {tmp_path / 'client-blobs'}\n"
        "  wait-timeout 5\n"
        "  <ssl>\n"
        f"    certificate {certs['client']}\n"
        f"    key {certs['client_key']}\n"
        f"    authenticate {certs['ca']}\n"
        "    server-hostname 127.0.0.1\n"
        "  </ssl>\n"
        "</clientstorage>\n")
    import zpydb
    with zpydb.connect(f"zconfig://{config}") as db:
        db["over"] = "tls"
        assert db["over"]._run() == "tls"
        db.undo()
        assert "over" not in db


def test_tls_refusal_message_is_clear(tls_server):
    import zpydb
    with pytest.raises(zpydb.DisconnectedError) as info:
        zpydb.connect(tls_server.url, wait_timeout=WAIT)
    assert tls_server.hostport in str(info.value) and "TLS" in str(info.value)


def test_tls_refusal_names_the_server_not_a_temp_file(tls_server, certs):
    import zpydb
    other = certs["other"]
    with pytest.raises(zpydb.DisconnectedError) as info:
        zpydb.connect(tls_server.url, tls_cert=other["client"], tls_key=other["client_key"],
                      tls_ca=certs["ca"], wait_timeout=WAIT)
    assert f"zeo://{tls_server.hostport}" in str(info.value) and "zconfig" not in str(info.value)
