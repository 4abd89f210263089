"""Hardening of ZEO's server protocol (``ZEO.asyncio.server.ServerProtocol``).

Holes in stock ZEO 6, each closed by wrapping one ServerProtocol method:

* ``finish_connection``: the server announces ``M5`` (msgpack) or ``Z5``
  (pickle), but then uses whatever encoding the client's answer names, and its
  pickle decoder allows every name in ``builtins`` -- one frame calling
  ``builtins.exec`` runs code before any check.  Only msgpack (and ZEO's
  ``ruok`` status probe) is accepted here, and the server always announces it.
* ``message_received`` logs a call to a method a client may not call (any
  attribute of ``ZEOStorage``, before or after ``register``), closes the
  connection -- and then still looks the name up and calls it; that fails
  only because ``close()`` has just dropped the storage reference.  The
  decoder wrapper turns such a message into a keep-alive, so nothing is looked
  up.  ``storeBlobShared`` (a client naming a file in a blob directory it
  shares with the server, which zpydb never does) is refused as well, and so
  is ``pack`` on a read-only server: ZEO passes it on, so a client of a
  read-only replica could pack the primary and erase its undo history.
* ``data_received``: a frame is a 4-byte size and a payload, and ZEO buffers
  the whole payload whatever the size says.  :class:`FrameLimit` reads the
  sizes as they arrive and closes the connection on one over the limit,
  before buffering it.
"""

import logging
import os

from ZEO.asyncio import server as zeo_server
from ZODB.POSException import ReadOnlyError

logger = logging.getLogger("zpydb.zeo_guard")

MAX_MESSAGE_SIZE_ENV = "ZPYDB_MAX_MESSAGE_SIZE"
#: The largest client message accepted (a record, a blob chunk of 59,000 bytes...).
DEFAULT_MAX_MESSAGE_SIZE = 64 << 20
#: Registered ZEO methods a zpydb client never calls.
DISABLED_METHODS = frozenset({"storeBlobShared"})
KEEP_ALIVE = (-1, 0, ".reply", None)  # what message_received ignores

_originals = {}


def max_message_size():
    """The limit from ``ZPYDB_MAX_MESSAGE_SIZE`` (bytes), else the default."""
    text = os.environ.get(MAX_MESSAGE_SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_MESSAGE_SIZE
    if not text.isdigit() or int(text) < 1024:
        raise ValueError(f"{MAX_MESSAGE_SIZE_ENV} must be a number of bytes >= 1024, "
                         f"not {text!r}")
    return int(text)


def _peer(protocol):
    try:
        return "%s:%s" % protocol.get_peername()[:2]
    except Exception:
        return "?"


class FrameLimit:
    """``data_received`` in front of ZEO's: refuses a frame whose size is over ``limit``."""

    def __init__(self, protocol, forward, limit):
        self.protocol, self.forward, self.limit = protocol, forward, limit
        self.header = b""   # the part of a size header received so far
        self.remaining = 0  # payload bytes of the current frame still to come
        self.refused = False

    def __call__(self, data):
        if not self.refused and self._sizes_ok(data):
            self.forward(data)

    def _sizes_ok(self, data):
        position, end = 0, len(data)
        while position < end:
            if self.remaining:
                step = min(self.remaining, end - position)
                self.remaining -= step
                position += step
                continue
            piece = bytes(data[position:position + 4 - len(self.header)])
            self.header += piece
            position += len(piece)
            if len(self.header) == 4:
                self.remaining = int.from_bytes(self.header, "big")
                self.header = b""
                if self.remaining > self.limit:
                    return self._refuse()
        return True

    def _refuse(self):
        self.refused = True
        logger.error("zpydb guard: refused a %d-byte message from %s (limit %d bytes, "
                     "%s); closing the connection", self.remaining, _peer(self.protocol),
                     self.limit, MAX_MESSAGE_SIZE_ENV)
        self.protocol.close()
        return False


def _checked_decode(protocol, decode):
    """ZEO's decoder, turning a call the client may not make into a keep-alive."""
    def decode_checked(message):
        decoded = decode(message)
        message_id, _async, name, _args = decoded
        if message_id != -1 and (name not in protocol.methods or name in DISABLED_METHODS):
            logger.error("zpydb guard: %s called %.80r, which it may not call; closing the "
                         "connection", _peer(protocol), name)
            protocol.close()
            return KEEP_ALIVE
        if name == "pack" and _read_only_server(protocol.zeo_storage):
            logger.error("zpydb guard: refused pack from %s: this server is read-only",
                         _peer(protocol))
            protocol.send_error(message_id, ReadOnlyError(
                "pack refused: this ZEO server is read-only (pack the primary)"))
            return KEEP_ALIVE
        return decoded
    return decode_checked


def _read_only_server(zeo_storage):
    """A read-only server (a replica) or storage: ZEO would still pass ``pack`` on.

    "Yes, you can pack a read-only server" (ZEO's StorageServer): a replica's
    storage is a ClientStorage of the primary, so a client of the replica
    would pack the *primary* and erase its undo history.
    """
    storage = getattr(zeo_storage, "storage", None)
    return bool(getattr(getattr(zeo_storage, "server", None), "read_only", False)) or \
        (storage is not None and storage.isReadOnly())


def _init(self, loop, addr, zeo_storage, msgpack):
    global _announced
    if not _announced:  # once, when logging is set up (not yet when ZConfig imports us)
        _announced = True
        logger.info("zpydb guard active: msgpack only, messages up to %d bytes, only "
                    "zpydb's classes in conflict resolution", _limit)
    _originals["__init__"](self, loop, addr, zeo_storage, True)  # always announce msgpack


def _finish_connection(self, protocol_version):
    if protocol_version != b"ruok" and protocol_version[:1] != b"M":
        logger.error("zpydb guard: refused a %.10r handshake from %s: this server speaks "
                     "msgpack only (no pickles on the wire)", protocol_version, _peer(self))
        self.close()
        return
    _originals["finish_connection"](self, protocol_version)
    if self.protocol_version == protocol_version and protocol_version != b"ruok":
        self.decode = _checked_decode(self, self.decode)


def _connection_made(self, transport):
    _originals["connection_made"](self, transport)
    self.data_received = FrameLimit(self, self.data_received, _limit)


_limit = DEFAULT_MAX_MESSAGE_SIZE
_announced = False
_WRAPPERS = {"__init__": _init, "finish_connection": _finish_connection,
             "connection_made": _connection_made}


def install():
    """Wrap the three ServerProtocol methods (idempotent)."""
    global _limit
    _limit = max_message_size()
    cls = zeo_server.ServerProtocol
    for name, function in _WRAPPERS.items():
        if name not in _originals:
            _originals[name] = getattr(cls, name)
            setattr(cls, name, function)
