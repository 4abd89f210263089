"""Large files as ZODB blobs: :class:`File` to store, :class:`FileHandle` to read.

    db['report'] = zpydb.File('/tmp/report.pdf')        # a path (copied, never moved)
    db['raw'] = zpydb.File(b'...', name='raw.bin')      # bytes
    db['up'] = zpydb.File(stream, name='up.csv')        # a binary stream
    db['big'] = zpydb.File('/tmp/big.iso', move=True)   # hand the file over (fast)

    f = db['report']._run()          # <File report.pdf 2.4 MB>, a read handle
    f.name, f.size, f.content_type, f.sha256
    with f.open() as stream: ...     # a binary file object
    f.read(); f.save_to('/tmp/copy.pdf')

What is stored is a small persistent :class:`StoredFile` (name, content type,
size, SHA-256) that points to a ``ZODB.blob.Blob`` holding the bytes.  The
content is copied in :data:`CHUNK_SIZE` chunks: nothing ever holds the whole
file in memory, when writing or reading, and over ZEO the blob travels in
chunks too.

A :class:`FileHandle` (what reads return) remembers the blob's object id and the
revision (serial) it was read at, and the ``ZODB.DB`` it came from.  zpydb ends
its read transaction right after copying the value, so the handle opens the
content later, through a pooled connection (``openCommittedBlobFile``): the
FileStorage blob directory, the ZEO client blob cache (downloaded on first
open) or RelStorage's blob cache.  A handle is a snapshot: it keeps reading the
revision it was read at, even after the key is replaced, until a pack removes
that revision.  See docs/files.md.
"""

import base64
import binascii
import hashlib
import io
import mimetypes
import os
import shutil
import tempfile
import threading
import uuid
import weakref

import transaction
from persistent import Persistent
from ZODB.blob import SAVEPOINT_SUFFIX, Blob
from ZODB.POSException import POSKeyError
from ZODB.utils import load_current, z64

from . import export, nodes
from .errors import Error

CHUNK_SIZE = 1 << 20
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: Files up to this size are exported inline as base64; larger ones go to a directory.
EXPORT_INLINE_LIMIT = 1 << 20


def guess_content_type(name):
    if not name:
        return DEFAULT_CONTENT_TYPE
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding == "gzip":
        return "application/gzip"
    if encoding:
        return DEFAULT_CONTENT_TYPE
    return guessed or DEFAULT_CONTENT_TYPE


def format_size(size):
    """``2_400_000`` -> ``'2.4 MB'`` (decimal units, like most file managers)."""
    if size < 1000:
        return f"{size} bytes" if size != 1 else "1 byte"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        size /= 1000
        if size < 999.95 or unit == "PB":
            return f"{size:.1f} {unit}"
    return f"{size} bytes"  # not reached


# -- what users store ---------------------------------------------------------

class File:
    """A file to store: ``File(path)``, ``File(b'bytes')`` or ``File(binary_stream)``.

    ``name`` defaults to the path's (or the stream's) base name; ``content_type``
    is guessed from the name.  Nothing is read until the value is stored.

    ``move=True`` (paths only) hands the file over instead of copying it: it is
    renamed away at once and consumed by the blob (``Blob.consumeFile``: a
    rename when the temporary directory is on the same filesystem).  The source
    path is gone afterwards, even if the write fails; then the content is put
    back under the source path when the File object is garbage-collected.
    Without ``move`` the source is only read, never modified or moved.

    A stream is read from its current position; a seekable stream is rewound to
    it if the write is retried after a conflict, and a non-seekable one is
    spooled to a temporary file first so a retry can read it again.
    """

    def __init__(self, source, name=None, content_type=None, move=False):
        self.move = bool(move)
        self._path = self._data = self._stream = None
        self._start = None
        self._spool = None
        self._state = None
        self._expected = None  # (size, sha256) that import checks against
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data = bytes(source)
            default_name = None
        elif isinstance(source, (str, os.PathLike)):
            self._path = os.fspath(source)
            if not os.path.isfile(self._path):
                raise FileNotFoundError(f"zpydb.File: no such file: {self._path}")
            default_name = os.path.basename(self._path)
        elif isinstance(source, FileHandle):
            self._stream = source
            default_name = source.name
            content_type = content_type or source.content_type
        elif hasattr(source, "read"):
            self._stream = source
            stream_name = getattr(source, "name", None)
            default_name = os.path.basename(stream_name) if isinstance(stream_name, str) else None
            try:
                self._start = source.tell() if source.seekable() else None
            except (AttributeError, OSError, ValueError):
                self._start = None
        else:
            raise TypeError(f"zpydb.File takes a path, bytes or a binary stream, not "
                            f"{type(source).__name__}")
        if self.move and self._path is None:
            raise ValueError("zpydb.File(move=True) needs a path")
        self.name = name if name is not None else default_name
        self.content_type = content_type or guess_content_type(self.name)

    def __repr__(self):
        source = ("bytes" if self._data is not None else
                  self._path if self._path is not None else "stream")
        return f"<zpydb.File {self.name or '(unnamed)'} from {source} (not stored yet)>"

    # -- building the stored node (called once per write attempt) -------------
    def _to_node(self):
        blob = Blob()
        if self.move:
            size, digest = self._consume_into(blob)
        else:
            with self._reader() as source, blob.open("w") as target:
                size, digest = copy_stream(source, target)
        if self._expected is not None:
            self._check_expected(size, digest)
        return StoredFile(self.name, self.content_type, size, digest, blob)

    def _reader(self):
        """A fresh binary stream over the content (for this write attempt)."""
        if self._data is not None:
            return io.BytesIO(self._data)
        if self._path is not None:
            return open(self._path, "rb")
        if isinstance(self._stream, FileHandle):
            return self._stream.open()
        if self._start is not None:
            self._stream.seek(self._start)
            return _Unclosed(self._stream)
        if self._spool is None:  # non-seekable: keep a copy so a retry can re-read it
            spool = tempfile.NamedTemporaryFile(prefix="zpydb-spool-", delete=False)
            with spool:
                copy_stream(self._stream, spool)
            self._spool = spool.name
            weakref.finalize(self, _remove_quietly, spool.name)
        return open(self._spool, "rb")

    def _consume_into(self, blob):
        """move=True: rename the source aside once, then give each attempt a hard link."""
        if self._state is None:
            directory, base = os.path.split(os.path.abspath(self._path))
            spool = os.path.join(directory, f".{base}.zpydb-{uuid.uuid4().hex[:8]}")
            os.rename(self._path, spool)
            self._state = _MoveState(self._path, spool)
            weakref.finalize(self, self._state.finish)
        state = self._state
        with open(state.spool, "rb") as source:
            size, digest = hash_stream(source)
        link = state.spool + "." + uuid.uuid4().hex[:6]
        try:
            os.link(state.spool, link)
        except OSError:  # no hard links here: copy (still in chunks)
            with open(state.spool, "rb") as source, blob.open("w") as target:
                copy_stream(source, target)
        else:
            try:
                blob.consumeFile(link)
            finally:
                _remove_quietly(link)
        state.blobs.append(blob)
        return size, digest

    def _check_expected(self, size, digest):
        want_size, want_digest = self._expected
        if (want_size is not None and want_size != size) or \
                (want_digest and want_digest != digest):
            raise Error(f"file {self.name!r}: content does not match the export "
                        f"(size {size}, sha256 {digest[:12]}...; expected size {want_size}, "
                        f"sha256 {str(want_digest)[:12]}...)")


class _MoveState:
    """Where a move=True source went; put back if no write committed it."""

    def __init__(self, source, spool):
        self.source = source
        self.spool = spool
        self.blobs = []
        self.lock = threading.Lock()

    def finish(self):
        with self.lock:
            if not os.path.exists(self.spool):
                return
            if any(_committed(blob) for blob in self.blobs):
                _remove_quietly(self.spool)
            elif not os.path.exists(self.source):  # never clobber a new file there
                if os.stat(self.spool).st_nlink > 1:
                    # a pending blob still shares this inode: give the user a copy
                    shutil.copyfile(self.spool, self.source)
                    _remove_quietly(self.spool)
                else:
                    os.rename(self.spool, self.source)


def _committed(blob):
    """True when the blob's record is in the storage (its transaction committed)."""
    jar, oid = getattr(blob, "_p_jar", None), getattr(blob, "_p_oid", None)
    if jar is None or oid is None:
        return False
    try:
        load_current(jar.db().storage, oid)
    except Exception:  # not committed (POSKeyError), or the database is gone: keep the data
        return False
    return True


class _Unclosed(io.RawIOBase):
    """A caller's stream, used in a ``with`` block without being closed by it."""

    def __init__(self, stream):
        super().__init__()
        self._inner = stream

    def readable(self):
        return True

    def read(self, size=-1):
        return self._inner.read(size)

    def close(self):
        pass


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def hash_stream(source):
    """``(size, sha256 hex)`` of a stream's content, read in chunks."""
    return copy_stream(source, None)


def copy_stream(source, target):
    """Copy in chunks (``target`` None: only hash); returns ``(size, sha256 hex)``."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = source.read(CHUNK_SIZE)
        if not chunk:
            return size, digest.hexdigest()
        if not isinstance(chunk, bytes):
            if isinstance(chunk, str):
                raise TypeError("zpydb.File needs a binary stream (open the file with 'rb')")
            chunk = bytes(chunk)
        if target is not None:
            target.write(chunk)
        size += len(chunk)
        digest.update(chunk)


# -- what ZODB stores ---------------------------------------------------------

class StoredFile(Persistent):
    """The stored node: metadata plus the Blob.  Never changed after it is written."""

    def __init__(self, name, content_type, size, sha256, blob):
        self.name = name
        self.content_type = content_type
        self.size = size
        self.sha256 = sha256
        self.blob = blob

    def __repr__(self):
        return f"<StoredFile {self.name} {format_size(self.size)}>"


# -- what reads return --------------------------------------------------------

class FileHandle:
    """A read-only handle on one stored file revision (what ``db['f']._run()`` returns).

    ``name``, ``size``, ``content_type``, ``sha256``; ``open()`` (a binary file
    object; close it, or use ``with``), ``read()`` (all bytes: small files only),
    ``save_to(path)`` (streams).  Two handles are equal when name, content type
    and content (SHA-256) are equal; a handle equals ``bytes`` with the same
    content.
    """

    __slots__ = ("_name", "_content_type", "_size", "_sha256", "_db", "_oid", "_serial",
                 "_pending", "__weakref__")

    def __init__(self, name, content_type, size, sha256, db=None, oid=None, serial=None,
                 pending=None):
        self._name = name
        self._content_type = content_type
        self._size = size
        self._sha256 = sha256
        self._db = db            # the ZODB.DB (weakly: a handle must not keep it open)
        self._oid = oid
        self._serial = serial
        self._pending = pending  # an uncommitted file (read inside a transaction block)

    name = property(lambda self: self._name)
    content_type = property(lambda self: self._content_type)
    size = property(lambda self: self._size)
    sha256 = property(lambda self: self._sha256)

    def open(self):
        """The content as a binary file object (read-only)."""
        if self._pending is not None:
            try:
                return open(self._pending, "rb")
            except FileNotFoundError:
                raise Error(f"file {self._name!r} was read inside a transaction before it "
                            f"was committed; read it again after the commit") from None
        db = self._db() if self._db is not None else None
        if db is None:
            raise Error(f"file {self._name!r}: its database is closed; read it again from "
                        f"an open database")
        tm = transaction.TransactionManager()
        if getattr(db, "_mvcc_storage", None) is None:  # ZODB.DB.close() deletes it
            raise Error(f"file {self._name!r}: its database is closed; read it again from "
                        f"an open database")
        try:
            conn = db.open(transaction_manager=tm)
        except Exception as exc:
            raise Error(f"file {self._name!r}: cannot open its database ({exc})") from None
        try:
            return conn._storage.openCommittedBlobFile(self._oid, self._serial)
        except POSKeyError:
            raise Error(f"file {self._name!r}: this revision of its content no longer "
                        f"exists (the database was packed since it was read); read it "
                        f"again") from None
        finally:
            tm.abort()
            conn.close()

    def read(self):
        """All the content as bytes (loads it into memory: use open() for big files)."""
        with self.open() as stream:
            return stream.read()

    def save_to(self, path):
        """Write the content to ``path`` (a file name or a directory) in chunks; returns the path."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, safe_file_name(self._name) or "file")
        with self.open() as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target, CHUNK_SIZE)
        return path

    def __repr__(self):
        return f"<File {self._name or '(unnamed)'} {format_size(self._size)}>"

    def __eq__(self, other):
        if isinstance(other, FileHandle):
            return (self._name, self._content_type, self._size, self._sha256) == \
                   (other._name, other._content_type, other._size, other._sha256)
        if isinstance(other, (bytes, bytearray, memoryview)):
            other = bytes(other)
            return len(other) == self._size and \
                hashlib.sha256(other).hexdigest() == self._sha256
        return NotImplemented

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # equal to bytes with the same content, so not hashable (like Path)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        raise TypeError("a zpydb FileHandle cannot be pickled; store it with "
                        "db[...] = handle (it is copied) or save_to() a path")


def safe_file_name(name):
    base = os.path.basename(str(name or ""))
    cleaned = "".join(ch if ch.isalnum() or ch in "._-+" else "_" for ch in base)
    return cleaned.lstrip(".")[:100]


# -- conversion hooks (nodes.py) ---------------------------------------------------

def file_to_node(value):
    return value._to_node()


def handle_to_node(handle):
    """Storing a handle (``db['copy'] = db['f']``) copies its content into a new blob."""
    return File(handle)._to_node()


def stored_to_plain(node):
    blob = node.blob
    blob._p_activate()
    pending = None
    if blob._p_jar is None or blob._p_serial == z64 or blob._p_blob_uncommitted or \
            (blob._p_blob_committed or "").endswith(SAVEPOINT_SUFFIX):
        pending = _pending_path(blob)
    db = blob._p_jar.db() if blob._p_jar is not None else None
    return FileHandle(node.name, node.content_type, node.size, node.sha256,
                      weakref.ref(db) if db is not None else None, blob._p_oid,
                      blob._p_serial, pending)


def _pending_path(blob):
    if blob._p_blob_uncommitted:
        return blob._p_blob_uncommitted
    with blob.open("r") as stream:
        return stream.name


nodes.register_value_type(File, file_to_node, StoredFile, stored_to_plain)
nodes.register_value_type(FileHandle, handle_to_node, StoredFile, stored_to_plain)


# -- export / import (export.py) ------------------------------------------------------

def export_file(handle, context):
    """``{"$file": {...}}``: inline base64 when small, else a file in the files directory.

    ``context["file_content"] = False``: the metadata alone, without the content
    (the web server's ETags and shallow listings: the sha256 stands for the bytes).
    """
    meta = {"name": handle.name, "content_type": handle.content_type, "size": handle.size,
            "sha256": handle.sha256}
    if context.get("file_content") is False:
        return {"$file": meta}
    files_dir = context.get("files_dir")
    if files_dir is None and handle.size <= context.get("inline_limit", EXPORT_INLINE_LIMIT):
        meta["base64"] = base64.b64encode(handle.read()).decode("ascii")
        return {"$file": meta}
    if files_dir is None:
        files_dir = context.get("default_files_dir")
        if files_dir is None:
            raise Error(f"file {handle.name!r} is {format_size(handle.size)}, over the inline "
                        f"limit of {format_size(context.get('inline_limit', EXPORT_INLINE_LIMIT))}:"
                        f" export with --files-dir DIR (or -o FILE.json, which puts such "
                        f"files in FILE.files/) to write large files beside the JSON")
    os.makedirs(files_dir, exist_ok=True)
    context["count"] = context.get("count", 0) + 1
    target = os.path.join(files_dir,
                          f"{context['count']:06d}-{safe_file_name(handle.name) or 'file'}")
    handle.save_to(target)
    base = context.get("json_dir") or os.getcwd()
    meta["path"] = os.path.relpath(target, base).replace(os.sep, "/")
    return {"$file": meta}


def import_file(inner, context):
    """The inverse of :func:`export_file`: a :class:`File` to store."""
    if not isinstance(inner, dict):
        raise Error(f"$file must be an object, not {type(inner).__name__}")
    name, content_type = inner.get("name"), inner.get("content_type")
    if "base64" in inner:
        try:
            data = base64.b64decode(inner["base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise Error(f"$file {name!r}: base64 is not valid base64") from None
        made = File(data, name=name, content_type=content_type)
    elif "path" in inner:
        path = export.resolve_file_reference(inner, context)  # only inside the files dir
        made = File(path, name=name, content_type=content_type)
    else:
        raise Error(f"$file {name!r} has neither base64 nor path")
    made._expected = (inner.get("size"), inner.get("sha256"))
    return made


export.encoders.append((FileHandle, export_file))
export.decoders["$file"] = import_file
