"""Turning a database URL into an open ``ZODB.DB``.

zodburi does the URL parsing and finds the storage backend through its
``zodburi.resolvers`` entry points (file, memory, zeo, zconfig, demo, and
RelStorage's postgres/mysql/sqlite when installed).  This module only adds what
zodburi cannot express:

* shorthands: ``None`` (``$ZPYDB_URL`` or the embedded default), a plain file
  path, and ``host:port`` for a ZEO server;
* ZEO client defaults zpydb promises: a bounded wait for the server, a private
  client blob directory, up-to-date reads (``server_sync``);
* TLS for ZEO: zodburi's ``zeo://`` has no TLS parameters, so TLS keyword
  arguments are written into a ZEO ``<clientstorage>`` ZConfig section and
  resolved through zodburi's own ``zconfig://`` scheme;
* error messages that name the URL.
"""

import atexit
import os
import shutil
import tempfile
import textwrap
import threading
from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, urlencode, urlsplit

import ssl

import ZConfig
import ZODB
import zodburi
from ZEO.ClientStorage import ClientStorage
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

#: Schemes whose zodburi resolver takes ``read_only`` in the query (ZEO: see _zeo_url).
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
    scheme = scheme_of(url)
    cleanup = []
    if scheme == "file":
        with _shared_lock:
            if url in _shared:
                shared = _shared[url]
                _check_same_options(shared, options)
                shared.users += 1
                return shared
            opened = _open(url, options, cleanup)
            opened.shared_key = url
            _shared[url] = opened
            return opened
    return _open(url, options, cleanup)


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


def _open(url, options, cleanup):
    storage, resolved, cleanup, dbkw = open_storage(url, options)
    if isinstance(storage, ClientStorage):
        _set_server_sync(storage, options.fresh_reads)
    dbkw.setdefault("cache_size", options.connection_cache_size)
    try:
        db = ZODB.DB(storage, **safety.db_kwargs(dbkw))  # only zpydb's classes load
    except ClientDisconnected as exc:  # ZODB.DB's first transaction pings the server
        storage.close()
        raise DisconnectedError(
            f"the connection to the ZEO server of {describe(url)} was lost while opening "
            f"the database ({exc}); nothing was changed; connect again when the server "
            f"is back") from None
    except BaseException:
        storage.close()
        raise
    opened = OpenDatabase(db, resolved, options, cleanup)
    opened.name = describe(url)  # the user's URL, not a generated TLS config file
    return opened


def open_storage(url, options=None):
    """Open the bare storage behind ``url``, without a ``ZODB.DB`` on top.

    ``ZODB.DB`` commits a root object into an empty storage; tools that need
    the storage untouched (``zpydb copy`` into an empty destination) use this.
    Returns ``(storage, resolved_url, cleanup_dirs, dbkw)``; the caller closes
    the storage and removes ``cleanup_dirs``.
    """
    options = options or Options()
    url = normalize_url(url)
    shown = url  # for messages: a TLS client turns the URL into a temporary zconfig file
    scheme = scheme_of(url)
    cleanup = []
    if scheme == "file":
        _prepare_file(url, options.read_only)
    if options.read_only and scheme in READ_ONLY_QUERY_SCHEMES:
        url = _add_query(url, read_only="1")
    if scheme == "zeo":
        url, cleanup = _zeo_url(url, options)
    elif scheme in RELSTORAGE_SCHEMES and "blob_dir=" not in url:
        blob_dir = options.blob_dir or tempfile.mkdtemp(prefix="zpydb-blobs-")
        cleanup = [] if options.blob_dir else [blob_dir]
        url = _add_query(url, blob_dir=blob_dir)  # RelStorage keeps blobs in the database
    elif scheme == "file":
        url, cleanup = _blob_filestorage_url(url)
    for directory in cleanup:  # also when the process exits without closing the database
        atexit.register(shutil.rmtree, directory, True)
    try:
        factory, dbkw = _resolve(url)
        storage = _open_storage(factory, shown)
    except BaseException:
        for directory in cleanup:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return storage, url, cleanup, dbkw


def _blob_filestorage_url(url):
    """``file://...?blobstorage_dir=`` as a FileStorage with its own ``blob_dir``.

    zodburi's file resolver wraps a FileStorage in ``ZODB.blob.BlobStorage``,
    whose ``undo`` fails (POSKeyError) on undo/redo/undo of a replaced blob;
    ``FileStorage(path, blob_dir=...)``, what runzeo uses, gets it right.  ZODB's
    own ``<filestorage>`` ZConfig section builds exactly that, so the URL is
    rewritten into one and resolved through zodburi's ``zconfig://`` scheme.
    Other file URLs (quota, demostorage, ...) go to zodburi unchanged.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if set(query) - {"blobstorage_dir", "read_only"} or "blobstorage_dir" not in query:
        return url, []
    lines = [f"path {parts.path}", f"blob-dir {query['blobstorage_dir']}"]
    if query.get("read_only") in ("1", "true"):
        lines.append("read-only true")
    config = "<filestorage main>\n  " + "\n  ".join(lines) + "\n</filestorage>\n"
    return _write_zconfig(config, "zpydb-fs-")


def _write_zconfig(config, prefix):
    """Write a ZConfig text to a private temp dir; return its zconfig:// URL and the dir."""
    config = config.replace("$", "$$")  # ZConfig substitutes $names; paths may hold a $
    config_dir = tempfile.mkdtemp(prefix=prefix)
    path = os.path.join(config_dir, "storage.conf")
    with open(path, "w") as stream:
        stream.write(config)
    return "zconfig://" + path, [config_dir]


def _add_query(url, **params):
    base, _, query = url.partition("?")
    merged = dict(parse_qsl(query))
    merged.update(params)
    return base + "?" + urlencode(merged)


def _set_server_sync(storage, enabled):
    """Turn ZEO's ``server_sync`` on for a storage zodburi already connected.

    zodburi's ``zeo://`` does not pass ``server_sync``, and ClientStorage reads
    the flag when a connection is made (``notify_connected`` then binds
    ``sync`` to ``ping``).  Set the flag for reconnects and bind it now, as
    ``notify_connected`` would have.
    """
    storage.server_sync = enabled
    if enabled and hasattr(storage, "ping"):
        storage.sync = storage.ping


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


def _resolve(url):
    try:
        return zodburi.resolve_uri(url)
    except (zodburi.NoResolverForScheme, ImportError):
        # no resolver registered, or its package (e.g. RelStorage) fails to import
        raise URLError(url, _missing_backend_hint(scheme_of(url))) from None
    except zodburi.UnknownDatabaseKeywords as exc:
        raise URLError(url, f"unknown URL parameter(s): {', '.join(exc.kw)}") from None
    except ZConfig.ConfigurationError as exc:
        raise URLError(describe(url), f"bad storage configuration: {exc}") from None
    except ssl.SSLError as exc:  # ZEO's <ssl> section builds its SSL context while parsing
        raise URLError(describe(url), f"the TLS files cannot be used: {exc}") from None


def _missing_backend_hint(scheme):
    extra = EXTRAS.get(scheme)
    if extra:
        return (f"no storage is installed for the {scheme!r} scheme; install it with: "
                f"pip install 'zpydb[{extra}]'")
    return (f"no storage is installed for the {scheme!r} scheme; known schemes: file, "
            f"memory, zeo, zconfig, demo, postgres")


def _open_storage(factory, url):
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


def _prepare_file(url, read_only=False):
    """Check an embedded database file before FileStorage touches it; make its folder.

    See :func:`check_database_file` (non-database files, blob directories that a
    new database would erase).  The API creates missing parent directories, as
    it always has; the ``zpydb`` command checks them first (cli.py).
    """
    parts = urlsplit(url)
    path = parts.path
    if not path:
        return
    query = dict(parse_qsl(parts.query))
    read_only = read_only or query.get("read_only") in ("1", "true")
    check_database_file(path, query.get("blobstorage_dir"), read_only=read_only)
    if not read_only:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


def _zeo_url(url, options):
    """Add zpydb's ZEO client defaults to a ``zeo://`` URL (or make it a zconfig for TLS)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    cleanup = []
    if options.tls:  # before anything is created
        _check_tls_options(parts, options)
    if "blob_dir" not in query:
        query["blob_dir"] = options.blob_dir or tempfile.mkdtemp(prefix="zpydb-blobs-")
        if not options.blob_dir:
            cleanup.append(query["blob_dir"])
    query.setdefault("wait_timeout", str(max(1, round(options.wait_timeout))))
    query.setdefault("cache_size", str(options.cache_size))
    if options.cache_dir:
        os.makedirs(options.cache_dir, exist_ok=True)
        query.setdefault("var", options.cache_dir)
        query.setdefault("client", "zpydb")
    if options.read_only:
        query["read_only"] = "1"
    else:
        # A read-only server (a replica) refuses read-write clients outright;
        # fall back to a read-only connection so writes get a clear ReadOnlyError.
        query.setdefault("read_only_fallback", "1")
    if options.tls:
        config_url, config_dir = _tls_zconfig_url(parts, query, options)
        return config_url, cleanup + [config_dir]
    base = f"zeo://{parts.netloc}{parts.path}"
    return base + "?" + urlencode(query), cleanup


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


def _tls_zconfig_url(parts, query, options):
    """Write a ZEO ``<clientstorage>`` section with ``<ssl>`` and return its zconfig:// URL."""
    _check_tls_options(parts, options)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or ZEO_DEFAULT_PORT
    hostname = options.tls_server_hostname or host
    lines = [f"server {host}:{port}", f"blob-dir {query['blob_dir']}",
             f"wait-timeout {query['wait_timeout']}",
             f"cache-size {query['cache_size']}"]
    if query.get("read_only") == "1":
        lines.append("read-only true")
    if query.get("read_only_fallback") == "1":
        lines.append("read-only-fallback true")
    if "var" in query:
        lines.append(f"cache-path {os.path.join(query['var'], query['client'] + '.zec')}")
    config = textwrap.dedent("""\
        %import ZEO
        <clientstorage zpydb>
          {settings}
          <ssl>
            certificate {cert}
            key {key}
            authenticate {ca}
            server-hostname {hostname}
          </ssl>
        </clientstorage>
        """).format(settings="\n  ".join(lines), cert=_tls_path(options.tls_cert),
                    key=_tls_path(options.tls_key), ca=_tls_path(options.tls_ca),
                    hostname=hostname)
    config_url, dirs = _write_zconfig(config, "zpydb-tls-")
    return config_url, dirs[0]
