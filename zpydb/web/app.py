"""The HTTP side of ``zpydb web``: a Starlette app over :class:`zpydb.rest.Service`.

Handlers are ``async``; every call into ZODB runs in a worker thread
(``anyio.to_thread.run_sync`` with one ``CapacityLimiter``, so at most
``threads`` ZODB connections work at once), and the event loop only parses,
checks and answers.  The app keeps no state of its own: the data, the undo
log and the history are the database's.  ``GET /path.json`` with ``Accept:
text/event-stream`` is a stream of Server-Sent Events (zpydb/web/stream.py):
one thread per stream iterates its change feed, apart from the ``threads``
that serve requests.

Routes::

    GET|HEAD|PUT|PATCH|POST|DELETE  /<path>.json   REST (zpydb/rest.py);
                                    GET ?at=WHEN reads the past (db.at)
    POST /.undo, POST /.redo, GET /.history.json    undo, redo, history
    GET /, GET /.console/<file>                     the console (no data in it)

Every error is JSON ``{"error": "..."}`` with its status (400 bad request,
401/403 access, 405 method, 409 conflict/undo, 410 ``?at=`` a state the
storage does not keep (packed away, or before the first change), 412 if-match,
413 body too large, 503 storage unreachable, 500 anything else, logged; 431 for a request
head over 64 KiB comes from protocol.py, before the app).
"""

import logging
import re
import time
from importlib import resources
from urllib.parse import unquote_plus

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import access, errors, rest, timetravel
from . import stream

log = logging.getLogger("zpydb.web")

JSON_TYPE = "application/json; charset=utf-8"
#: The console is static: its own files only, no inline script, nothing from elsewhere.
CONSOLE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                  "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                  "frame-ancestors 'none'")
CONSOLE_FILES = {"index.html": "text/html; charset=utf-8",
                 "console.js": "text/javascript; charset=utf-8",
                 "console.css": "text/css; charset=utf-8"}
REST_METHODS = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
WRITES = {"PUT", "PATCH", "POST", "DELETE"}
HISTORY_DEFAULT, HISTORY_MAX = 50, 1000
#: A number in a parameter or header: ASCII digits only (``"\u00b2".isdigit()`` is True,
#: and int() refuses it; int() takes Arabic-Indic digits that nobody means).
_DIGITS = re.compile(r"[0-9]+")

STATUS = [  # the first class that matches decides
    (errors.PayloadTooLargeError, 413),
    (errors.RequestError, 400),
    (errors.AuthenticationError, 401),
    (errors.ForbiddenError, 403),
    (errors.PreconditionFailedError, 412),
    (errors.ReadOnlyError, 403),
    (errors.ConflictError, 409),
    (errors.UndoError, 409),
    (errors.HistoryNotKeptError, 410),  # ?at= a state packed away or before the first change
    (errors.DisconnectedError, 503),
    (errors.StorageError, 503),
    (errors.DatabaseLockedError, 503),
    (errors.PathError, 400),  # unstorable values, keys that cannot be ordered, bad indexes
    (errors.Error, 400),      # export's refusals (NaN in a value, a file over the limit)
]


class Config:
    """What the app needs besides the database (all checked by the command first)."""

    def __init__(self, tokens=None, max_body=rest.DEFAULT_INLINE_LIMIT, threads=8,
                 loopback_only=True, keepalive=stream.DEFAULT_KEEPALIVE,
                 max_streams=stream.DEFAULT_MAX_STREAMS):
        self.tokens = tokens
        self.keepalive = keepalive
        self.max_streams = max_streams
        self.max_body = max_body
        self.threads = threads
        self.loopback_only = loopback_only


def make_app(db, config):
    """The Starlette app serving ``db``; ``db`` is closed by whoever opened it."""
    service = rest.Service(db, inline_limit=config.max_body)
    limiter = anyio.CapacityLimiter(config.threads)
    for opened in (db._session.opened, db._session.read_opened):
        if opened is not None:  # a thread's connection and a block's private one each
            opened.db.setPoolSize(max(opened.db.getPoolSize(), 2 * config.threads + 2))

    async def work(func, *args, **kwargs):
        return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs), limiter=limiter)

    streams = stream.Streams(config.max_streams)
    handlers = _Handlers(service, config, work, streams)
    routes = [
        Route("/", handlers.console_page, methods=["GET"]),
        Route("/.console/{name}", handlers.console_file, methods=["GET"]),
        Route("/.undo", handlers.undo, methods=["POST"]),
        Route("/.redo", handlers.redo, methods=["POST"]),
        Route("/.history.json", handlers.history, methods=["GET"]),
        Route("/{rest:path}", handlers.rest, methods=REST_METHODS),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: _http_error, errors.Error: _zpydb_error, Exception: _crash})
    app.add_middleware(_Guard, config=config)
    app.state.streams = streams  # the command ends them when the server shuts down
    return app


class _Handlers:
    def __init__(self, service, config, work, streams):
        self.service, self.config, self.work = service, config, work
        self.streams = streams

    def identify(self, request):
        """The request's Token, or None when the server has no tokens file."""
        if self.config.tokens is None:
            return None
        secret = request.query_params.get("auth")
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise errors.AuthenticationError(
                    "the Authorization header must be 'Bearer TOKEN'")
            secret = value.strip()
        token = self.config.tokens.identify(secret)
        request.state.user = token.name
        return token

    async def rest(self, request):
        allowed = _allowed_elsewhere(request.url.path)
        if allowed:
            raise HTTPException(405, headers={"Allow": allowed})
        location = rest.parse_location(request.scope.get("raw_path") or
                                       request.url.path.encode("utf-8"))
        token = self.identify(request)
        options = _Options(request, location, known=("shallow", "at"))
        if request.method == "GET" and _wants_events(request):
            access.require_read(token, location)
            if options.at is not None:
                raise errors.RequestError(location.url, "at is for JSON reads of the past; "
                                                        "a stream follows the present")
            return await self.stream(request, location)
        if request.method in ("GET", "HEAD"):
            access.require_read(token, location)
            document, tag = await self.work(self.service.get, location, options.shallow,
                                            options.want_etag, options.at)
            return _json(document, options, tag, head=request.method == "HEAD")
        if request.method != "PATCH":
            access.require_write(token, location)  # before reading any body
        if_match = request.headers.get("if-match")
        if if_match is not None or options.want_etag:
            # a 412 answers the current value and ETag, and an ETag is a hash of the
            # value: a conditional write reads, so it needs read as well as write
            access.require_read(token, location, "if-match and X-Firebase-ETag show the "
                                                 "value there (or its hash)")
        body = await _body(request, self.config.max_body, location)
        if request.method == "PATCH" and token is not None:
            _require_patch_children(token, location, body)
        user = token.name if token is not None else None
        try:
            answer, tag = await self.work(
                self.service.write, request.method, location, body, if_match=if_match,
                user=user, want_etag=options.want_etag)
        except errors.PreconditionFailedError as exc:
            return _json(exc.current, options, exc.etag, status=412)
        return _json(answer, options, tag)

    async def stream(self, request, location):
        """Server-Sent Events of ``location`` (stream.py); ``Last-Event-ID`` resumes."""
        options = _Options(request, location)
        if options.print is not None:
            raise errors.RequestError(location.url, "print is for JSON answers, not streams")
        steps = await self.work(self.service.steps, location)
        since = request.headers.get("last-event-id", "").strip() or None
        feed = stream.Stream(self.service, location, steps, since, self.config.keepalive)
        self.streams.add(feed, location.url)
        feed.start()
        return stream.EventStreamResponse(feed, self.streams)

    async def undo(self, request):
        return await self._undo_redo(request, self.service.undo, "undone")

    async def redo(self, request):
        return await self._undo_redo(request, self.service.redo, "redone")

    async def _undo_redo(self, request, call, word):
        token = self.identify(request)
        access.require_write(token, rest.Location("/ (undo and redo change anything)", ()))
        options = _Options(request)
        note = await self.work(call, token.name if token is not None else None)
        return _json({word: note}, options)

    async def history(self, request):
        token = self.identify(request)
        access.require_read(token, rest.Location("/ (the history shows every change)", ()))
        text = request.query_params.get("n", str(HISTORY_DEFAULT))
        if not _DIGITS.fullmatch(text) or not 0 <= int(text) <= HISTORY_MAX:
            raise errors.RequestError("/.history.json",
                                      f"n must be a whole number 0..{HISTORY_MAX}, not {text[:20]!r}")
        options = _Options(request, known=("n",))
        entries = await self.work(self.service.history, int(text))
        return _json(entries, options)

    async def console_page(self, request):
        return await self._console("index.html")

    async def console_file(self, request):
        return await self._console(request.path_params["name"])

    async def _console(self, name):
        if name not in CONSOLE_FILES:
            raise HTTPException(404)
        content = resources.files("zpydb.web").joinpath("console", name).read_bytes()
        return Response(content, media_type=CONSOLE_FILES[name],
                        headers={"Content-Security-Policy": CONSOLE_POLICY,
                                 "Cache-Control": "no-cache"})


def _wants_events(request):
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "text/event-stream"
               for part in accept.split(","))


def _allowed_elsewhere(path):
    """The methods of the server's own routes, for a path that is one of them (405)."""
    if path in ("/", "/.history.json") or path.startswith("/.console/"):
        return "GET, HEAD"
    if path in ("/.undo", "/.redo"):
        return "POST"
    return None


def _require_patch_children(token, location, body):
    """A PATCH above a token's write prefix is allowed when every child it sets is below one."""
    if token.may_write(location):
        return
    _, changes = rest.parse_body(body, location)
    if not isinstance(changes, dict) or not changes:
        raise errors.ForbiddenError(f"token {token.name!r} may not write {location.url}")
    for key in changes:
        access.require_write(token, rest.patch_target(location, key))


class _Options:
    """The query parameters and headers that shape an answer.

    ``known``: the parameters the route takes besides auth and print (a typo
    such as ``?shalow=true`` is a 400, not silently a full read).
    """

    def __init__(self, request, location=None, known=()):
        params = request.query_params
        known = {"auth", "print", *known}
        unknown = set(params) - known
        if unknown:
            raise errors.RequestError(request.url.path, f"unknown query parameter(s): "
                                      f"{', '.join(sorted(unknown))[:100]} (known here: "
                                      f"{', '.join(sorted(known))})")
        self.print = params.get("print")
        if self.print not in (None, "pretty", "silent"):
            raise errors.RequestError(request.url.path, f"print must be pretty or silent, "
                                                        f"not {self.print[:40]!r}")
        self.shallow = params.get("shallow")
        if self.shallow is not None and (location is None or request.method not in ("GET", "HEAD")):
            raise errors.RequestError(request.url.path, "shallow is for GET only")
        self.at = _when(request, params.get("at"))
        self.want_etag = request.headers.get("x-firebase-etag", "").lower() == "true"


def _when(request, text):
    """``?at=``: what ``db.at`` takes (an id, an ISO date/time, a POSIX timestamp), GET only."""
    if text is None:
        return None
    if request.method not in ("GET", "HEAD"):
        raise errors.RequestError(request.url.path, "at is for GET only: the past is read-only")
    try:
        return timetravel.parse_when(text)
    except ValueError:
        raise errors.RequestError(
            request.url.path, f"at must be an id from /.history.json (16 hex digits), an ISO "
                              f"date/time such as 2024-05-01T12:00:00 (naive: the server's "
                              f"local time) or a POSIX timestamp, not {text[:40]!r}") from None


async def _body(request, limit, location):
    """The request body, refused with 413 past ``limit`` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > limit:
        raise errors.PayloadTooLargeError(location.url, f"the body has {int(declared):,} "
                                          f"bytes; this server takes at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLargeError(location.url, f"the body is over {limit:,} "
                                              f"bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(document, options, tag=None, status=200, head=False):
    headers = {"Cache-Control": "no-store"}
    if tag is not None:
        headers["ETag"] = tag
    if options.print == "silent" and status < 300:
        return Response(status_code=204, headers=headers)
    content = rest.render(document, pretty=options.print == "pretty")
    if head:
        headers["Content-Length"] = str(len(content))
        return Response(b"", status_code=status, media_type=JSON_TYPE, headers=headers)
    return Response(content, status_code=status, media_type=JSON_TYPE, headers=headers)


def _error(status, message, headers=None):
    body = rest.render({"error": message})
    return Response(body, status_code=status, media_type=JSON_TYPE,
                    headers={"Cache-Control": "no-store", **(headers or {})})


def status_of(exc):
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


async def _zpydb_error(request, exc):
    status = status_of(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="zpydb"'} if status == 401 else None
    return _error(status, str(exc), headers)


async def _http_error(request, exc):
    messages = {404: "no such page: REST paths end in .json, like /users/ann.json",
                405: f"{request.method} is not allowed on {request.url.path}"}
    return _error(exc.status_code, messages.get(exc.status_code, exc.detail), exc.headers)


async def _crash(request, exc):
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")


class _Guard:
    """Every request: the Host (loopback servers) and Origin checks, nosniff, the log line.

    Without tokens the server trusts whoever reaches it, so it must only be
    reached from this machine: a web page in a local browser could still send
    requests to it.  So a loopback server answers only requests whose Host is
    a loopback name (DNS rebinding gets "evil.example" there), and any server
    refuses a write whose Origin is another site's (a cross-site form POST).
    """

    def __init__(self, app, config):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = dict(message, headers=list(message.get("headers", [])) +
                               [(b"x-content-type-options", b"nosniff")])
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_wrapped)
        else:
            await self.app(scope, receive, send_wrapped)
        if log.isEnabledFor(logging.INFO):
            user = (scope.get("state") or {}).get("user", "-")
            log.info("%s %s %s %s %.1f ms", scope["method"], _redacted(scope), status.get("code"),
                     user, (time.perf_counter() - started) * 1000)

    def _refusal(self, scope, headers):
        host = headers.get("host", "")
        if self.config.loopback_only and not _loopback_name(_host_name(host)):
            return _error(403, f"this server has no tokens and answers only requests to "
                               f"127.0.0.1, localhost or [::1], not Host {host[:80]!r}")
        origin = headers.get("origin")
        if origin is not None and scope["method"] in WRITES:
            scheme = "https" if scope.get("scheme") == "https" else "http"
            if origin != f"{scheme}://{host}":
                return _error(403, f"a write from another site (Origin {origin[:80]!r}) is "
                                   f"refused; the console at {scheme}://{host}/ may write")
        return None


def _loopback_name(name):
    """``localhost``, ``127.x.y.z`` or ``[::1]``: a name only this machine answers to."""
    from . import is_loopback
    return is_loopback(name[1:-1] if name.startswith("[") and name.endswith("]") else name)


def _host_name(host):
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


def _redacted(scope):
    """The path and query for the log, with ``auth=`` values hidden.

    A parameter is the token when its name *decodes* to ``auth`` (Starlette
    percent-decodes names: ``%61uth=SECRET`` authenticates), so names are
    compared decoded, the way the request was read.
    """
    path = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    if not query:
        return path
    parts = [(f"{part.partition('=')[0]}=***" if _is_auth(part) else part)
             for part in query.split("&")]
    return f"{path}?{'&'.join(parts)}"


def _is_auth(part):
    return unquote_plus(part.partition("=")[0], errors="replace") == "auth"
