"""A real ``zpydb web`` server process (uvicorn) for tests and benchmarks.

    with WebServer(tmp_path / "Data.fs") as web:
        status, headers, body = web.request("PUT", "/users/ann.json", b'{"name": "Ann"}')

The server runs ``python -m zpydb web`` (the ``zpydb`` command of this
interpreter) on 127.0.0.1 and a free port, its output goes to ``web.log`` in
``log_dir``, and it is started and stopped by PID within bounded time.
``request`` speaks HTTP/1.1 with the standard library (``http.client``), over
TLS when the server has a certificate.
"""

import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from devservers.ports import HOST, START_TIMEOUT, free_port, stop_process, wait_for_port

REPO = Path(__file__).resolve().parent.parent


class WebServerError(RuntimeError):
    """A ``zpydb web`` that did not start; the message has its log."""


class WebServer:
    """``zpydb web URL --address 127.0.0.1:PORT [args...]`` as a child process.

    ``ca``: the CA file a TLS client trusts (with ``--tls-cert``/``--tls-key`` in args).
    """

    def __init__(self, url, *args, log_dir=None, port=None, ca=None, env=None,
                 start_timeout=START_TIMEOUT):
        self.url = str(url)
        self.args = [str(a) for a in args]
        self.port = port or free_port()
        self.host = HOST
        self.ca = ca
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="zpydb-web-"))
        self.log_path = self.log_dir / "web.log"
        self.env = env
        self.start_timeout = start_timeout
        self.process = None
        self.scheme = "https" if "--tls-cert" in self.args else "http"

    @property
    def base(self):
        return f"{self.scheme}://{self.host}:{self.port}"

    def command(self):
        return [sys.executable, "-m", "zpydb", "web", self.url,
                "--address", f"{self.host}:{self.port}", *self.args]

    def start(self):
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env)
        try:
            wait_for_port(self.host, self.port, self.start_timeout, self.process)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise WebServerError(f"{exc}; log:\n{self.log()}") from None
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=15):
        code = stop_process(self.process, timeout=timeout)
        self.process = None
        return code

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def connection(self, timeout=60):
        """A new keep-alive connection to the server."""
        if self.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca)
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, connection=None, timeout=60):
        """``(status, headers (lower-case names), body bytes)``; a new connection unless given."""
        own = connection is None
        conn = connection or self.connection(timeout)
        try:
            if isinstance(body, str):
                body = body.encode("utf-8")
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            if own:
                conn.close()

    def events(self, path, headers=None, timeout=60):
        """An :class:`EventStream` of ``path`` (``Last-Event-ID`` and the like in headers)."""
        return EventStream(self, path, headers, timeout)

    def json(self, method, path, value=None, headers=None, connection=None):
        """``(status, decoded JSON body or None)``; ``value`` is sent as JSON unless None."""
        body = None if value is None else json.dumps(value)
        status, _headers, data = self.request(method, path, body, headers, connection)
        return status, (json.loads(data) if data else None)


class EventStream:
    """A Server-Sent Events client of one stream (``GET path`` with ``Accept:
    text/event-stream``), reading with the standard library.

        with web.events("/cfg.json") as stream:
            kind, event_id, data = stream.next(timeout=30)
    """

    def __init__(self, server, path, headers=None, timeout=60):
        self.conn = server.connection(timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.last_id = None

    def next(self, timeout=60, keepalives=False):
        """``(event, id or None, decoded data)`` of the next event (keep-alives skipped
        unless asked); ``None`` when the server ended the stream."""
        self.conn.sock.settimeout(timeout)
        kind, event_id, data = None, None, []
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.decode("utf-8").rstrip("\r\n")
            if line:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    kind = value
                elif field == "id":
                    event_id = value
                elif field == "data":
                    data.append(value)
                continue
            if kind == "keep-alive" and not keepalives:
                kind, event_id, data = None, None, []
                continue
            if event_id is not None:
                self.last_id = event_id
            return kind, event_id, json.loads("\n".join(data)) if data else None

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
