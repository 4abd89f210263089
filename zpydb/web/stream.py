"""Server-Sent Events for ``GET /path.json`` with ``Accept: text/event-stream``.

The events are Firebase's::

    event: put
    id: 0400a1b2c3d4e5f6
    data: {"path":"/","data":{...the whole value...}}

    event: patch
    id: 0400a1b2c3d4e5f7
    data: {"path":"/users","data":{"ann/age":31,"bob":null}}

    event: keep-alive
    data: null

A stream starts with a ``put`` of the whole value at ``/``, then sends one
event per change under the path, in commit order: a ``put`` (replace what is
at ``path``, relative to the stream's path; ``null`` removes it) when one
place changed, a ``patch`` (each key of ``data`` is a path relative to
``path``, set to its value) when several did.  Paths only ever go through
dicts: a change inside a list puts the whole list (a list item's index moves
when one before it is removed, so "the item at 3" is not a place to update).
Segments are written as in REST URLs (``encodeURIComponent`` of a str key,
``~`` + JSON for other keys), values as GET returns them.

**Lossless.**  The events come from the change feed (zpydb/feed.py): the
first ``put`` is the value at the point the watcher starts after (one
snapshot), and each change is diffed against the one before, so a client
applying the events in order always holds the value GET would have answered
at that event's ``id``.  Every event that ends a change carries the change's
id (the first ``put``: the id it was read at).  A client that reconnects with
``Last-Event-ID`` (EventSource does it by itself) gets no first ``put``, only
the changes after that id: it already holds the value there.  An id the
database does not know (a typo, a pack removed it) starts over with a full
``put``, which is lossless too.

**Threads.**  Each stream has one thread that iterates its watcher (the
feed's iterator blocks) and hands the events to the event loop, at most
:data:`QUEUED` ahead of what the client took, so a slow client holds back
only its own thread.  Closing the stream (the client went away, the server
shuts down) closes the watcher, which wakes and ends that thread.
"""

import asyncio
import json
import threading
from urllib.parse import quote

from starlette.responses import StreamingResponse

from .. import errors, feed, rest

#: Events made ready ahead of what the client has taken.
QUEUED = 64
#: Seconds between keep-alive events on an idle stream (Firebase sends one about every 30 s).
DEFAULT_KEEPALIVE = 30.0
#: Streams one server keeps open at once (one thread each); more are refused with 503.
DEFAULT_MAX_STREAMS = 1000
_END = object()


class Streams:
    """The open streams of an app: counted against a limit, and ended at shutdown."""

    def __init__(self, limit):
        self.limit = limit
        self._open = set()
        self._lock = threading.Lock()
        self._closing = False

    def add(self, stream, url):
        with self._lock:
            if self._closing:
                raise errors.StorageError(f"{url}: the server is shutting down")
            if len(self._open) >= self.limit:
                raise errors.StorageError(
                    f"{url}: this server already has {self.limit} open streams (--max-streams)")
            self._open.add(stream)

    def discard(self, stream):
        with self._lock:
            self._open.discard(stream)

    def __len__(self):
        return len(self._open)

    def close_all(self):
        """End every stream (server shutdown): each sends its last events and ends."""
        with self._lock:
            self._closing = True
            streams = list(self._open)
        for stream in streams:
            stream.close()


class Stream:
    """One client's stream: a watcher on its own thread, events to the event loop."""

    def __init__(self, service, location, steps, since, keepalive):
        self.service, self.location, self.steps = service, location, steps
        self.since, self.keepalive = since, keepalive
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._slots = threading.Semaphore(QUEUED)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch = None
        self._thread = threading.Thread(target=self._pump, daemon=True,
                                        name=f"zpydb-stream {location.url[:60]}")

    def start(self):
        self._thread.start()

    # -- the worker thread ------------------------------------------------------------------
    def _pump(self):
        try:
            watch = self._open_watch()
            if watch is None:
                return
            tid, previous = watch.starting_point()
            if self.since is None:
                self._put(event("put", {"path": "/", "data": self._json(previous)}, tid))
            for change in watch:
                self._put(self._event(previous, change))
                previous = change["value"]
        except Exception as exc:  # the database was closed, history packed away...
            if not self._stop.is_set():
                self._put(event("cancel", {"error": str(exc)}))
        finally:
            self._close_watch()
            self._hand(_END)

    def _open_watch(self):
        session_db = self.service.db
        since = self.since
        try:
            watch = feed.watch(session_db._executor, self.steps, since=since)
        except errors.BadArgumentError:
            if since is None:
                raise
            self.since = None  # an id this database does not have: start over, whole value
            watch = feed.watch(session_db._executor, self.steps)
        with self._lock:
            if self._stop.is_set():
                watch.close()
                return None
            self._watch = watch
        return watch

    def _close_watch(self):
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()

    def _json(self, value):
        return rest.to_json(value, self.service.context)

    def _event(self, previous, change):
        """The put or patch event that turns ``previous`` into ``change['value']``."""
        places = differences(previous, change["value"])
        if len(places) == 1:
            (steps, value), = places
            return event("put", {"path": path_text(steps), "data": self._json(value)},
                         change["id"])
        common = common_prefix([steps for steps, _ in places])
        data = {path_text(steps[len(common):])[1:]: self._json(value) for steps, value in places}
        return event("patch", {"path": path_text(common), "data": data}, change["id"])

    def _put(self, item):
        """Hand ``item`` to the event loop once the client is less than QUEUED behind."""
        while not self._slots.acquire(timeout=0.5):
            if self._stop.is_set():
                return
        self._hand(item)

    def _hand(self, item):
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self._stop.set()

    # -- the event loop -----------------------------------------------------------------------
    async def events(self):
        """The bytes of the stream: events as they come, keep-alives in between."""
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), self.keepalive)
            except asyncio.TimeoutError:
                yield KEEPALIVE
                continue
            if item is _END:
                return
            self._slots.release()
            yield item

    def close(self):
        """End the stream: the watcher stops, its thread ends, ``events`` returns."""
        self._stop.set()
        self._close_watch()
        self._queue.put_nowait(_END)

    def join(self, timeout):
        self._thread.join(timeout)
        return not self._thread.is_alive()


KEEPALIVE = b"event: keep-alive\ndata: null\n\n"


def event(kind, data, event_id=None):
    """One SSE event as bytes (JSON on one line: a newline would end the data)."""
    text = rest.render(data)
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode("ascii") + b"data: " + text + b"\n\n"


def differences(old, new, steps=()):
    """``[(steps, new value or None)]``: the places whose values differ, found by
    going down through dicts only (anything else that differs is one place)."""
    if not (type(old) is dict and type(new) is dict):
        return [] if steps and feed.same_value(old, new) else [(steps, new)]
    old_keys = {(type(key), key): key for key in old}
    new_keys = {(type(key), key): key for key in new}
    places = []
    for typed, key in new_keys.items():
        if typed not in old_keys:
            places.append((steps + (key,), new[key]))
        else:
            places.extend(differences(old[old_keys[typed]], new[key], steps + (key,)))
    for typed, key in old_keys.items():
        if typed not in new_keys:
            places.append((steps + (key,), None))
    return places if places or steps else [(steps, new)]


def common_prefix(paths):
    first = paths[0]
    length = min(len(path) for path in paths)
    for number in range(length):
        if any(path[number] != first[number] or type(path[number]) is not type(first[number])
               for path in paths):
            return first[:number]
    return first[:length] if all(len(path) > length for path in paths) else first[:length - 1]


def segment_text(key):
    """A dict key as a URL segment (the console's ``segmentOfKey``, rest.py's rules)."""
    if isinstance(key, str) and key and key[0] not in ".~":
        return quote(key, safe="-_.!~*'()")
    document = rest.to_json(key)
    return "~" + quote(json.dumps(document, ensure_ascii=False, separators=(",", ":")),
                       safe="-_.!~*'()")


def path_text(steps):
    return "/" + "/".join(segment_text(key) for key in steps)


class EventStreamResponse(StreamingResponse):
    """The stream's response; the stream is closed however the response ends."""

    def __init__(self, stream, streams):
        self.stream, self.streams = stream, streams
        super().__init__(stream.events(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()
            self.streams.discard(self.stream)
