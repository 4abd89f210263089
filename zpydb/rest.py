"""What a ``zpydb web`` request means, apart from HTTP: locations, reads, writes, ETags.

The REST API follows the Firebase Realtime Database REST API: a URL path
ending in ``.json`` names a place in the tree, ``GET`` reads it, ``PUT``
replaces it, ``PATCH`` updates children, ``POST`` appends (to a list) or adds a
time-ordered unique key (to a dict), ``DELETE`` removes it.  This module knows
nothing of HTTP (zpydb/web.py does); it turns a location and a body into ops.py
calls inside one transaction.

**Locations.**  ``/users/ann.json`` is ``db['users']['ann']``: the raw URL path
without ``.json``, split at ``/`` *before* percent-decoding (so ``%2F`` stays
inside a key), each segment percent-decoded as UTF-8.  Under a dict a segment
is the str key it spells; under a list it is an index, ``0`` to ``len - 1``.
Any other key is written ``~`` + JSON (export.py's tags): ``~5`` the int 5,
``~1.5``, ``~true``, ``~{"$bytes":"AAE="}``, ``~{"$tuple":[1,"a"]}``, and the
str keys that a plain segment cannot spell: ``~""`` (empty), ``~".x"`` (a
leading dot: ``.`` names the server's own routes, ``/.undo``, and proxies
rewrite ``.``/``..``), ``~"~x"`` (a leading tilde).  Empty segments and
segments starting with ``.`` are refused, so ``/a/../b.json`` is an error, not
``b``.

**Values** travel as export.py writes them (``{"$bytes": ...}``,
``{"$tuple": [...]}``, ``{"$dict": [[key, value], ...]}`` for dicts whose keys
are not all str...) and are read with import's strict rules (no NaN, no
Infinity).  As in Firebase, ``null`` means "nothing": ``GET`` of a missing
place answers ``null``, and writing ``null`` (PUT, or a PATCH child) deletes.

**ETags** are a hash of the JSON form of the value (files count by their
sha256), so equal data has equal ETags on every server and backend, and
``null`` has one too.  A write with ``if-match`` reads the value in the same
transaction, registered as read (transactions.py ``Block``): a concurrent
change makes the commit conflict and the retry sees the new value, so the
check and the write are one atomic step.
"""

import base64
import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from . import export, nodes, ops
from . import undo as _undo
from .errors import Error, NotAContainerError, PreconditionFailedError, RequestError

#: What a segment under a list must look like (no sign, no leading zeros).
_INDEX = re.compile(r"0|[1-9][0-9]*")
#: ``/a/b.json`` -> ``/a/b``; the REST API's paths all end in it.
SUFFIX = ".json"
#: export.py's context for values sent back: files inline up to this many bytes.
DEFAULT_INLINE_LIMIT = 16 * 1024 * 1024
#: Marks a dict or list in a ``?shallow=values`` listing (a user dict with one
#: ``$`` key is written as ``{"$dict": ...}`` by export.encode, so none looks like it).
SHALLOW_TAG = "$shallow"

_RAW = object()  # a segment whose type its parent decides


@dataclass(frozen=True)
class Segment:
    """One step of a location: its text and, for a ``~`` segment, the typed key."""

    text: str
    key: object = _RAW

    @property
    def typed(self):
        return self.key is not _RAW

    def dict_key(self):
        return self.key if self.typed else self.text

    def __str__(self):
        return self.text


@dataclass(frozen=True)
class Location:
    """A place in the tree as the request named it: ``url`` for notes and messages."""

    url: str
    segments: tuple

    def child(self, relative):
        """``self`` extended by a PATCH key like ``"b/c"`` (same segment rules)."""
        extra = parse_segments(relative, f"{self.url} + {relative!r}")
        return Location(self.joined(relative), self.segments + extra)

    def joined(self, relative):
        """The URL of ``relative`` (still encoded) below this location."""
        base = self.url[:-len(SUFFIX)] if self.url.endswith(SUFFIX) else self.url
        return f"{base.rstrip('/')}/{relative}{SUFFIX}"

    def prefix_of(self, other):
        return other.segments[:len(self.segments)] == self.segments


def parse_location(raw_path):
    """A raw URL path (bytes or str, still percent-encoded) ending in ``.json`` -> Location.

    ``/.json`` is the root.  RequestError for a path without ``.json`` or a bad segment.
    """
    text = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else raw_path
    shown = text if len(text) <= 200 else text[:197] + "..."
    if not text.endswith(SUFFIX) or not text.startswith("/"):
        raise RequestError(shown, "a REST path ends in .json, like /users/ann.json "
                                  "(/.json is the whole database)")
    inner = text[1:-len(SUFFIX)]
    return Location(shown, parse_segments(inner, shown) if inner else ())


def parse_segments(inner, shown):
    """``a/b%2Fc/~5`` -> Segments (see the module docstring)."""
    parts = inner.split("/")
    if len(parts) > nodes.MAX_DEPTH:
        raise RequestError(shown, f"the path has {len(parts)} segments; zpydb stores at most "
                                  f"{nodes.MAX_DEPTH} levels")
    return tuple(_segment(part, shown) for part in parts)


def _segment(part, shown):
    try:
        text = unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(shown, f"the segment {part[:60]!r} is not UTF-8 once "
                                  f"percent-decoded") from None
    if not text:
        raise RequestError(shown, 'empty path segment (//); the empty key is written ~""')
    if text.startswith("."):
        raise RequestError(shown, f"a segment cannot start with '.' ({text[:40]!r}): such "
                                  f"names are the server's own (/.undo); write the key as "
                                  f"~{json.dumps(text)[:60]}")
    if not text.startswith("~"):
        return Segment(text)
    try:
        document = export.parse_json(text[1:], outcome="nothing was done")
        key = export.decode_document(document, {}, outcome="nothing was done")
    except Error as exc:
        raise RequestError(shown, f"after ~ comes a key as JSON: {exc}") from None
    key = nodes.exact_key(key) if not isinstance(key, (list, dict)) else None
    if key is None:
        raise RequestError(shown, f"{text[:60]!r} is not a key: after ~ comes a JSON "
                                  f"str, number, true/false or a $bytes/$tuple tag")
    return Segment(text, key)


# -- walking ---------------------------------------------------------------------------

@dataclass
class Found:
    """Where a location leads: its typed steps, the node (MISSING if nothing is there),
    how many steps exist, and the step below a scalar if the walk hit one."""

    steps: tuple
    node: object
    existing: int
    scalar_at: int = None

    @property
    def exists(self):
        return self.node is not nodes.MISSING


def walk(root, location, reads=ops.UNTRACKED):
    """Follow ``location`` from the data root, telling ``reads`` what was looked at."""
    node, steps, existing, scalar_at = root, [], 0, None
    for number, segment in enumerate(location.segments):
        if node is nodes.MISSING:
            steps.append(segment.dict_key())
            continue
        if nodes.is_dict_node(node):
            key = segment.dict_key()
            steps.append(key)
            node = _dict_child(node, key, reads)
        elif nodes.is_list_node(node):
            index = _list_index(segment, location, ops.format_path(steps))
            steps.append(index)
            reads.at(node, index)
            node = node[index] if index < len(node) else nodes.MISSING
        else:
            scalar_at = number
            steps.append(segment.dict_key())
            node = nodes.MISSING
            continue
        if node is not nodes.MISSING:
            existing += 1
    return Found(tuple(steps), node, existing, scalar_at)


def _dict_child(tree, key, reads):
    value = nodes.find(tree, key)
    exact = nodes.exact_key(key)
    try:
        reads.at(tree, exact)  # where the key is, or would be (an if-match on "nothing")
    except TypeError:  # a key of another type than the tree's: it can never be there
        reads.at(tree)
    return value


def _list_index(segment, location, parent):
    if segment.typed:
        index = segment.key
        if type(index) is not int or index < 0:
            raise RequestError(location.url, f"{parent} is a list: its items are numbered "
                                             f"0, 1, ..., not {segment.text[:40]!r}")
        return index
    if not _INDEX.fullmatch(segment.text):
        raise RequestError(location.url, f"{parent} is a list: its items are numbered 0, 1, "
                                         f"..., not {segment.text[:40]!r}")
    return int(segment.text)


def _require_container(found, location):
    """A write below a scalar is refused (Firebase would replace the scalar: zpydb says so)."""
    if found.scalar_at is not None:
        parent = ops.format_path(found.steps[:found.scalar_at])
        raise NotAContainerError(parent, f"it holds a value that is not a dict or list, so "
                                         f"{location.url} cannot be written below it; PUT "
                                         f"the parent instead")


# -- JSON form and ETags ------------------------------------------------------------------

def to_json(value, context=None):
    """A plain value -> JSON-ready (export.py's tags)."""
    return export.encode(value, {} if context is None else dict(context))


def render(document, pretty=False):
    """JSON bytes of a JSON-ready document (UTF-8; lone surrogates as ``\\ud800`` escapes)."""
    indent = 2 if pretty else None
    separators = None if pretty else (",", ":")
    try:
        text = json.dumps(document, ensure_ascii=False, allow_nan=False, indent=indent,
                          separators=separators)
    except ValueError:  # NaN or Infinity: name where it is
        export.check_json_safe(document)
        raise
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a str with a lone surrogate: \\u escapes are valid JSON
        return json.dumps(document, ensure_ascii=True, allow_nan=False, indent=indent,
                          separators=separators).encode("ascii")


def etag(value):
    """The ETag of a plain value: a quoted hash of its JSON form (files by their sha256)."""
    document = export.encode(value, {"file_content": False})
    canonical = json.dumps(document, ensure_ascii=True, allow_nan=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("ascii")).digest()[:18]
    return '"' + base64.urlsafe_b64encode(digest).decode("ascii") + '"'


def matches(expected, current, exists):
    """``if-match`` semantics: ``*`` is "something is there"; ETags compare with or
    without their quotes (Firebase's are sent bare); a list of them matches any."""
    candidates = [part.strip() for part in expected.split(",")]
    for candidate in candidates:
        if candidate == "*":
            if exists:
                return True
            continue
        if candidate.startswith("W/"):  # a weak ETag never matches for a write (RFC 9110)
            continue
        if candidate.strip('"') == current.strip('"'):
            return True
    return False


def _check_expected(found, location, expected, reads):
    """Raise PreconditionFailedError unless ``expected`` matches the value found."""
    if expected is None:
        return
    if found.exists:
        reads.whole(found.node)
    value = nodes.to_plain(found.node) if found.exists else None
    current = etag(value)
    if not matches(expected, current, found.exists):
        raise PreconditionFailedError(location.url, current, _json_or_none(value))


def _json_or_none(value):
    try:
        return to_json(value, {"file_content": False})
    except Exception:  # a body is a courtesy here; the ETag is what matters
        return None


# -- reading -----------------------------------------------------------------------------

def read(root, location, reads=ops.UNTRACKED):
    """The plain value at ``location``, None where nothing is."""
    found = walk(root, location, reads)
    if not found.exists:
        return None
    reads.whole(found.node)
    return nodes.to_plain(found.node)


SHALLOW_MODES = ("true", "values")


def shallow(root, location, mode, reads=ops.UNTRACKED):
    """``?shallow=true`` (Firebase): a dict's or list's children each as ``true``
    (a list's under the keys "0", "1", ...), a scalar as itself, None where nothing is.

    ``?shallow=values`` (zpydb; the console's lazy tree): the value with every
    child dict or list replaced by ``{"$shallow": {"type": "dict"}}`` /
    ``{"$shallow": {"type": "list", "size": n}}`` and files by their metadata,
    so a level is one small read however big the levels below are.
    """
    found = walk(root, location, reads)
    node = found.node
    if not found.exists:
        return None
    if not nodes.is_container(node):
        reads.whole(node)
        return to_json(nodes.to_plain(node), {"file_content": False})
    reads.at(node)
    if mode == "true":
        if nodes.is_dict_node(node):
            return to_json({key: True for key in node.keys()})
        return {str(index): True for index in range(len(node))}
    if nodes.is_dict_node(node):
        return _listing([(key, _summary(child)) for key, child in node.items()])
    return [_summary(child) for child in node]


def _summary(child):
    """One child in a ``?shallow=values`` listing, JSON-ready."""
    if nodes.is_dict_node(child):
        return {SHALLOW_TAG: {"type": "dict"}}
    if nodes.is_list_node(child):
        return {SHALLOW_TAG: {"type": "list", "size": len(child)}}
    return to_json(nodes.to_plain(child), {"file_content": False})


def _listing(pairs):
    """A dict of JSON-ready children as export.encode writes a dict: an object when
    every key is a str (and it cannot pass for a tag), else ``{"$dict": [[k, v]...]}``."""
    keys = [key for key, _ in pairs]
    if all(isinstance(key, str) for key in keys) and not (
            len(keys) == 1 and keys[0].startswith("$")):
        return dict(pairs)
    return {"$dict": [[to_json(key), value] for key, value in pairs]}


# -- writing -----------------------------------------------------------------------------

def put(root, location, value, reads=ops.UNTRACKED, expected=None):
    """Replace the value at ``location`` (None deletes it), creating missing dicts above."""
    found = walk(root, location, reads if expected is not None else ops.UNTRACKED)
    _check_expected(found, location, expected, reads)
    _put_found(root, location, found, value)


def _put_found(root, location, found, value):
    if value is None:
        _delete_found(root, location, found)
        return
    _require_container(found, location)
    if not location.segments:
        _replace_root(root, value, location)
        return
    if found.existing == len(found.steps) - 1 or found.exists:
        ops.set_item(root, found.steps, value)
        return
    # missing dicts above: store one nested value at the first missing step
    first_missing = found.existing + 1
    for key in reversed(found.steps[first_missing:]):
        value = {key: value}
    ops.set_item(root, found.steps[:first_missing], value)


def _replace_root(root, value, location):
    if not isinstance(value, dict):
        raise RequestError(location.url, f"the whole database (/.json) is a dict: PUT an "
                                         f"object there, not {nodes.describe_type(value)}")
    root.clear()
    for key, child in value.items():
        ops.set_item(root, (key,), child)


def delete(root, location, reads=ops.UNTRACKED, expected=None):
    """Remove the value at ``location`` (nothing there: nothing to do)."""
    found = walk(root, location, reads if expected is not None else ops.UNTRACKED)
    _check_expected(found, location, expected, reads)
    _delete_found(root, location, found)


def _delete_found(root, location, found):
    if not location.segments:
        root.clear()
    elif found.exists:
        ops.del_item(root, found.steps)


def patch(root, location, changes, reads=ops.UNTRACKED, expected=None):
    """Update children of ``location``: each key of ``changes`` is a relative path
    (``"b"``, ``"b/c"``; a non-str key is one typed step), each value is PUT there."""
    if not isinstance(changes, dict):
        raise RequestError(location.url, f"PATCH needs a JSON object of children to "
                                         f"update, not {nodes.describe_type(changes)}")
    found = walk(root, location, reads if expected is not None else ops.UNTRACKED)
    _check_expected(found, location, expected, reads)
    _require_container(found, location)
    if found.exists and not nodes.is_container(found.node):
        raise NotAContainerError(ops.format_path(found.steps),
                                 f"it is not a dict or list, so PATCH has no children to "
                                 f"update; PUT replaces it")
    targets = [(patch_target(location, key), value) for key, value in changes.items()]
    _refuse_overlaps(location, [target for target, _ in targets])
    for target, value in targets:
        _put_found(root, target, walk(root, target), value)


def patch_target(location, key):
    """The Location a PATCH body's key names below ``location`` (access.py checks it too)."""
    if isinstance(key, str):
        return location.child(key)
    segment = Segment("~" + json.dumps(export.encode(key)), nodes.exact_key(key))
    return Location(location.joined(segment.text), location.segments + (segment,))


def _refuse_overlaps(location, targets):
    ordered = sorted(targets, key=lambda target: len(target.segments))
    for number, target in enumerate(ordered):
        for later in ordered[number + 1:]:
            if target.prefix_of(later):
                raise RequestError(location.url, f"PATCH paths {target.url} and {later.url} "
                                                 f"overlap: send one of them")


def post(root, location, value, reads=ops.UNTRACKED, expected=None, new_key=None):
    """Append to a list (the new index) or add a unique time-ordered key to a dict
    (that key); nothing there: a new dict with that key.  Returns the new name."""
    found = walk(root, location, reads if expected is not None else ops.UNTRACKED)
    _check_expected(found, location, expected, reads)
    _require_container(found, location)
    node = found.node
    if found.exists and nodes.is_list_node(node):
        reads.register(node)  # the index we answer must be the one the item got
        index = len(node)
        ops.call_writer(root, found.steps, "append", [value], {})
        return index
    if found.exists and not nodes.is_dict_node(node):
        raise NotAContainerError(ops.format_path(found.steps),
                                 "POST appends to a list or adds a key to a dict; this is "
                                 "neither")
    key = (new_key or push_id)()
    child = Location(location.joined(key), location.segments + (Segment(key),))
    _put_found(root, child, walk(root, child), value)
    return key


# -- unique keys ----------------------------------------------------------------------------

#: Firebase's push-ID alphabet: in ASCII order, so keys sort by time as strings.
PUSH_CHARS = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


class PushIds:
    """20-character keys that sort in creation order (Firebase's push IDs).

    8 characters of the time in milliseconds, then 12 random ones; two keys
    made in the same millisecond by this process get the previous random
    part plus one, so they still sort in order (past the largest random part,
    the next millisecond's time).  A clock that steps back
    keeps the last time.  Keys made by different processes in the same
    millisecond are unique (72 random bits) but not ordered between them.
    """

    def __init__(self, clock=time.time, rng=None):
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        self._last_time = -1
        self._last_random = [0] * 12

    def __call__(self):
        with self._lock:
            now = max(int(self._clock() * 1000), self._last_time)
            if now == self._last_time and not self._increment():
                now += 1  # 64**12 keys in one millisecond: borrow the next one
            if now != self._last_time:
                self._last_random = [self._rng.randrange(64) for _ in range(12)]
            self._last_time = now
            stamp = []
            for _ in range(8):
                stamp.append(PUSH_CHARS[now % 64])
                now //= 64
            return "".join(reversed(stamp)) + "".join(PUSH_CHARS[i] for i in self._last_random)

    def _increment(self):
        """The random part plus one; False (unchanged) when it is at its largest."""
        for position in range(11, -1, -1):
            if self._last_random[position] < 63:
                self._last_random[position] += 1
                for later in range(position + 1, 12):
                    self._last_random[later] = 0
                return True
        return False


push_id = PushIds()


# -- request bodies -----------------------------------------------------------------------

def parse_body(body, location):
    """Request body bytes -> ``(JSON document, plain value)`` (export's tags decoded in
    the value), or RequestError.

    UTF-8 only (a BOM or UTF-16 is refused, as RFC 8259 says for JSON on the
    wire), strict JSON (no NaN/Infinity/1e400), at most MAX_DEPTH levels.
    """
    if not body.strip():
        raise RequestError(location.url, "the request has no body: send JSON (null deletes)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(location.url, f"the body is not UTF-8 ({exc.reason} at byte "
                                         f"{exc.start}); JSON on the wire is UTF-8") from None
    if text.startswith("\ufeff"):
        raise RequestError(location.url, "the body starts with a byte order mark; send "
                                         "UTF-8 JSON without one")
    try:
        document = export.parse_json(text, outcome="nothing was written")
        return document, export.decode_document(document, {}, outcome="nothing was written")
    except RequestError:
        raise
    except Error as exc:
        raise RequestError(location.url, str(exc)) from None


# -- the service: one call per request, blocking (web.py runs it in a worker thread) --------

METHODS = ("PUT", "PATCH", "POST", "DELETE")


class Service:
    """What each request does to ``db``; every method blocks and holds no state.

    Reads run as one read transaction (``db``'s executor: fresh from the
    server, or the read replica).  Writes run in ``db.atomic`` with the note
    ``"PUT /users/ann.json"`` and the token's name as user: one durable,
    undoable transaction, re-run on a conflict until ``retry_timeout``.
    """

    def __init__(self, db, inline_limit=DEFAULT_INLINE_LIMIT, new_key=None):
        self.db = db
        self.context = {"inline_limit": inline_limit}
        self.new_key = new_key or push_id

    def _read(self, op):
        return self.db._executor.read(op)

    def get(self, location, shallow_mode=None, want_etag=False, when=None):
        """``(JSON-ready document, ETag or None)`` for a GET; ``when`` (``?at=``, what
        ``db.at`` takes) reads the state as it was then, on a snapshot released at once
        (a historical connection is cheap, and a request must not pin one)."""
        if shallow_mode is not None and shallow_mode not in SHALLOW_MODES:
            raise RequestError(location.url, f"shallow must be one of {', '.join(SHALLOW_MODES)}"
                                             f", not {shallow_mode[:40]!r}")

        def op(root, reads):
            value = read(root, location, reads) if shallow_mode is None or want_etag else None
            listing = shallow(root, location, shallow_mode, reads) if shallow_mode else None
            return value, listing

        if when is None:
            value, listing = self._read(op)
        else:
            with self.db.at(when) as past:
                value, listing = past._executor.read(op)
        document = listing if shallow_mode else to_json(value, self.context)
        return document, (etag(value) if want_etag else None)

    def write(self, method, location, body=None, *, if_match=None, user=None, want_etag=False):
        """``(JSON-ready answer, new ETag or None)`` for PUT, PATCH, POST or DELETE."""
        document = value = None
        if method != "DELETE":
            document, value = parse_body(body, location)
        new_key = self.new_key() if method == "POST" else None  # the same key on every retry
        result = {}

        def op(root, reads):
            if method == "PUT":
                put(root, location, value, reads, if_match)
            elif method == "PATCH":
                patch(root, location, value, reads, if_match)
            elif method == "POST":
                result["name"] = post(root, location, value, reads, if_match,
                                      new_key=lambda: new_key)
            else:
                delete(root, location, reads, if_match)
            if want_etag:
                result["etag"] = etag(read(root, location))

        note = f"{method} {location.url}"
        self.db.atomic(lambda t: t._executor.write(op, lambda: note), note=note, user=user)
        answer = {"name": result["name"]} if method == "POST" else document
        return answer, result.get("etag")

    def steps(self, location):
        """The typed steps ``location`` names now (a list's items by int): what a stream
        of it watches."""
        return self._read(lambda root, reads: walk(root, location, reads).steps)

    def current_etag(self, location):
        return etag(self._read(lambda root, reads: read(root, location, reads)))

    def undo(self, user=None):
        """The note of the change undone (``undo: PUT /x.json``)."""
        return self.db._executor.database(lambda session: _undo.undo(session, user=user),
                                          _undo.refusal("undo"))

    def redo(self, user=None):
        """The note of the change redone (``redo: PUT /x.json``)."""
        return self.db._executor.database(lambda session: _undo.redo(session, user=user),
                                          _undo.refusal("redo"))

    def history(self, n):
        return [dict(entry, time=entry["time"].isoformat(timespec="milliseconds"))
                for entry in self.db.history(n)]
