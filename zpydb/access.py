"""Who may read and write what through ``zpydb web``: the tokens file.

A small version of Firebase's security rules.  The file is JSON::

    {"tokens": [
      {"name": "admin", "secret": "<at least 16 characters>", "read": ["/"], "write": ["/"]},
      {"name": "ann",   "secret": "...", "read": ["/users/ann", "/public"],
                                         "write": ["/users/ann"]}
    ]}

* ``name``: recorded as the user of every change the token makes (``db.history()``);
* ``secret``: what a client sends, as ``Authorization: Bearer SECRET`` or ``?auth=SECRET``;
* ``read`` / ``write``: path prefixes, written like REST paths without ``.json``
  (``/`` is everything).  A token reads a location when one of its read prefixes
  is the location or above it; the same for writes.  A write does not imply
  a read.  Undo and redo change anything, so they need write access to ``/``;
  the history shows every change's note, so it needs read access to ``/``.

Secrets are compared in constant time: both sides are hashed (SHA-256) and
the digests compared with ``hmac.compare_digest`` against *every* entry, so
neither the length nor the position of a match shows in the timing.
"""

import hashlib
import hmac
import json
from dataclasses import dataclass

from . import rest
from .errors import AuthenticationError, Error, ForbiddenError

MIN_SECRET_LENGTH = 16
_FIELDS = {"name", "secret", "read", "write"}


@dataclass(frozen=True)
class Token:
    """One entry of the tokens file (``digest`` is the SHA-256 of the secret)."""

    name: str
    digest: bytes
    read: tuple
    write: tuple

    def may_read(self, location):
        return _covered(location, self.read)

    def may_write(self, location):
        return _covered(location, self.write)


def _covered(location, prefixes):
    keys = _keys(location.segments)
    return any(keys[:len(prefix)] == prefix for prefix in prefixes)


def _keys(segments):
    """What a segment means under a dict: equal keys name the same place.

    ``/l/5`` and ``/l/~5`` may name the same list item and still compare
    unequal here; that only ever refuses a request, never lets one through.
    """
    return tuple(segment.dict_key() for segment in segments)


class Tokens:
    """The parsed tokens file: :meth:`identify` a request's secret, then check rights."""

    def __init__(self, tokens):
        self.tokens = tuple(tokens)

    @classmethod
    def load(cls, path):
        """Read and check the whole file; Error naming the file and the entry otherwise."""
        try:
            with open(path, encoding="utf-8") as stream:
                document = json.load(stream, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise Error(f"tokens file {path}: the key {exc} is given twice in one object "
                        f"(JSON would keep the last one silently)") from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise Error(f"tokens file {path}: cannot read it as JSON ({exc})") from None
        return cls(parse(document, path))

    def identify(self, secret):
        """The Token whose secret this is; AuthenticationError for none or an unknown one."""
        if not secret:
            raise AuthenticationError(
                "this server needs a token: send 'Authorization: Bearer TOKEN' or ?auth=TOKEN")
        digest = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
        found = None
        for token in self.tokens:  # every entry, always: the time says nothing
            if hmac.compare_digest(digest, token.digest):
                found = token
        if found is None:
            raise AuthenticationError("unknown token (check the secret; tokens are listed "
                                      "in the server's --tokens file)")
        return found


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs):
    """json's object hook that refuses a key given twice (a second "write" must not win)."""
    document = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(json.dumps(key))
        document[key] = value
    return document


def require_read(token, location, why=None):
    """ForbiddenError unless ``token`` (None: no tokens file) may read ``location``;
    ``why``: what in the request reads (a write's if-match), for the message."""
    if token is not None and not token.may_read(location):
        reason = f" ({why})" if why else ""
        raise ForbiddenError(f"token {token.name!r} may not read {location.url}{reason}")


def require_write(token, location):
    if token is not None and not token.may_write(location):
        raise ForbiddenError(f"token {token.name!r} may not write {location.url}")


def parse(document, path="tokens file"):
    """The Tokens of a parsed tokens document; Error on anything unexpected."""
    entries = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries or set(document) != {"tokens"}:
        raise Error(f"{path}: expected {{\"tokens\": [{{\"name\": ..., \"secret\": ..., "
                    f"\"read\": [...], \"write\": [...]}}, ...]}}")
    tokens, names, digests = [], set(), set()
    for number, entry in enumerate(entries, 1):
        token = _entry(entry, f"{path}: entry {number}")
        if token.name in names:
            raise Error(f"{path}: entry {number}: the name {token.name!r} is used twice")
        if token.digest in digests:
            raise Error(f"{path}: entry {number}: the same secret is used twice")
        names.add(token.name)
        digests.add(token.digest)
        tokens.append(token)
    return tokens


def _entry(entry, where):
    if not isinstance(entry, dict):
        raise Error(f"{where}: an entry is an object with name, secret, read and write")
    odd = sorted(set(entry) - _FIELDS) + sorted({"name", "secret"} - set(entry))
    if odd:
        raise Error(f"{where}: an entry has name, secret, read and write (unknown or "
                    f"missing: {', '.join(odd)})")
    name, secret = entry["name"], entry["secret"]
    if not isinstance(name, str) or not name.strip():
        raise Error(f"{where}: name must be a non-empty string")
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        raise Error(f"{where} ({name}): secret must be a string of at least "
                    f"{MIN_SECRET_LENGTH} characters")
    if not all("!" <= char <= "~" for char in secret):
        # an HTTP header is read as latin-1 and 'Bearer  x ' is stripped: a secret with
        # other characters could only ever work as ?auth=, never as the header
        raise Error(f"{where} ({name}): secret must be visible ASCII characters only "
                    f"(no spaces, tabs or accents), so that it works in an "
                    f"'Authorization: Bearer' header")
    return Token(name, hashlib.sha256(secret.encode("utf-8")).digest(),
                 _prefixes(entry.get("read", []), f"{where} ({name}) read"),
                 _prefixes(entry.get("write", []), f"{where} ({name}) write"))


def _prefixes(values, where):
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise Error(f"{where}: a list of path prefixes like \"/users/ann\" (\"/\": everything)")
    prefixes = []
    for value in values:
        if not value.startswith("/"):
            raise Error(f"{where}: {value!r} must start with /")
        inner = value.strip("/")
        try:
            segments = rest.parse_segments(inner, value) if inner else ()
        except Error as exc:
            raise Error(f"{where}: {exc}") from None
        prefixes.append(_keys(segments))
    return tuple(prefixes)
