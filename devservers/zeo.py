"""Real ZEO servers (runzeo processes) for tests and benchmarks.

Plain helpers, no pytest fixtures::

    from devservers.zeo import ZeoServer

    with ZeoServer(tmp_path / "primary") as primary:            # zeo.conf
        db = ZEO.DB(primary.address, wait_timeout=5, blob_dir=...)
    with ZeoServer(tmp_path / "replica", kind="replica", upstream=primary.address): ...
    with ZeoServer(tmp_path / "tls", kind="tls", certs=make_dev_certs(tmp_path / "certs")): ...

Every server runs the runzeo next to ``sys.executable`` with a bundled config from
``zeo_configs/`` and runzeo's own overrides (``-a`` for the address, ``-X`` for
paths), listens on 127.0.0.1 and a free port, keeps its data and its log
(``runzeo.log``) in the given directory, and is started and stopped by PID within
bounded time.
"""

import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # make `zpydb` importable when run from elsewhere
    sys.path.insert(0, str(REPO))

from devservers.ports import (HOST, START_TIMEOUT, STOP_TIMEOUT, free_port,  # noqa: E402
                              port_open, stop_process, wait_for_port, wait_for_port_closed)
from zpydb.server import runzeo_command, bundled_config  # noqa: E402

KINDS = {"primary": "zeo.conf", "replica": "replica.conf", "tls": "zeo-tls.conf"}


class ZeoServerError(RuntimeError):
    """A runzeo that did not start; the message includes its log."""


class ZeoServer:
    """A runzeo process on 127.0.0.1:``port`` (a free one by default).

    directory: where the data (``directory/data``) and the log (``runzeo.log``) live.
    kind:      ``"primary"`` (zeo.conf), ``"replica"`` (replica.conf) or ``"tls"``
               (zeo-tls.conf); or give ``config`` (a path) directly.
    upstream:  for a replica, the primary's ``(host, port)`` or ``"host:port"``.
    certs:     for TLS, the dict from ``zpydb.certs.make_dev_certs`` (server,
               server_key and ca are used).
    """

    def __init__(self, directory, kind="primary", port=None, upstream=None, certs=None,
                 config=None, start_timeout=START_TIMEOUT, extra_args=()):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.config = Path(config) if config else bundled_config(KINDS[kind])
        self.host = HOST
        self.port = port or free_port()
        if isinstance(upstream, tuple):
            upstream = f"{upstream[0]}:{upstream[1]}"
        self.upstream = upstream
        self.certs = certs
        if kind == "tls" and not certs:
            raise ValueError("a TLS server needs certs=make_dev_certs(...)")
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "runzeo.log"
        self.process = None

    # -- what clients need ---------------------------------------------------
    @property
    def address(self):
        """``(host, port)``, as ``ZEO.client``/``ClientStorage`` take it."""
        return (self.host, self.port)

    @property
    def hostport(self):
        return f"{self.host}:{self.port}"

    @property
    def url(self):
        return f"zeo://{self.host}:{self.port}"

    @property
    def pid(self):
        return self.process.pid if self.process else None

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def command(self):
        command = runzeo_command(config=self.config, address=self.hostport,
                                 read_only=self.kind == "replica", upstream=self.upstream,
                                 data_dir=self.data_dir)
        if self.kind == "tls":
            command += ["-X", f"zeo/ssl/certificate={self.certs['server']}",
                        "-X", f"zeo/ssl/key={self.certs['server_key']}",
                        "-X", f"zeo/ssl/authenticate={self.certs['ca']}"]
        return command + self.extra_args

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- life cycle ----------------------------------------------------------
    def start(self):
        if self.running:
            raise ZeoServerError(f"runzeo {self.pid} is already running on {self.hostport}")
        if port_open(self.host, self.port):
            raise ZeoServerError(f"{self.hostport} is already in use")
        command = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.directory)
        try:
            wait_for_port(self.host, self.port, self.start_timeout, self.process)
        except (TimeoutError, RuntimeError) as exc:
            self.kill()
            raise ZeoServerError(f"runzeo ({self.kind}) did not start on {self.hostport}: "
                                 f"{exc}\n--- {self.log_path} ---\n{self.log()[-4000:]}") from None
        return self

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send ``sig`` to the server's PID, wait up to ``timeout`` s, then SIGKILL.

        Returns the exit code (None if it was not running).
        """
        return stop_process(self.process, sig, timeout)

    def kill(self):
        """SIGKILL: a crash, no clean shutdown (Data.fs.index is not written)."""
        return self.stop(signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM):
        """Stop (with ``sig``) and start again on the same address and data."""
        self.stop(sig)
        wait_for_port_closed(self.host, self.port)
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ZeoServer {self.kind} {self.hostport} {state} {self.directory}>"
