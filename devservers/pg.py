"""A throw-away PostgreSQL server for tests and benchmarks (no pytest in here).

    from devservers.pg import PostgresCluster, find_pg_bin

    if find_pg_bin():
        with PostgresCluster() as pg:
            pg.create_database("zpydb_test")
            url = pg.url("zpydb_test")   # postgres://zpydb:...@127.0.0.1:PORT/zpydb_test
            ...

The cluster lives in a temporary directory: ``initdb`` creates it (as the
``postgres`` OS user when we are root, because PostgreSQL refuses to run as
root), ``pg_ctl start`` serves it on 127.0.0.1 and a free port only, with its
unix socket inside the temporary directory, and :meth:`PostgresCluster.stop`
stops the server by its PID and removes the directory.  Every step is bounded
in time.  Connections over TCP use password (scram-sha-256) authentication as a
real deployment would; the role is a superuser so it can create databases.

The URL form is RelStorage's zodburi one (``relstorage/zodburi_resolver.py``):
``postgres://USER:PASSWORD@HOST:PORT/DBNAME?keep_history=true&...``; the scheme
is ``postgres``, not ``postgresql``.
"""

import atexit
import glob
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from urllib.parse import urlencode

from devservers.ports import free_port

#: The role the cluster is created with (a superuser).
DEFAULT_USER = "zpydb"
#: How long starting or stopping the server may take.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
#: How long any other single command (initdb, createdb) may take.
COMMAND_TIMEOUT = 120.0

#: Server settings for a disposable test cluster: durability traded for speed,
#: network only on the loopback address.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


class PostgresError(RuntimeError):
    """The test cluster could not be created, started or stopped."""


def find_pg_bin():
    """The directory holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is missing.

    Looks in Debian's ``/usr/lib/postgresql/VERSION/bin`` (newest version first),
    then on ``$PATH``.
    """
    candidates = glob.glob("/usr/lib/postgresql/*/bin")

    def version(path):
        name = os.path.basename(os.path.dirname(path))
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    for directory in sorted(candidates, key=version, reverse=True):
        if all(os.access(os.path.join(directory, tool), os.X_OK)
               for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(initdb))
    return None


class PostgresCluster:
    """A private PostgreSQL server in a temporary directory.

    ``PostgresCluster(start=True)`` runs initdb and starts the server right away;
    use it as a context manager (or call :meth:`stop`) so the server and the
    directory go away.  An ``atexit`` hook stops a server that was forgotten.
    """

    def __init__(self, bin_dir=None, user=DEFAULT_USER, password=None, host="127.0.0.1",
                 settings=None, start=True):
        self.bin_dir = bin_dir or find_pg_bin()
        if not self.bin_dir:
            raise PostgresError("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                                "run scripts/ensure-postgres.sh")
        self.user = user
        self.password = password or secrets.token_hex(12)
        self.host = host
        self.port = None
        self.settings = dict(FAST_SETTINGS, **(settings or {}))
        self.as_postgres = os.geteuid() == 0
        self.base_dir = None
        self.pid = None
        self._atexit = None
        if start:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise

    # -- paths ---------------------------------------------------------------------------

    @property
    def data_dir(self):
        return os.path.join(self.base_dir, "data")

    @property
    def socket_dir(self):
        return self.base_dir

    @property
    def log_file(self):
        return os.path.join(self.base_dir, "postgres.log")

    def _tool(self, name):
        return os.path.join(self.bin_dir, name)

    # -- running commands ----------------------------------------------------------------

    def _run(self, argv, timeout=COMMAND_TIMEOUT, check=True):
        """Run ``argv`` as the ``postgres`` OS user when we are root; bounded in time."""
        if self.as_postgres:
            if shutil.which("runuser"):
                argv = ["runuser", "-u", "postgres", "--"] + list(argv)
            else:
                argv = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(argv)]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        try:
            result = subprocess.run(argv, cwd=self.base_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    timeout=timeout, text=True)
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(f"{shlex.join(argv)} took more than {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            raise PostgresError(f"{shlex.join(argv)} failed ({result.returncode}):\n"
                                f"{result.stdout.strip()}")
        return result

    def _chown(self, path):
        if self.as_postgres:
            shutil.chown(path, "postgres", "postgres")

    # -- life cycle ----------------------------------------------------------------------

    def start(self):
        """initdb, start the server on a free port, wait until it accepts connections."""
        if self.base_dir is not None:
            raise PostgresError(f"this cluster is already started ({self.base_dir}); "
                                f"PostgresCluster() starts it unless start=False")
        self.base_dir = tempfile.mkdtemp(prefix="zpydb-pg-")
        os.chmod(self.base_dir, 0o755)
        self._chown(self.base_dir)
        pwfile = os.path.join(self.base_dir, "pwfile")
        with open(pwfile, "w") as stream:
            stream.write(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        self._run([self._tool("initdb"), "-D", self.data_dir, "-U", self.user,
                   f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "--no-locale", "-E", "UTF8", "--no-sync"])
        os.unlink(pwfile)
        self._atexit = atexit.register(self.stop)
        last_error = None
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port(self.host)
            try:
                self._start_server()
                return self
            except PostgresError as exc:
                last_error = exc
                if "could not bind" not in self._log_tail():
                    raise
                self._kill_postmaster()
        raise last_error

    def _start_server(self):
        options = {"listen_addresses": self.host, "port": str(self.port),
                   "unix_socket_directories": self.socket_dir, **self.settings}
        opts = " ".join(f"-c {key}={shlex.quote(value)}" for key, value in options.items())
        # -W: pg_ctl returns at once; we poll with our own deadline below.
        self._run([self._tool("pg_ctl"), "start", "-W", "-D", self.data_dir,
                   "-l", self.log_file, "-o", opts], timeout=START_TIMEOUT)
        self.wait_ready(START_TIMEOUT)

    def wait_ready(self, timeout=START_TIMEOUT):
        """Poll until the server accepts a TCP connection with our credentials."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            pid = self._read_pid()
            if pid:
                self.pid = pid
            if self._ready():
                return
            if self.pid and not _alive(self.pid):
                raise PostgresError(f"postgres exited while starting:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise PostgresError(f"postgres did not accept connections within "
                                    f"{timeout:.0f}s:\n{self._log_tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _ready(self):
        try:
            import psycopg2
        except ImportError:
            result = self._run([self._tool("pg_isready"), "-q", "-h", self.host,
                                "-p", str(self.port), "-t", "2"], timeout=10, check=False)
            return result.returncode == 0
        try:
            conn = psycopg2.connect(**self.dsn("postgres"), connect_timeout=2)
        except psycopg2.OperationalError:
            return False
        conn.close()
        return True

    def _read_pid(self):
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as stream:
                return int(stream.readline().strip())
        except (OSError, ValueError):
            return None

    def _log_tail(self, lines=20):
        try:
            with open(self.log_file, errors="replace") as stream:
                return "".join(stream.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self):
        """Stop the server (``pg_ctl stop -m fast``, else kill its PID); remove the directory."""
        if self._atexit is not None:
            atexit.unregister(self.stop)
            self._atexit = None
        if self.base_dir is None:
            return
        try:
            pid = self._read_pid() or self.pid
            if pid and _alive(pid):
                try:
                    self._run([self._tool("pg_ctl"), "stop", "-D", self.data_dir, "-m", "fast",
                               "-w", "-t", str(int(STOP_TIMEOUT))],
                              timeout=STOP_TIMEOUT + 5, check=False)
                except PostgresError:
                    pass
                self._kill_postmaster(pid)
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
            self.pid = None

    def restart(self):
        """Crash the server (SIGQUIT: an immediate shutdown, no checkpoint) and start it
        again on the same port and data: clients see their connections break."""
        if self.base_dir is None:
            raise PostgresError("this cluster is not started")
        self._kill_postmaster()
        # an immediate shutdown may leave postmaster.pid behind: wait_ready would take
        # the dead PID in it for the new server's
        try:
            os.unlink(os.path.join(self.data_dir, "postmaster.pid"))
        except FileNotFoundError:
            pass
        self.pid = None
        self._start_server()
        return self

    def _kill_postmaster(self, pid=None):
        """SIGQUIT (immediate shutdown), then SIGKILL, the postmaster; wait for it to go."""
        pid = pid or self._read_pid() or self.pid
        if not pid:
            return
        for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if not _alive(pid):
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # -- databases and URLs ----------------------------------------------------------------

    def dsn(self, dbname):
        """psycopg2.connect() keyword arguments for ``dbname``."""
        return {"host": self.host, "port": self.port, "user": self.user,
                "password": self.password, "dbname": dbname}

    def url(self, dbname, **query):
        """The zodburi URL RelStorage resolves, e.g. ``postgres://u:p@127.0.0.1:5433/db``.

        Keyword arguments become query parameters (``keep_history="true"``,
        ``cache_local_mb=0``, ...; see relstorage/zodburi_resolver.py).
        """
        # RelStorage builds a libpq DSN from urlsplit()'s username/password as they are:
        # no percent-decoding, values quoted with '...'.  So no quote() here, and no
        # characters that would break either (our generated password is hex).
        for value in (self.user, self.password):
            if any(ch in value for ch in "/?#'\\ %"):
                raise ValueError(f"{value!r} cannot be written into a postgres:// URL")
        url = f"postgres://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"
        if query:
            url += "?" + urlencode({k: _query_value(v) for k, v in query.items()})
        return url

    def _admin(self, sql):
        """Run one statement outside a transaction in the maintenance database."""
        import psycopg2

        conn = psycopg2.connect(**self.dsn("postgres"), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SET statement_timeout = '60s'")
                cursor.execute(sql)
        finally:
            conn.close()

    def create_database(self, name):
        """Create an empty database ``name`` owned by our role; returns its URL."""
        _check_name(name)
        try:
            self._admin(f'CREATE DATABASE "{name}"')
        except ImportError:
            self._run([self._tool("createdb"), "-h", self.socket_dir, "-p", str(self.port),
                       "-U", self.user, name])
        return self.url(name)

    def drop_database(self, name):
        """Drop ``name`` (closing its remaining connections); no error when it is missing."""
        _check_name(name)
        try:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except ImportError:
            self._run([self._tool("dropdb"), "-h", self.socket_dir, "-p", str(self.port),
                       "-U", self.user, "--if-exists", "--force", name])

    def __repr__(self):
        state = f"127.0.0.1:{self.port}" if self.base_dir else "stopped"
        return f"<PostgresCluster {state} {self.base_dir or ''}>"


def _query_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_name(name):
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and underscores")


def _alive(pid):
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
