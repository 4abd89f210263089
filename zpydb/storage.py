"""Turning a database URL into an open ``ZODB.DB``: parse options, build the storage, open.

The two storages zpydb configures itself are built directly with their constructors:

* a ZEO server (``zeo://host:port``, ``host:port``) ->
  ``ZEO.ClientStorage.ClientStorage(addr, ssl=..., server_sync=..., wait_timeout=...,
  blob_dir=..., cache_size=..., client=..., var=..., read_only=...)``, with an
  ``ssl.SSLContext`` built from the ``tls_*`` options;
* an embedded file (a path, ``file://PATH?blobstorage_dir=DIR``) ->
  ``ZODB.FileStorage.FileStorage(path, blob_dir=..., read_only=...)``.

zodburi cannot express what zpydb needs there: its ``zeo://`` has no TLS parameters
and does not pass ``server_sync``, and its ``file://`` wraps the FileStorage in
``ZODB.blob.BlobStorage``, whose ``undo`` fails (POSKeyError) on undo/redo/undo of a
replaced blob.  Going through it meant writing temporary ZConfig files and patching
a connected ClientStorage's private attributes; the constructors take all of it as
arguments, and the options stay Python values instead of URL query strings.

zodburi stays for every other scheme (memory, zconfig, demo, file URLs with other
parameters, RelStorage's postgres/mysql/sqlite when installed), found through its
``zodburi.resolvers`` entry points: zpydb adds nothing to those but a private blob
directory for RelStorage and ``read_only``.  zodburi's declarative parameter lists
also parse the query of a ``zeo://`` URL, so its parameters keep working.

This module also adds the shorthands (``None``: ``$ZPYDB_URL`` or the embedded
default, a plain file path, ``host:port``), zpydb's ZEO client defaults (a bounded
wait for the server, a private client blob directory, up-to-date reads), and error
messages that name the URL.
"""

import atexit
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, urlencode, urlsplit

import ZConfig
import ZODB
import zodburi
from zodburi.datatypes import convert_bytesize
from zodburi.resolvers import ClientStorageURIResolver, FileStorageURIResolver
from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage
from ZODB.FileStorage.FileStorage import packed_version
from ZEO.Exceptions import ClientDisconnected
from zc.lockfile import LockError

from . import safety
from .errors import DatabaseLockedError, DisconnectedError, URLError

ENV_URL = "ZPYDB_URL"
DEFAULT_DIR = "var"
#: A database ``x.fs`` keeps its blobs in ``x.fs.blobs`` (``Data.fs``: ``blobs``), see blob_dir_for.
BLOB_SUFFIX = ".blobs"
LEGACY_BLOB_DIR = "blobs"
FILESTORAGE_MAGIC = packed_version  # the first 4 bytes of every FileStorage file (b"FS30")
ZEO_DEFAULT_PORT = 8100

#: zodburi scheme -> the pip extra that provides it, for a helpful message.
RELSTORAGE_SCHEMES = ("postgres", "mysql", "sqlite", "oracle")

#: Schemes whose zodburi resolver takes ``read_only`` in the query (ZEO, files: built here).
READ_ONLY_QUERY_SCHEMES = ("file", "postgres", "mysql", "sqlite", "oracle")
_shared = {}  # file URL -> OpenDatabase, see open_database
_shared_lock = threading.RLock()

EXTRAS = {"postgres": "postgres", "mysql": "mysql", "oracle": "oracle", "sqlite": "sqlite"}


@dataclass
class Options:
    """Client options accepted by :func:`zpydb.connect` as keyword arguments."""

    #: Seconds a ZEO client waits for the server (first connect and while down).
    wait_timeout: float = 5.0
    #: Ask the server before every statement so reads see every acknowledged
    #: write (ZEO ``server_sync``).  False: purely local cached reads.
    fresh_reads: bool = True
    #: ZEO client object cache size in bytes (in memory unless ``cache_dir``).
    cache_size: int = 64 * 1024 * 1024
    #: Keep the ZEO client cache in a file under this directory (survives restarts).
    cache_dir: str = None
    #: Private blob cache of a ZEO or RelStorage client (default: a temporary one per client).
    blob_dir: str = None
    read_only: bool = False
    #: TLS for ZEO: client certificate, its key, the CA that signed the server's.
    tls_cert: str = None
    tls_key: str = None
    tls_ca: str = None
    tls_server_hostname: str = None
    #: Seconds a statement (or ``db.atomic``) keeps retrying a conflict it cannot
    #: merge, with full-jitter back-off, before it raises ConflictError.
    retry_timeout: float = 30.0
    #: Optional cap on the number of attempts as well (None: only the time bounds it).
    retries: int = None
    #: Objects kept in each connection's cache.
    connection_cache_size: int = 10000
    #: Seconds between a PostgreSQL (RelStorage) watcher's checks for new
    #: transactions (``watch()``, feed.py); ZEO and files push them instead.
    poll_interval: float = 0.1

    @classmethod
    def from_kwargs(cls, kwargs):
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"unknown zpydb.connect option(s): {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(names))}")
        return cls(**kwargs)

    @property
    def tls(self):
        return bool(self.tls_cert or self.tls_ca)


def default_url():
    """The embedded default: a FileStorage with blobs under ``./var/``."""
    directory = os.path.abspath(DEFAULT_DIR)
    return file_url(os.path.join(directory, "Data.fs"))


def file_url(path):
    path = os.path.abspath(path)
    return "file://" + path + "?" + urlencode({"blobstorage_dir": blob_dir_for(path)})


def blob_dir_for(path):
    """The blob directory of the embedded database file ``path``: its own, never shared.

    * ``DIR/Data.fs`` keeps ``DIR/blobs`` (the layout of runzeo's configs and of
      ``zpydb serve --data-dir DIR``, and of the default ``./var/Data.fs``);
    * any other name gets ``<path>.blobs`` beside it (``var/backup.fs`` ->
      ``var/backup.fs.blobs``), so two databases in one folder never share one;
    * an existing database made by an older zpydb (which gave every file in a
      folder ``DIR/blobs``) that has no ``<path>.blobs`` but a ``DIR/blobs``
      keeps using ``DIR/blobs``, so its stored files stay readable (``zpydb
      copy`` it to a new name to give it a blob directory of its own).

    A blob directory is never cleared by creating a database: see
    :func:`check_database_file`.
    """
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    shared = os.path.join(folder, LEGACY_BLOB_DIR)
    if name == "Data.fs":
        return shared
    own = path + BLOB_SUFFIX
    if not os.path.exists(own) and os.path.isdir(shared) and _is_filestorage(path):
        return shared  # the layout of zpydb before per-database blob directories
    return own


def _is_filestorage(path):
    try:
        with open(path, "rb") as stream:
            return stream.read(4) == FILESTORAGE_MAGIC
    except OSError:
        return False


def _holds_blobs(directory):
    """True when ``directory`` holds at least one committed blob file (``*.blob``)."""
    for _root, _dirs, files in os.walk(directory):
        if any(name.endswith(".blob") for name in files):
            return True
    return False


def check_database_file(path, blob_dir=None, read_only=False):
    """Refuse, before anything is created, to open ``path`` as an embedded database when

    * it is a directory, or an existing non-empty file that is not a FileStorage
      (FileStorage would leave ``.lock``/``.tmp`` files behind and fail with a
      traceback);
    * it does not exist yet and ``blob_dir`` already holds committed blob files:
      creating a FileStorage *clears* its blob directory
      (``ZODB.FileStorage``: ``if create and os.path.exists(blob_dir):
      remove_committed_dir(blob_dir)``), which would destroy another database's
      stored files.
    """
    if os.path.isdir(path):
        raise URLError(path, "is a directory, not a database file")
    if os.path.exists(path):
        try:
            with open(path, "rb") as stream:
                head = stream.read(4)
        except OSError as exc:
            raise URLError(path, f"cannot be read: {exc.strerror or exc}") from None
        if head and head != FILESTORAGE_MAGIC:
            raise URLError(path, "is not a zpydb database (not a ZODB FileStorage file)")
        return
    if read_only:
        raise URLError(path, "no such database file")
    if blob_dir and os.path.isdir(blob_dir) and _holds_blobs(blob_dir):
        raise URLError(path, f"cannot create a new database here: its blob directory "
                             f"{blob_dir} already holds stored files (of another or a deleted "
                             f"database), and creating a database would erase them; move "
                             f"that directory away, or delete it if no database needs it")


def normalize_url(url):
    """Expand the shorthands into a URL zodburi understands."""
    if url is None:
        url = os.environ.get(ENV_URL) or default_url()
    url = str(url)
    if "://" in url or url.startswith("demo:"):
        return url
    host, sep, port = url.rpartition(":")
    if sep and port.isdigit() and "/" not in url:
        return f"zeo://{host or '127.0.0.1'}:{port}"
    return file_url(url)


def scheme_of(url):
    return url.split(":", 1)[0]


def describe(url):
    """A short, password-free name for messages (``zeo://127.0.0.1:8100``)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return parts.path
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path if parts.scheme != 'zeo' else ''}"


class OpenDatabase:
    """A ``ZODB.DB`` plus what zpydb must clean up when it is closed."""

    def __init__(self, db, url, options, cleanup_dirs=()):
        self.db = db
        self.url = url
        self.name = describe(url)
        self.options = options
        self.cleanup_dirs = list(cleanup_dirs)
        self.users = 1
        self.shared_key = None  # the normalized URL when shared (open_database)

    @property
    def storage(self):
        return self.db.storage

    @property
    def sync(self):
        """The server round trip that brings a transaction up to date, or None.

        A ZEO client learns of other clients' commits from invalidations the
        server pushes; a transaction that begins right after a commit was
        acknowledged elsewhere may not have them yet.  A ping makes it wait
        for them (what ZEO's ``server_sync`` does in every begin): zpydb's
        transaction manager calls this before ``begin()`` (session.py).  None
        for every other storage (they are up to date at begin), with
        ``fresh_reads=False``, and for a ClientStorage configured with
        ``server_sync`` (a ``zconfig://`` file), which pings by itself.
        """
        storage = self.db.storage
        if (not self.options.fresh_reads or not isinstance(storage, ClientStorage)
                or storage.server_sync):
            return None
        return lambda: storage.ping()

    def close(self):
        with _shared_lock:
            self.users -= 1
            if self.users > 0:
                return
            if _shared.get(self.shared_key) is self:
                del _shared[self.shared_key]
        self.db.close()
        for directory in self.cleanup_dirs:
            shutil.rmtree(directory, ignore_errors=True)


def open_database(url=None, options=None):
    """Open ``url`` (see :func:`normalize_url`) and return an :class:`OpenDatabase`.

    An embedded FileStorage can be open in one process only (it holds a lock
    file), so connecting twice to the same file in one process shares one
    ``ZODB.DB``; each connect still gets its own connections and transactions.
    """
    options = options or Options()
    url = normalize_url(url)
    if scheme_of(url) == "file":
        with _shared_lock:
            if url in _shared:
                shared = _shared[url]
                _check_same_options(shared, options)
                shared.users += 1
                return shared
            opened = _open(url, options)
            opened.shared_key = url
            _shared[url] = opened
            return opened
    return _open(url, options)


def _check_same_options(opened, options):
    """A second connect to a file open in this process shares its ``ZODB.DB``, so it
    cannot have other options: refuse rather than silently ignore them."""
    if opened.options == options:
        return
    differ = [f.name for f in fields(Options)
              if getattr(opened.options, f.name) != getattr(options, f.name)]
    have = ", ".join(f"{name}={getattr(opened.options, name)!r}" for name in differ)
    want = ", ".join(f"{name}={getattr(options, name)!r}" for name in differ)
    raise URLError(opened.name, f"already open in this process with {have}; another connect() "
                                f"to the same file shares that database and cannot use {want}: "
                                f"pass the same options, or close the other one first")


def _open(url, options):
    storage, url, cleanup, dbkw = open_storage(url, options)
    dbkw.setdefault("cache_size", options.connection_cache_size)
    try:
        db = ZODB.DB(storage, **safety.db_kwargs(dbkw))  # only zpydb's classes load
    except BaseException as exc:
        storage.close()
        _remove_dirs(cleanup)
        if isinstance(exc, ClientDisconnected):  # ZODB.DB's first transaction pings the server
            raise DisconnectedError(
                f"the connection to the ZEO server of {describe(url)} was lost while opening "
                f"the database ({exc}); nothing was changed; connect again when the server "
                f"is back") from None
        raise
    return OpenDatabase(db, url, options, cleanup)


def open_storage(url, options=None):
    """Open the bare storage behind ``url``, without a ``ZODB.DB`` on top.

    ``ZODB.DB`` commits a root object into an empty storage; tools that need
    the storage untouched (``zpydb copy`` into an empty destination) use this.
    Returns ``(storage, url, cleanup_dirs, dbkw)`` (``url`` normalized, ``dbkw``
    the ``ZODB.DB`` keywords the URL carries); the caller closes the storage and
    removes ``cleanup_dirs``.
    """
    options = options or Options()
    url = normalize_url(url)
    cleanup = []  # temporary blob directories, removed with the storage
    try:
        if scheme_of(url) == "zeo":
            storage, dbkw = _client_storage(url, options, cleanup)
        elif scheme_of(url) == "file" and _plain_file_url(url):
            storage, dbkw = _file_storage(url, options)
        else:
            storage, dbkw = _zodburi_storage(url, options, cleanup)
    except BaseException:
        _remove_dirs(cleanup)
        raise
    for directory in cleanup:  # also when the process exits without closing the database
        atexit.register(shutil.rmtree, directory, True)
    return storage, url, cleanup, dbkw


def _remove_dirs(directories):
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


# -- embedded files: FileStorage ---------------------------------------------------------

#: The query parameters of a file URL that FileStorage is built for directly; a file URL
#: with any other (quota, demostorage, connection_*) goes to zodburi unchanged.
FILE_PARAMETERS = {"blobstorage_dir", "read_only"}


def _plain_file_url(url):
    return set(_query(url)) <= FILE_PARAMETERS


def _query(url):
    return dict(parse_qsl(urlsplit(url).query))


def _file_storage(url, options):
    """``FileStorage(path, blob_dir=..., read_only=...)``: what runzeo builds, too.

    Not zodburi's ``file://``, which wraps the FileStorage in ``ZODB.blob.BlobStorage``
    whose ``undo`` fails (POSKeyError) on undo/redo/undo of a replaced blob.
    """
    path = urlsplit(url).path
    try:
        kw, _unused = FileStorageURIResolver().interpret_kwargs(_query(url))
    except ValueError as exc:
        raise URLError(url, f"bad URL parameter: {exc}") from None
    read_only = bool(options.read_only or kw.get("read_only"))
    blob_dir = kw.get("blobstorage_dir")
    _prepare_file(path, blob_dir, read_only)
    return _opening(url, lambda: FileStorage(path, blob_dir=blob_dir, read_only=read_only)), {}


def _prepare_file(path, blob_dir=None, read_only=False):
    """Check an embedded database file before FileStorage touches it; make its folder.

    See :func:`check_database_file` (non-database files, blob directories that a
    new database would erase).  The API creates missing parent directories, as
    it always has; the ``zpydb`` command checks them first (cli.py).
    """
    if not path:
        return
    check_database_file(path, blob_dir, read_only=read_only)
    if not read_only:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


# -- ZEO servers: ClientStorage ----------------------------------------------------------

def _client_storage(url, options, cleanup):
    """``ClientStorage`` with zpydb's defaults, TLS and ``server_sync`` as arguments.

    Parameters in the URL's query (zodburi's ``zeo://`` parameters, and its
    ``connection_*``/``database_name`` for ``ZODB.DB``) win over the options.
    """
    parts = urlsplit(url)
    if options.tls:  # before anything is created
        _check_tls_options(parts, options)
    kw, dbkw = _zeo_query(url, parts)
    if "blob_dir" not in kw:
        kw["blob_dir"] = options.blob_dir or tempfile.mkdtemp(prefix="zpydb-blobs-")
        if not options.blob_dir:
            cleanup.append(kw["blob_dir"])
    kw.setdefault("wait_timeout", max(1.0, options.wait_timeout))  # ZEO takes 0 as 30 s
    kw.setdefault("cache_size", options.cache_size)
    if options.cache_dir:
        os.makedirs(options.cache_dir, exist_ok=True)
        kw.setdefault("var", options.cache_dir)
        kw.setdefault("client", "zpydb")
    if options.read_only or kw.get("read_only"):
        kw["read_only"] = True
    else:
        # A read-only server (a replica) refuses read-write clients outright;
        # fall back to a read-only connection so writes get a clear ReadOnlyError.
        kw.setdefault("read_only_fallback", True)
    if options.tls:
        kw["ssl"] = _client_ssl_context(url, options)
        kw["ssl_server_hostname"] = options.tls_server_hostname or parts.hostname or "127.0.0.1"
    # No server_sync: zpydb pings the server itself when a transaction begins
    # (OpenDatabase.sync, session.py's transaction manager), so a read sees every
    # write acknowledged before it, and a write that does not need the round trip
    # can skip it (session.py, "Writes without the ping").
    kw["server_sync"] = False
    address = _zeo_address(parts)
    return _opening(url, lambda: ClientStorage(address, **kw)), dbkw


def _zeo_address(parts):
    if not parts.netloc:  # zeo:///path/to/socket: a Unix domain socket
        return os.path.normpath(parts.path)
    return (parts.hostname or "127.0.0.1", parts.port or ZEO_DEFAULT_PORT)


def _zeo_query(url, parts):
    """The query of a ``zeo://`` URL, parsed by zodburi's declarative parameter lists:
    ``(ClientStorage keywords, ZODB.DB keywords)``."""
    try:
        kw, unused = ClientStorageURIResolver().interpret_kwargs(dict(parse_qsl(parts.query)))
        return kw, _db_keywords(unused, url)
    except ValueError as exc:
        raise URLError(url, f"bad URL parameter: {exc}") from None


def _db_keywords(params, url):
    """zodburi's ``database_name`` and ``connection_*`` query parameters as ``ZODB.DB`` keywords."""
    unknown = [name for name in params if name not in zodburi.PARAMETERS]
    if unknown:
        raise URLError(url, f"unknown URL parameter(s): {', '.join(unknown)}")
    dbkw = {}
    for name, value in params.items():
        keyword = zodburi.PARAMETERS[name]
        if name == "database_name":
            dbkw[keyword] = value
        elif keyword in zodburi.BYTES_PARAMETERS:
            dbkw[keyword] = convert_bytesize(value)
        else:
            dbkw[keyword] = int(value)
    return dbkw


def _client_ssl_context(url, options):
    """The client ``SSLContext`` of the TLS options: trust only ``tls_ca``, present
    ``tls_cert``/``tls_key``, check the server's host name.  The same context ZEO's
    ``<ssl>`` ZConfig section builds (``ZEO.zconfig.ssl_config``)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=_tls_path(options.tls_ca))
        context.load_cert_chain(_tls_path(options.tls_cert), _tls_path(options.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise URLError(describe(url), f"the TLS files cannot be used: {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT | (
        context.cert_store_stats()["crl"] and ssl.VERIFY_CRL_CHECK_LEAF)
    context.check_hostname = True
    return context


def _tls_path(given):
    return os.path.abspath(os.path.expanduser(given))


def _check_tls_file(url, option, given):
    """A TLS file that is missing is named (absolute, and relative to what) before ZEO sees it."""
    path = _tls_path(given)
    if os.path.isfile(path):
        return
    problem = "is a directory" if os.path.isdir(path) else "no such file"
    where = "" if os.path.isabs(given) else f", relative to the current directory {os.getcwd()}"
    raise URLError(url, f"{option} {given!r}: {problem}: {path}{where}")


def _check_tls_options(parts, options):
    if not (options.tls_cert and options.tls_key and options.tls_ca):
        raise URLError(f"zeo://{parts.netloc}",
                       "TLS needs tls_cert, tls_key and tls_ca (client certificate, "
                       "its key, and the CA that signed the server certificate)")
    for option in ("tls_cert", "tls_key", "tls_ca"):
        _check_tls_file(f"zeo://{parts.netloc}", option, getattr(options, option))


# -- every other scheme: zodburi ---------------------------------------------------------

def _zodburi_storage(url, options, cleanup):
    """memory://, zconfig://, demo:, other file URLs, RelStorage: resolved by zodburi."""
    scheme = scheme_of(url)
    if scheme == "file":
        query = _query(url)
        _prepare_file(urlsplit(url).path, query.get("blobstorage_dir"),
                      options.read_only or query.get("read_only") in ("1", "true"))
    if options.read_only and scheme in READ_ONLY_QUERY_SCHEMES:
        url = _add_query(url, read_only="1")
    if scheme in RELSTORAGE_SCHEMES and "blob_dir=" not in url:
        blob_dir = options.blob_dir or tempfile.mkdtemp(prefix="zpydb-blobs-")
        if not options.blob_dir:
            cleanup.append(blob_dir)
        url = _add_query(url, blob_dir=blob_dir)  # RelStorage keeps blobs in the database
    try:
        factory, dbkw = zodburi.resolve_uri(url)
    except (zodburi.NoResolverForScheme, ImportError):
        # no resolver registered, or its package (e.g. RelStorage) fails to import
        raise URLError(url, _missing_backend_hint(scheme)) from None
    except zodburi.UnknownDatabaseKeywords as exc:
        raise URLError(url, f"unknown URL parameter(s): {', '.join(exc.kw)}") from None
    except ZConfig.ConfigurationError as exc:
        raise URLError(describe(url), f"bad storage configuration: {exc}") from None
    except ssl.SSLError as exc:  # a ZConfig <ssl> section builds its context while parsing
        raise URLError(describe(url), f"the TLS files cannot be used: {exc}") from None
    return _opening(url, factory), dbkw


def _add_query(url, **params):
    base, _, query = url.partition("?")
    merged = dict(parse_qsl(query))
    merged.update(params)
    return base + "?" + urlencode(merged)


# -- opening, with errors that name the URL ----------------------------------------------

def _opening(url, factory):
    """Call ``factory()`` (it opens the storage) and translate what it raises."""
    try:
        return factory()
    except ssl.SSLError as exc:
        raise URLError(describe(url), f"the TLS files cannot be used: {exc}") from None
    except ZConfig.ConfigurationError as exc:
        raise URLError(describe(url), f"bad storage configuration: {exc}") from None
    except ClientDisconnected as exc:
        raise DisconnectedError(
            f"no ZEO server answered at {describe(url)} ({exc}): is it running and reachable? "
            f"A TLS server also refuses clients without TLS options or with a certificate "
            f"its CA did not sign") from None
    except LockError:
        raise DatabaseLockedError(
            f"{describe(url)} is open in another process; an embedded database has one "
            f"user at a time. To share it, stop that process, serve this file with "
            f"`{serve_command(url)}` and connect every user to "
            f"zeo://127.0.0.1:{ZEO_DEFAULT_PORT}") from None


def _missing_backend_hint(scheme):
    extra = EXTRAS.get(scheme)
    if extra:
        return (f"no storage is installed for the {scheme!r} scheme; install it with: "
                f"pip install 'zpydb[{extra}]'")
    return (f"no storage is installed for the {scheme!r} scheme; known schemes: file, "
            f"memory, zeo, zconfig, demo, postgres")


def server_behind_cache(storage):
    """True when a ZEO server refused this client because its data is older than our cache.

    That happens when the server was restored from an older backup: ZEO logs
    "Client cache is out of sync with the server", refuses to register, and
    keeps retrying; cached objects would still be readable, silently stale.
    (ZEO exposes the outcome only as its client's ``verify_result``.)
    """
    if not isinstance(storage, ClientStorage):
        return False
    client = getattr(getattr(storage, "_server", None), "client", None)
    return getattr(client, "verify_result", None) == "Cache newer than server"


SERVER_BEHIND_MESSAGE = (
    "the server's data is OLDER than what this client has already seen: it was probably "
    "restored from an older backup, so changes acknowledged after that backup are not on "
    "the server. zpydb refuses to serve the stale cached data. To recover: restore a newer "
    "backup if you have one; otherwise close this client, delete its persistent cache "
    "(the .zec file under cache_dir, if you set one) and connect again to continue from "
    "the server's older state")


def serve_command(url):
    """A shell command that serves the embedded database ``url`` (its file and its blobs).

    ``zpydb serve --data-dir DIR`` serves ``DIR/Data.fs`` with ``DIR/blobs``; any
    other file name is served by runzeo with the bundled config and ``-X`` overrides.
    """
    import shlex

    from . import server

    parts = urlsplit(url)
    path = parts.path
    blob_dir = dict(parse_qsl(parts.query)).get("blobstorage_dir")
    folder = os.path.dirname(path)
    if os.path.basename(path) == "Data.fs" and blob_dir == os.path.join(folder, LEGACY_BLOB_DIR):
        return shlex.join(["zpydb", "serve", "--data-dir", folder])
    command = ["runzeo", "-C", str(server.bundled_config(server.PRIMARY_CONFIG)),
               "-X", f"filestorage/path={path}"]
    if blob_dir:
        command += ["-X", f"filestorage/blob-dir={blob_dir}"]
    return shlex.join(command)


def paths_created_by_opening(url):
    """The files and directories opening ``url`` (a file URL) would create.

    Empty when the database file exists already.  The ``zpydb`` command removes
    them again when a command that created a new database fails (``import`` of
    bad JSON, a failed ``copy``), so a failed command leaves nothing behind.
    """
    if scheme_of(url) != "file":
        return []
    parts = urlsplit(url)
    path = parts.path
    if not path or os.path.exists(path):
        return []
    paths = [path + ext for ext in ("", ".index", ".lock", ".tmp", ".index_tmp")]
    blob_dir = dict(parse_qsl(parts.query)).get("blobstorage_dir")
    if blob_dir:
        paths.append(blob_dir)
    return [p for p in paths if not os.path.exists(p)]


def remove_paths(paths):
    """Remove what :func:`paths_created_by_opening` listed (after the storage is closed)."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            try:
                os.remove(path)
            except OSError:
                pass


