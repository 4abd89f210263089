"""Security (issue 12, docs/security.md): every attack, against real servers and storages.

* the wire: a raw TCP (and TLS) client sends ZEO's handshake and a pickle that
  calls ``builtins.exec``, calls methods ZEO refuses, announces a 4 GiB frame;
  first against a *stock* runzeo (the control: the attack works there, so
  the marker-file check can fail), then against the bundled configs and
  ``zpydb serve`` (primary, replica, TLS), where it must not;
* records: a value whose pickle calls ``os.system``, written with raw ZODB,
  read by another zpydb process and merged by conflict resolution (in runzeo,
  in the client for FileStorage and PostgreSQL), packed, and a transaction
  whose metadata is such a pickle;
* subclasses of str/int/float/bytes/tuple stored through zpydb come back as the
  plain types, without running any of their methods;
* import: ``$file`` references to /proc/self/environ, ../../etc/hostname and a
  symlink out of the files directory are refused, and nothing is imported.

Side effects are detected by marker files: each attack tries to create one,
and the test asserts it does not exist (waiting a bounded time for the server
to have processed the attack first).
"""

import collections
import enum
import io
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import transaction
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import ReadOnlyError
from ZODB.utils import z64

import zpydb
from zpydb import export, nodes, safety
from zpydb import server as zserver
from zpydb.certs import make_dev_certs

try:
    from tests.servers import REPO, ZeoServer, free_port, wait_for_port
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from servers import REPO, ZeoServer, free_port, wait_for_port

WAIT = 5.0  # seconds any single wait in these tests may take
#: The backends of conftest.py's ``backend`` fixture that have a server or other clients.
SHARED_BACKENDS = [name for name in os.environ.get("ZPYDB_TEST_BACKENDS",
                                                   "file,zeo,postgres").split(",")
                   if name and name != "file"]


# -- attack material -------------------------------------------------------------

def exec_frame(marker):
    """The pickle of issue 12: ``builtins.exec`` writing ``marker``."""
    code = f'open({str(marker)!r},"w").write("pwned")'.encode()
    return b"cbuiltins\nexec\n(S'" + code.replace(b"'", b"\\'") + b"'\ntR."


class Evil(str):
    """A str whose pickle calls ``os.system`` (what ``to_node`` used to store as is)."""

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def evil(marker):
    value = Evil("x")
    value.marker = str(marker)
    return value


def evil_pickle(marker):
    """A pickle that runs ``os.system`` when loaded (a transaction's metadata)."""
    import pickle
    return pickle.dumps(evil(marker), protocol=3)


def absent(marker, settle=0.5):
    """True when ``marker`` does not appear within ``settle`` seconds (an attack ran nothing)."""
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        if Path(marker).exists():
            return False
        time.sleep(0.02)
    return not Path(marker).exists()


def outcome(func):
    """``"ok"`` or the message of what ``func()`` raised."""
    try:
        func()
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def appears(marker, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- a raw ZEO connection ----------------------------------------------------------

class RawZeo:
    """ZEO's framing (4-byte size + payload) over a bare socket, for attacks."""

    def __init__(self, address, tls=None):
        sock = socket.create_connection(address, timeout=WAIT)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=address[0])
        self.sock = sock
        self.announced = self.recv()

    def send(self, payload, size=None):
        """Send one frame; False when the server has already closed the connection."""
        size = len(payload) if size is None else size
        try:
            self.sock.sendall(struct.pack(">I", size) + payload)
            return True
        except OSError:
            return False

    def call(self, message_id, name, *args):
        return self.send(msgpack.packb((message_id, False, name, args), use_bin_type=True))

    def recv(self):
        header = self._exactly(4)
        return None if header is None else self._exactly(struct.unpack(">I", header)[0])

    def reply(self):
        frame = self.recv()
        return None if frame is None else msgpack.unpackb(frame, raw=False)

    def _exactly(self, count):
        data = b""
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def closed_by_server(self, timeout=WAIT):
        """Wait (bounded) until the server closes the connection; False on a timeout."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True
        return False

    def close(self):
        self.sock.close()


def wait_for_log(server, text, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- servers -----------------------------------------------------------------------

STOCK_CONFIG = """\
<zeo>
  address {address}
  msgpack {msgpack}
</zeo>
<filestorage 1>
  path {data}/Data.fs
</filestorage>
"""


class StockServer(ZeoServer):
    """runzeo WITHOUT zpydb's guard: the control that shows each attack is real."""

    def __init__(self, directory, msgpack=False):
        super().__init__(directory)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "stock.conf"
        self.config.write_text(STOCK_CONFIG.format(address=self.hostport, data=self.data_dir,
                                                   msgpack=str(msgpack).lower()))

    def command(self):
        return [zserver.runzeo_executable(), "-C", str(self.config)]


def init_root(server):
    """Create the root and zpydb's data root (a replica needs them first)."""
    db = zpydb.connect(server.url, wait_timeout=10)
    db["init"] = 1
    db.close()


def serves(server, read_only=False):
    """The server still works for an ordinary zpydb client."""
    db = zpydb.connect(server.url, wait_timeout=10, read_only=read_only)
    try:
        if not read_only:
            db["alive"] = time.time()
        return "init" in db
    finally:
        db.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, certs):
    """The bundled configs as shipped: primary, its replica, and a TLS primary."""
    base = tmp_path_factory.mktemp("guarded")
    with ZeoServer(base / "primary") as primary:
        init_root(primary)
        with ZeoServer(base / "replica", kind="replica", upstream=primary.address) as replica, \
                ZeoServer(base / "tls", kind="tls", certs=certs) as tls:
            yield {"primary": primary, "replica": replica, "tls": tls}


def tls_context(certs):
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certs["ca"])
    context.load_cert_chain(certs["client"], certs["client_key"])
    return context


def raw(guarded, kind, certs):
    server = guarded[kind]
    return RawZeo(server.address, tls_context(certs) if kind == "tls" else None)


# -- 1. the wire: no pickles, only allowed calls, bounded frames ---------------------

@pytest.mark.parametrize("msgpack_on", [False, True], ids=["pickle", "msgpack"])
def test_control_stock_runzeo_runs_the_exec_frame(tmp_path, msgpack_on):
    """Without zpydb's guard the attack works, even with ``msgpack true``: the client
    simply answers the handshake with ``Z5`` and ZEO decodes its pickles."""
    marker = tmp_path / "owned.txt"
    with StockServer(tmp_path / "stock", msgpack=msgpack_on) as stock:
        attacker = RawZeo(stock.address)
        assert attacker.announced == (b"M5" if msgpack_on else b"Z5")
        attacker.send(b"Z5")
        attacker.send(exec_frame(marker))
        assert appears(marker), stock.log()[-2000:]
        attacker.close()
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("kind", ["primary", "replica", "tls"])
def test_exec_frame_is_refused(guarded, certs, kind, tmp_path):
    marker = tmp_path / "owned.txt"
    attacker = raw(guarded, kind, certs)
    assert attacker.announced == b"M5"            # the server offers msgpack only
    attacker.send(b"Z5")                          # ...and refuses a client that insists on pickles
    attacker.send(exec_frame(marker))
    assert attacker.closed_by_server()
    attacker.close()
    assert absent(marker)
    assert wait_for_log(guarded[kind], "refused a b'Z5' handshake")
    assert "zpydb guard active: msgpack only, messages up to 67108864 bytes" in \
        guarded[kind].log()
    if kind != "tls":
        assert serves(guarded[kind], read_only=kind == "replica")


@pytest.mark.parametrize("kind", ["primary", "replica"])
def test_pickle_inside_a_msgpack_session_is_not_unpickled(guarded, certs, kind, tmp_path):
    """After an M5 handshake the exec pickle is just bytes that msgpack cannot decode."""
    marker = tmp_path / "owned.txt"
    attacker = raw(guarded, kind, certs)
    assert attacker.announced == b"M5"
    attacker.send(b"M5")
    attacker.send(exec_frame(marker))
    assert attacker.closed_by_server()
    attacker.close()
    attacker = raw(guarded, kind, certs)          # and as an argument of a real call
    attacker.send(b"M5")
    attacker.call(1, "register", "1", True)
    assert attacker.reply()[2] == ".reply"
    attacker.call(2, "loadBefore", exec_frame(marker), b"\xff" * 8)
    assert attacker.reply() is not None           # an error reply, nothing run
    attacker.close()
    assert absent(marker)
    assert serves(guarded[kind], read_only=kind == "replica")


@pytest.mark.parametrize("kind", ["primary", "replica"])
def test_methods_a_client_may_not_call_are_not_called(guarded, certs, kind):
    server = guarded[kind]
    text = f"INJECTED-{kind}-{time.monotonic_ns()}"
    attacker = raw(guarded, kind, certs)
    attacker.send(b"M5")
    attacker.call(1, "log", text, 40)             # before register
    assert attacker.closed_by_server()
    attacker.close()
    attacker = raw(guarded, kind, certs)
    attacker.send(b"M5")
    attacker.call(1, "register", "1", True)
    assert attacker.reply()[2] == ".reply"
    attacker.call(2, "log", text, 40)             # after register: still not a ZEO method
    assert attacker.closed_by_server()
    attacker.close()
    assert wait_for_log(server, "called 'log', which it may not call")
    assert text not in server.log()
    assert "`'log'` raised exception" not in server.log()   # stock ZEO tries the call anyway


def test_ruok_and_zeopack_still_work(guarded):
    """The guard keeps ZEO's status probe and operator tools (msgpack clients) working."""
    probe = RawZeo(guarded["primary"].address)
    probe.send(b"ruok")
    status = json.loads(probe.recv())
    probe.close()
    assert "1" in status
    zeopack = Path(sys.executable).parent / "zeopack"
    result = subprocess.run([str(zeopack), guarded["primary"].hostport], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert serves(guarded["primary"])


def test_a_replica_refuses_pack(guarded, tmp_path):
    """ZEO lets any client pack, even through a read-only server; a replica's storage is
    a client of the primary, so that would pack the PRIMARY and erase its undo log."""
    primary, replica = guarded["primary"], guarded["replica"]
    db = zpydb.connect(primary.url, wait_timeout=10)
    try:
        db["history"] = 1
        db["history"] = 2
        undo_entries = len(zodb_of(db).undoInfo(0, 1000))
        storage = ClientStorage(replica.address, read_only=True, wait_timeout=WAIT,
                                blob_dir=str(tmp_path / "blobs"))
        try:
            with pytest.raises(ReadOnlyError, match="pack refused"):
                storage.pack(time.time() + 1)
        finally:
            storage.close()
        assert len(zodb_of(db).undoInfo(0, 1000)) == undo_entries
    finally:
        db.close()
    assert wait_for_log(replica, "refused pack")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def test_oversized_message_is_refused_before_it_is_buffered(guarded, certs):
    server = guarded["primary"]
    before = rss_kb(server.pid)
    attacker = raw(guarded, "primary", certs)
    attacker.send(b"M5")
    sent, chunk = 0, b"\0" * (1 << 20)
    assert attacker.send(chunk, size=(1 << 32) - 1)   # announces 4 GiB
    sent += len(chunk)
    deadline = time.monotonic() + WAIT
    while sent < (200 << 20) and time.monotonic() < deadline:
        try:
            attacker.sock.sendall(chunk)
        except OSError:
            break                                 # the server hung up
        sent += len(chunk)
    attacker.close()
    assert sent < (64 << 20), f"the server kept reading: {sent >> 20} MiB accepted"
    assert wait_for_log(server, "refused a 4294967295-byte message")
    assert rss_kb(server.pid) - before < 32 * 1024
    assert serves(server)


def test_record_over_the_limit_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("ZPYDB_MAX_MESSAGE_SIZE", str(1 << 20))
    with ZeoServer(tmp_path / "small") as server:
        db = zpydb.connect(server.url, wait_timeout=2)
        try:
            db["small"] = "x" * 1000
            with pytest.raises(zpydb.DisconnectedError, match="nothing was applied"):
                db["big"] = "y" * (2 << 20)
            assert db["small"]._run() == "x" * 1000 and "big" not in db
        finally:
            db.close()
        assert "refused a 2" in server.log()


def test_bundled_configs_load_the_guard_and_speak_msgpack():
    for name in ("zeo.conf", "replica.conf", "zeo-tls.conf"):
        lines = [line.split() for line in zserver.bundled_config(name).read_text().splitlines()]
        assert ["%import", "zpydb.zeo_guard"] in lines, name
        assert ["msgpack", "true"] in lines, name


def test_zpydb_serve_refuses_a_config_without_the_guard(tmp_path):
    config = tmp_path / "mine.conf"
    config.write_text(STOCK_CONFIG.format(address="127.0.0.1:1", data=tmp_path, msgpack="true"))
    with pytest.raises(ValueError, match="%import zpydb.zeo_guard"):
        zserver.runzeo_command(config=config)
    result = subprocess.run([sys.executable, "-m", "zpydb", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "%import zpydb.zeo_guard" in result.stderr


def test_zpydb_serve_runs_the_guard(tmp_path):
    port, marker = free_port(), tmp_path / "owned.txt"
    process = subprocess.Popen([sys.executable, "-m", "zpydb", "serve", "--address", str(port),
                                "--data-dir", str(tmp_path / "data")], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port, timeout=30, process=process)
        attacker = RawZeo(("127.0.0.1", port))
        attacker.send(b"Z5")
        attacker.send(exec_frame(marker))
        assert attacker.closed_by_server()
        attacker.close()
        assert absent(marker)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "refused a b'Z5' handshake" in stderr.decode()


# -- 2. records: only zpydb's classes are ever loaded --------------------------------

READER = """
import sys, zpydb
db = zpydb.connect(sys.argv[1], read_only=sys.argv[2] == "ro", wait_timeout=10)
try:
    print("READ", repr(db["d"]["k"]._run()))
except zpydb.UnsafeClassError as exc:
    print("REFUSED", exc)
db.close()
"""


def zodb_of(db):
    """zpydb's own ZODB.DB under a Database (writing raw ZODB bypasses to_node)."""
    return db._session.db


def plant(zdb, key, value):
    """With raw ZODB, put ``value`` under ``db['d'][key]`` (no to_node conversion)."""
    tm = transaction.TransactionManager()
    conn = zdb.open(tm)
    try:
        with tm:
            conn.root()["zpydb"]["d"][key] = value
    finally:
        conn.close()


def run_reader(url, read_only=False):
    result = subprocess.run([sys.executable, "-c", READER, url, "ro" if read_only else "rw"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_evil_value_is_refused_by_other_readers(backend, tmp_path):
    marker = tmp_path / "pwned"
    db = backend.connect()
    db["d"] = {"k": 1}
    plant(zodb_of(db), "p", evil(marker))
    db.close()
    out = run_reader(backend.url)
    assert "REFUSED refused to load posix.system from the database" in out, out
    assert absent(marker)


def test_evil_value_is_refused_through_a_replica(tmp_path):
    marker = tmp_path / "pwned"
    with ZeoServer(tmp_path / "primary") as primary:
        db = zpydb.connect(primary.url, wait_timeout=10)
        db["d"] = {"k": 1}
        plant(zodb_of(db), "p", evil(marker))
        db.close()
        with ZeoServer(tmp_path / "replica", kind="replica", upstream=primary.address) as replica:
            out = run_reader(replica.url, read_only=True)
    assert "REFUSED refused to load posix.system from the database" in out, out
    assert absent(marker)


def test_export_of_an_evil_value_is_one_clear_error(file_backend, tmp_path):
    marker = tmp_path / "pwned"
    db = file_backend.connect()
    db["d"] = {"k": 1}
    plant(zodb_of(db), "p", evil(marker))
    db.close()
    result = subprocess.run([sys.executable, "-m", "zpydb", "export", file_backend.url],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "refused to load posix.system" in result.stderr
    assert "Traceback" not in result.stderr
    assert absent(marker)


@pytest.mark.parametrize("evil_in", ["committed", "new"])
def test_conflict_resolution_never_loads_unknown_classes(backend, tmp_path, evil_in):
    """Two writers change different keys of one dict: the storage merges the bucket
    states -- in runzeo for ZEO, in this process for FileStorage and PostgreSQL."""
    marker = tmp_path / "pwned"
    db = backend.connect()
    db["d"] = {"k": 1}
    zdb = zodb_of(db)
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    conn1, conn2 = zdb.open(tm1), zdb.open(tm2)
    try:
        tm1.begin()
        tree = conn1.root()["zpydb"]["d"]
        assert tree["k"] == 1                     # conn1 now holds the old state
        first, second = ("p", evil(marker)), ("k2", 2)
        if evil_in == "new":
            first, second = second, first
        with tm2:
            conn2.root()["zpydb"]["d"][first[0]] = first[1]
        tree[second[0]] = second[1]
        merged = outcome(tm1.commit)
        tm1.abort()
    finally:
        conn1.close()
        conn2.close()
    assert absent(marker)                         # (first: os.system returns 0, which merges)
    assert merged.startswith("ConflictError"), merged
    if backend.server is not None:
        assert wait_for_log(backend.server, "conflict resolution refused: refused to load "
                                            "posix.system")
        assert serves_key(backend)


def serves_key(backend):
    other = backend.connect()
    other["other"] = 1
    return other["other"]._run() == 1


def test_pack_never_loads_classes(backend, tmp_path):
    """Pack (and its garbage collection) reads every reachable record's references."""
    marker = tmp_path / "pwned"
    db = backend.connect()
    db["d"] = {"k": 1}
    db["other"] = [1]
    plant(zodb_of(db), "p", evil(marker))
    zodb_of(db).pack()
    assert absent(marker)
    assert db["other"]._run() == [1]
    with pytest.raises(zpydb.UnsafeClassError):
        db["d"]._run()


class RawMetadata(TransactionMetaData):
    """Transaction metadata whose extension goes to the storage as raw bytes."""

    def __init__(self, data):
        self.raw = data
        super().__init__("attacker", "raw metadata")

    extension = property(lambda self: self.raw, lambda self, value: None)
    extension_bytes = property(lambda self: self.raw, lambda self, value: None)


def commit_with_metadata(storage, data):
    """Rewrite the root record in a transaction whose extension is ``data``."""
    txn = RawMetadata(data)
    storage.tpc_begin(txn)
    record, serial = storage.load(z64)
    storage.store(z64, serial, record, "", txn)
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)


@pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)
def test_transaction_metadata_is_never_unpickled_with_classes(backend, tmp_path):
    """A client may send any bytes as a transaction's extension; the server (ZEO) and
    every client (PostgreSQL) read them back for undoLog/history/iterator.  (An
    embedded Data.fs is written only by its one process.)"""
    marker = tmp_path / "pwned"
    db = backend.connect()
    db["d"] = {"k": 1}
    zdb = zodb_of(db)
    commit_with_metadata(zdb.storage, evil_pickle(marker))
    outcomes = [outcome(lambda: zdb.undoLog(0, 20)), outcome(lambda: zdb.undoInfo(0, 20)),
                outcome(lambda: zdb.history(z64, 5)),
                outcome(lambda: [t.extension for t in zdb.storage.iterator()]),
                outcome(lambda: db.history(5))]
    assert absent(marker)
    refused = [o for o in outcomes if o != "ok"]
    assert refused and all(o.startswith("UnsafeClassError: refused to load posix.system")
                           for o in refused), outcomes
    assert db["d"]._run() == {"k": 1}
    if backend.server is not None:
        assert serves_key(backend)


def test_safety_refuses_without_importing(monkeypatch):
    monkeypatch.delitem(sys.modules, "xml.dom.minidom", raising=False)
    with pytest.raises(zpydb.UnsafeClassError, match=r"xml\.dom\.minidom\.parseString"):
        safety.class_factory(None, "xml.dom.minidom", "parseString")
    assert "xml.dom.minidom" not in sys.modules
    assert safety.class_factory(None, "BTrees.OOBTree", "OOBTree").__name__ == "OOBTree"
    with pytest.raises(zpydb.UnsafeClassError, match="transaction metadata"):
        safety.plain_loads(evil_pickle("/nonexistent"))
    assert safety.plain_loads(__import__("pickle").dumps({"zpydb": "write", "n": [1, b"x"]}, 3)) \
        == {"zpydb": "write", "n": [1, b"x"]}


# -- 3. exact types: subclasses are stored as their base value ----------------------

class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


Point = collections.namedtuple("Point", "x y")

SUBCLASS_READER = """
import json, sys, zpydb
db = zpydb.connect(sys.argv[1], wait_timeout=10)
value = db["people"]._run()
print(json.dumps({repr(k): [repr(v), type(v).__name__] for k, v in value.items()}))
print(json.dumps(sorted(type(k).__name__ for k in value)))
db.close()
"""


def test_subclass_values_come_back_as_plain_types(backend, tmp_path):
    db = backend.connect()
    db["people"] = {"name": Name("Ann"), "color": Color.RED, "at": Point(1, Name("b")),
                    Name("key"): 2.5, "bytes": type("B", (bytes,), {})(b"\x00")}
    if backend.name == "file":
        db.close()
    result = subprocess.run([sys.executable, "-c", SUBCLASS_READER, backend.url],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    values, key_types = map(json.loads, result.stdout.splitlines())
    assert values == {"'name'": ["'Ann'", "str"], "'color'": ["1", "int"],
                      "'at'": ["(1, 'b')", "tuple"], "'key'": ["2.5", "float"],
                      "'bytes'": ["b'\\x00'", "bytes"]}
    assert key_types == ["str"] * 5
    exported = subprocess.run([sys.executable, "-m", "zpydb", "export", backend.url],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["people"]["name"] == "Ann"


def test_hostile_subclass_methods_never_run(fdb, tmp_path):
    ran = []

    def hook(name):
        def method(self, *args):
            ran.append(name)
            raise RuntimeError(name)
        return method

    hostile = {name: hook(name) for name in (
        "__str__", "__repr__", "__index__", "__int__", "__float__", "__bytes__", "__iter__",
        "__getitem__", "__len__", "__reduce__", "__reduce_ex__", "__getstate__", "__eq__",
        "__hash__", "__lt__")}
    values = {"s": type("S", (str,), hostile)("text"), "i": type("I", (int,), hostile)(7),
              "f": type("F", (float,), hostile)(0.5), "b": type("B", (bytes,), hostile)(b"ab"),
              "t": type("T", (tuple,), hostile)((1, Name("x")))}
    converted = {key: nodes.to_node(value) for key, value in values.items()}
    assert ran == []                              # nothing of the subclasses ran to convert
    assert [type(v) for v in converted.values()] == [str, int, float, bytes, tuple]
    for key, value in values.items():             # (the statement's note may repr() it:
        fdb[key] = value                          # that runs in the writer's own process)
    stored = {key: fdb[key]._run() for key in values}
    assert stored == {"s": "text", "i": 7, "f": 0.5, "b": b"ab", "t": (1, "x")}
    assert [type(v) for v in stored.values()] == [str, int, float, bytes, tuple]


def test_an_object_claiming_to_be_a_str_is_refused(fdb):
    class Liar:
        __class__ = property(lambda self: str)

    assert isinstance(Liar(), str)                # what isinstance() believes
    with pytest.raises(zpydb.UnstorableValueError, match="only claims to be a str"):
        fdb["x"] = Liar()
    assert "x" not in fdb


# -- 4. import reads only the files it was given ------------------------------------

def file_ref(path, data=None, **extra):
    import hashlib
    meta = {"name": "x", "path": str(path)}
    if data is not None:
        meta.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    meta.update(extra)
    return {"$file": meta}


def import_doc(db, tmp_path, document, files_dir=None):
    source = tmp_path / "in.json"
    source.write_text(json.dumps(document))
    with open(source) as stream:
        return export.import_json(db, stream, progress=False,
                                  context=export.import_context(str(source), files_dir))


def hostname_bytes():
    return Path("/etc/hostname").read_bytes()


@pytest.mark.parametrize("reference, reason", [
    ("/proc/self/environ", "no absolute path"),
    ("../../../../etc/hostname", "no '..'"),
    ("in.files/../../../etc/hostname", "no '..'"),
    ("in.files/link", "outside the files directory"),
    ("in.files/ok.bin|nosha", r"size \(bytes\) and sha256 \(64 hex digits\) are required"),
    ("in.files/ok.bin|wrongsize", "the export says"),
    ("elsewhere.bin", "outside the files directory"),
    ("in.files/gone.bin", "is missing"),
], ids=["proc-environ", "dotdot", "dotdot-inside", "symlink-out", "no-sha256", "wrong-size",
        "beside-the-json", "missing"])
def test_import_refuses_files_outside_the_files_dir(fdb, tmp_path, reference, reason):
    files = tmp_path / "in.files"
    files.mkdir()
    (files / "link").symlink_to("/etc/hostname")
    (files / "ok.bin").write_bytes(b"fine")
    (tmp_path / "elsewhere.bin").write_bytes(hostname_bytes())
    data = hostname_bytes()
    path, _, variant = reference.partition("|")
    ref = file_ref(path, data)
    if variant == "nosha":
        ref = file_ref(path, b"fine")
        del ref["$file"]["sha256"]
    if variant == "wrongsize":
        ref = file_ref(path, b"fine!")
    fdb["before"] = 1
    with pytest.raises(zpydb.Error, match=reason) as info:
        import_doc(fdb, tmp_path, {"ok": 1, "nested": {"a": [ref]}})
    message = str(info.value)
    assert str(tmp_path / "in.json") in message and "['nested']['a'][0]" in message
    assert "nothing was imported" in message
    assert dict(fdb.items()) == {"before": 1}     # the whole import was refused


def test_import_reads_the_files_export_wrote(fdb, tmp_path):
    files = tmp_path / "in.files"
    files.mkdir()
    (files / "000001-a.bin").write_bytes(b"content")
    import_doc(fdb, tmp_path, {"f": file_ref("in.files/000001-a.bin", b"content")})
    assert fdb["f"]._run().read() == b"content"
    other = tmp_path / "moved"
    other.mkdir()
    (other / "000001-a.bin").write_bytes(b"content")
    import_doc(fdb, tmp_path, {"g": file_ref("old/place/000001-a.bin", b"content")},
               files_dir=str(other))
    assert fdb["g"]._run().read() == b"content"
    with pytest.raises(zpydb.Error, match="pass --files-dir"):
        export.import_json(fdb, io.StringIO(json.dumps({"h": file_ref("a.bin", b"content")})),
                           progress=False)


def test_cli_import_of_proc_self_environ_reads_nothing(tmp_path):
    document = tmp_path / "evil.json"
    document.write_text(json.dumps({
        "a": file_ref("/proc/self/environ", b"x"),
        "b": file_ref("../../../../etc/hostname", hostname_bytes())}))
    url = str(tmp_path / "Data.fs")
    result = subprocess.run([sys.executable, "-m", "zpydb", "import", str(document), url,
                             "--no-progress"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=dict(os.environ, ZPYDB_SECRET="s3cr3t"))
    assert result.returncode == 1
    assert "/proc/self/environ" in result.stderr and "no absolute path" in result.stderr
    assert "Traceback" not in result.stderr
    if Path(url).exists():
        with zpydb.connect(url) as db:
            assert "a" not in db and "b" not in db
