"""``zpydb web``: the database over HTTP (REST like Firebase's, and a console at ``/``).

    zpydb web [URL] [--address HOST:PORT] [--tokens FILE] [--tls-cert F --tls-key F]

This module is the command: its arguments, their checks, and starting
uvicorn.  It imports nothing of the web stack until the server starts, so the
``zpydb`` command works where only ``make run``'s packages are installed
(``pip install zpydb[web]`` adds Starlette and uvicorn).  The app is in
app.py, what a request does to the tree in zpydb/rest.py, the tokens file in
zpydb/access.py.

Without ``--tokens`` anyone who reaches the server may read and write, so it
listens on a loopback address only (127.0.0.1, ::1, localhost) and refuses
any other.
"""

import ipaddress
import logging
import re
import signal
import sys

from ..errors import Error

DEFAULT_ADDRESS = "127.0.0.1:8110"
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_THREADS = 8
#: Seconds a client has to send a whole request head (nginx's client_header_timeout
#: is 60 s, Node's headersTimeout 60 s; a head is a few hundred bytes).
DEFAULT_HEAD_TIMEOUT = 30


class WebUsageError(Error):
    """An argument of ``zpydb web`` that cannot work (printed as a usage error)."""


def register_commands(subparsers):
    parser = subparsers.add_parser(
        "web", help="serve the database over HTTP: REST and a console (needs zpydb[web])",
        description="Serve the database over HTTP: a REST API like Firebase's "
                    "(GET/PUT/PATCH/POST/DELETE /path.json) and a console at /. "
                    "See docs/web.md.")
    parser.add_argument("url", nargs="?", help="database URL (default: $ZPYDB_URL or ./var/Data.fs)")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                        help=f"where to listen (default {DEFAULT_ADDRESS}; without --tokens "
                             f"only a loopback address)")
    parser.add_argument("--tokens", metavar="FILE",
                        help="JSON tokens file: who may read and write which paths "
                             "(required to listen beyond loopback)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                        help=f"largest request body (default {DEFAULT_MAX_BODY}); larger: 413")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="N",
                        help=f"worker threads for database calls (default {DEFAULT_THREADS})")
    parser.add_argument("--keep-alive", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between keep-alive events on an idle stream (default 30)")
    parser.add_argument("--head-timeout", type=float, default=DEFAULT_HEAD_TIMEOUT,
                        metavar="SECONDS",
                        help=f"seconds a client has to send a whole request line and headers "
                             f"(then 408 and closed; default {DEFAULT_HEAD_TIMEOUT})")
    parser.add_argument("--max-streams", type=int, default=1000, metavar="N",
                        help="open event streams at most (one thread each; default 1000)")
    parser.add_argument("--log-requests", action="store_true",
                        help="log one line per request on stderr (auth= values hidden)")
    group = parser.add_argument_group("connection to the database")
    group.add_argument("--read-url", help="read-only replica for reads")
    group.add_argument("--wait-timeout", type=float, help="seconds to wait for a ZEO server")
    group.add_argument("--db-tls-cert", help="client certificate for a TLS ZEO server")
    group.add_argument("--db-tls-key", help="its key")
    group.add_argument("--db-tls-ca", help="CA that signed the ZEO server's certificate")
    parser.set_defaults(func=serve)


def parse_address(text):
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); WebUsageError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]+", port) or not 0 < int(port) < 65536 or not host:
        raise WebUsageError(f"--address must be HOST:PORT (like {DEFAULT_ADDRESS} or "
                            f"[::1]:8110), not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_arguments(args):
    """Everything that can be checked before the database is opened (cli.check_arguments)."""
    from ..cli import check_input_file
    host, _port = parse_address(args.address)
    if args.tokens:
        check_input_file(args.tokens, "--tokens file")
    elif not is_loopback(host):
        raise WebUsageError(
            f"without --tokens the server listens on loopback only (127.0.0.1, ::1, "
            f"localhost), not {host!r}: anyone who can reach it could read and change "
            f"everything; give a --tokens FILE (docs/web.md) to listen on {host}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise WebUsageError("--tls-cert and --tls-key go together (the certificate and its key)")
    for name in ("tls_cert", "tls_key", "db_tls_cert", "db_tls_key", "db_tls_ca"):
        if getattr(args, name):
            check_input_file(getattr(args, name), "--" + name.replace("_", "-") + " file")
    if args.max_body < 1:
        raise WebUsageError(f"--max-body must be at least 1 byte, not {args.max_body}")
    if not 0.05 <= args.keep_alive <= 3600:
        raise WebUsageError(f"--keep-alive must be 0.05..3600 seconds, not {args.keep_alive}")
    if not 0.1 <= args.head_timeout <= 3600:
        raise WebUsageError(f"--head-timeout must be 0.1..3600 seconds, not {args.head_timeout}")
    if not 0 <= args.max_streams <= 100_000:
        raise WebUsageError(f"--max-streams must be 0..100000, not {args.max_streams}")
    if not 1 <= args.threads <= 256:
        raise WebUsageError(f"--threads must be 1..256, not {args.threads}")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise WebUsageError(f"zpydb web needs the web extra ({exc.name} is missing): "
                            f"pip install 'zpydb[web]' (make web installs it)") from None


def serve(args):
    """Open the database, run uvicorn until SIGINT/SIGTERM, close the database."""
    import uvicorn

    from .. import access
    from ..database import connect
    from .app import Config, make_app
    from .protocol import bounded_protocol

    host, port = parse_address(args.address)
    tokens = access.Tokens.load(args.tokens) if args.tokens else None
    options = {}
    if args.wait_timeout is not None:
        options["wait_timeout"] = args.wait_timeout
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(args, "db_" + name):
            options[name] = getattr(args, "db_" + name)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.log_requests:
        logging.getLogger("zpydb.web").setLevel(logging.INFO)
    with connect(args.url, read_url=args.read_url, **options) as db:
        _size_connection_pool(db, args.threads, args.max_streams)
        config = Config(tokens=tokens, max_body=args.max_body, threads=args.threads,
                        loopback_only=tokens is None, keepalive=args.keep_alive,
                        max_streams=args.max_streams)
        app = make_app(db, config)
        scheme = "https" if args.tls_cert else "http"
        shown = f"[{host}]" if ":" in host else host
        print(f"zpydb web: serving {db._session.name} on {scheme}://{shown}:{port}/ "
              f"({'tokens from ' + args.tokens if tokens else 'no tokens: loopback only'})",
              file=sys.stderr, flush=True)
        server = _make_server(app.state.streams, uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False,
            ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key, lifespan="off",
            server_header=False, timeout_graceful_shutdown=10,
            http=bounded_protocol(args.head_timeout), ws="none"))
        # uvicorn drains on SIGTERM, then raises the signal again with the handler it
        # found: with this one the database is closed (Data.fs.index written) before exit
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        server.run()
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, ending the event streams first when it shuts down (it would
        otherwise wait ``timeout_graceful_shutdown`` for them, then cut them off)."""

        def __init__(self, streams, config):
            super().__init__(config)
            self.streams = streams

        async def shutdown(self, sockets=None):
            self.streams.close_all()
            await super().shutdown(sockets)

    return Server


def _make_server(streams, config):
    return _server_class()(streams, config)


def _size_connection_pool(db, threads, max_streams):
    """Every worker thread and every open stream holds a ZODB connection (and
    historical ones while it reads past states); past the
    pool size (3) ZODB logs a CRITICAL line per open, which for a web server with
    many streams is normal use, not a leak."""
    size = max(threads + max_streams, 7)
    db._session.db.setPoolSize(size)
    db._session.db.setHistoricalPoolSize(size)  # watchers read past states too


def _exit_on_sigterm(signum, frame):
    raise SystemExit(0)
