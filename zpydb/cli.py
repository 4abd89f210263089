"""The ``zpydb`` command: shell, export, import, and the commands other modules add.

    zpydb [shell] [URL] [-c STATEMENTS]     the > prompt (default command)
    zpydb export [URL] [--path EXPR] [-o FILE.json] [--files-dir DIR]   JSON (stdout)
    zpydb import FILE.json [URL] [--path EXPR] [--files-dir DIR]
    zpydb serve ... / zpydb certs DIR       (server.py)
    zpydb copy SRC_URL DST_URL              (copy.py)
    zpydb pack URL [--days N]               drop history older than N days (pack.py)
    zpydb watch [URL] [PATH] [--since ID] [--timeout S]   changes as JSON lines (feed.py)
    zpydb web [URL] [--address H:P] [--tokens FILE]   REST + console over HTTP (web/)
    zpydb log [URL] [PATH] [-n N] [--json]  the last changes (of the database, or of PATH)
    zpydb show [URL] PATH --at WHEN         the value at PATH as it was at WHEN (JSON)
    zpydb diff [URL] A [B] [--path PATH]    the changes from A to B (default: now), JSON Patch
    zpydb --version

WHEN is an id from ``zpydb log``, a POSIX timestamp or an ISO date/time
(``2024-05-01T12:00``, local time); see docs/history.md.

Every command takes the connection options of :func:`zpydb.connect`
(``--read-url``, ``--wait-timeout``, ``--local-reads``, TLS files).

Bad arguments never turn into databases.  Every argument is checked before
anything is opened or created, and a bad one prints ONE line on stderr and
exits with a non-zero status (2 for a usage error, 1 for anything else):

* ``zpydb WORD``: a first argument that is not a command is a database for the
  shell only if it looks like one: a URL (``zeo://...``, ``host:port``), an
  existing file, a path with a ``/``, or a name ending in ``.fs``.  Anything
  else is an unknown command (``zpydb exprot`` -> "did you mean 'export'?").
* A database path that does not exist is created only by commands that write
  (``shell``, ``import``, the ``copy`` destination), only if its name ends in
  ``.fs`` and only in a folder that exists.  ``export`` and the ``copy`` source
  need an existing database.  An existing file that is not a database, or a
  directory, is refused.
* A command that created a new database and then failed (an ``import`` of bad
  JSON, a failed ``copy``) removes the new files again.
* TLS files, JSON files, output folders and ``--files-dir`` are checked first
  and named in the message (as given and as an absolute path).
"""

import argparse
import difflib
import importlib
import json
import os
import re
import sys
import tempfile
from urllib.parse import urlsplit

from . import __version__, export, feed, timetravel
from . import storage as _storage
from .database import connect
from .errors import Error, URLError
from .shell import run_shell

#: Modules that add their own subcommands through ``register_commands(subparsers)``.
COMMAND_MODULES = ("zpydb.server", "zpydb.copy", "zpydb.web")
COMMANDS = ("shell", "export", "import", "serve", "certs", "copy", "pack", "watch", "web",
            "log", "show", "diff")
NEW_DATABASE_SUFFIX = ".fs"


class UsageError(Error):
    """A command line that names no command, or an argument that is not usable."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser():
    parser = _Parser(prog="zpydb", description="A Python-syntax database on ZODB.")
    parser.add_argument("--version", action="version", version=f"zpydb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    shell = subparsers.add_parser("shell", help="the interactive > prompt (default)")
    shell.add_argument("url", nargs="?", help="database URL (default: $ZPYDB_URL or ./var/Data.fs)")
    shell.add_argument("-c", dest="statement",
                       help="run STATEMENTS (a script: ; or newlines) and exit")
    _connection_options(shell)
    shell.set_defaults(func=_shell)

    dump = subparsers.add_parser("export", help="write the database (or a path) as JSON")
    dump.add_argument("url", nargs="?")
    dump.add_argument("--path", default="db", help="e.g. \"db['users']\" (default: db)")
    dump.add_argument("--indent", type=int, default=None)
    dump.add_argument("--no-progress", action="store_true")
    dump.add_argument("-o", "--output", help="write the JSON to this file (default: stdout); "
                                             "files over 1 MB go to OUTPUT.files/ beside it")
    dump.add_argument("--files-dir", help="write every stored file into DIR (referenced from "
                                          "the JSON) instead of inline base64")
    _connection_options(dump)
    dump.set_defaults(func=_export)

    load = subparsers.add_parser("import", help="read JSON into the database (one transaction)")
    load.add_argument("file", help="JSON file, or - for stdin")
    load.add_argument("url", nargs="?")
    load.add_argument("--path", default="db", help="where to store it (default: db, merging keys)")
    load.add_argument("--no-progress", action="store_true")
    load.add_argument("--files-dir", help="where the exported files are (default: the paths "
                                          "in the JSON, relative to the JSON file)")
    _connection_options(load)
    load.set_defaults(func=_import)

    squeeze = subparsers.add_parser(
        "pack", help="pack a database: drop old revisions and undo history",
        description="Pack the database at URL (a Data.fs not open elsewhere, zeo://..., "
                    "postgres://...): keep the current data and the last DAYS days of "
                    "history; undo cannot reach further back afterwards.")
    squeeze.add_argument("url", metavar="URL", help="the database to pack")
    squeeze.add_argument("--days", type=float, default=0,
                         help="days of history (and undo) to keep (default: 0, none)")
    _connection_options(squeeze)
    squeeze.set_defaults(func=_pack_command)

    follow = subparsers.add_parser(
        "watch", help="print every change under a path as it is committed (JSON lines)",
        description="Print each committed change under PATH (default: db, everything) as "
                    "one JSON object per line: id, time, user, note, kind, deleted, value, "
                    "patch.  Runs until Ctrl-C, or --timeout idle seconds.  An embedded "
                    "Data.fs is read as it is now (another process cannot write it while "
                    "it is watched live): serve it to watch live.")
    follow.add_argument("where", nargs="*", metavar="[URL] [PATH]",
                        help="database URL (default: $ZPYDB_URL or ./var/Data.fs) and/or "
                             "a path such as \"db['cfg']\"")
    follow.add_argument("--since", help="start after the change with this id (else: now)")
    follow.add_argument("--timeout", type=float, default=None,
                        help="stop after S seconds without a change")
    _connection_options(follow)
    follow.set_defaults(func=_watch_command)

    _time_travel_commands(subparsers)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_commands(subparsers)
    return parser


def _time_travel_commands(subparsers):
    log = subparsers.add_parser(
        "log", help="the last changes of the database, or of one path",
        description="The last N changes, newest first: of the whole database (id, time, "
                    "user, kind, note) or of the value at PATH (with the value after each).")
    log.add_argument("args", nargs="*", metavar="[URL] [PATH]",
                     help="the database (default: $ZPYDB_URL or ./var/Data.fs) and a path "
                          "such as \"db['cfg']\"")
    log.add_argument("-n", type=int, default=10, help="how many changes (default: 10)")
    log.add_argument("--json", action="store_true", help="a JSON array instead of lines")
    _connection_options(log)
    log.set_defaults(func=_log)

    show = subparsers.add_parser("show", help="the value at a path as it was at a time (JSON)")
    show.add_argument("args", nargs="+", metavar="[URL] PATH")
    show.add_argument("--at", required=True, metavar="WHEN",
                      help="an id from `zpydb log`, a POSIX timestamp or an ISO date/time")
    show.add_argument("--indent", type=int, default=None)
    _connection_options(show)
    show.set_defaults(func=_show)

    diff = subparsers.add_parser(
        "diff", help="the changes between two times, as a JSON Patch (RFC 6902)")
    diff.add_argument("args", nargs="+", metavar="[URL] A [B]",
                      help="two times (WHEN, as for show; B defaults to now)")
    diff.add_argument("--path", default="db", help="a subtree, e.g. \"db['cfg']\" (default: db)")
    diff.add_argument("--indent", type=int, default=None)
    _connection_options(diff)
    diff.set_defaults(func=_diff)


def _connection_options(parser):
    group = parser.add_argument_group("connection")
    group.add_argument("--read-url", help="read-only replica for reads")
    group.add_argument("--wait-timeout", type=float, help="seconds to wait for a ZEO server")
    group.add_argument("--local-reads", action="store_true",
                       help="read from the local cache without asking the server first")
    group.add_argument("--tls-cert", help="client certificate (ZEO TLS)")
    group.add_argument("--tls-key", help="client key")
    group.add_argument("--tls-ca", help="CA that signed the server certificate")


# -- which command ---------------------------------------------------------------------

def looks_like_database(arg):
    """True when ``zpydb ARG`` means "open the shell on ARG" rather than a command.

    A URL (``scheme://``, ``demo:``, ``host:port``), an existing file or
    directory, a path containing a ``/``, or a name ending in ``.fs``.
    """
    if "://" in arg or arg.startswith("demo:"):
        return True
    host, sep, port = arg.rpartition(":")
    if sep and port.isdigit() and "/" not in arg:
        return True
    return os.path.lexists(arg) or os.sep in arg or "/" in arg or arg.endswith(NEW_DATABASE_SUFFIX)


def route(argv):
    """The argument list with the command made explicit (``shell`` by default)."""
    if not argv:
        return ["shell"]
    first = argv[0]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    if first.startswith("-") or looks_like_database(first):
        return ["shell", *argv]  # `zpydb`, `zpydb URL` and `zpydb -c ...` open the shell
    close = difflib.get_close_matches(first, COMMANDS, n=1, cutoff=0.6)
    if close:
        raise UsageError(f"unknown command {first!r}; did you mean {close[0]!r}? "
                         f"(commands: {', '.join(COMMANDS)})")
    raise UsageError(f"{first!r} is not a command ({', '.join(COMMANDS)}) nor a database "
                     f"(no such file; a new database file name must end in "
                     f"{NEW_DATABASE_SUFFIX})")


# -- checking arguments before anything is opened ---------------------------------------

def _shown(given, path):
    """``'rel/x' (/abs/rel/x)`` for a relative path, the path alone for an absolute one."""
    return repr(given) if os.path.isabs(given) else f"{given!r} ({path})"


def check_database(value, *, may_create):
    """Check a database argument before anything is opened; raise UsageError/URLError.

    ``value``: the URL or path as typed (None: ``$ZPYDB_URL`` or ``./var/Data.fs``).
    ``may_create``: the command may create a new database (shell, import, copy's
    destination).  See the module docstring for the rules.
    """
    default = value is None and not os.environ.get(_storage.ENV_URL)
    if value is None:
        value = os.environ.get(_storage.ENV_URL)
    url = _storage.normalize_url(value)
    scheme = _storage.scheme_of(url)
    if scheme == "zconfig":
        config = urlsplit(url).path
        if not os.path.isfile(config):
            raise UsageError(f"no such configuration file: {_shown(config, os.path.abspath(config))}")
        return
    if scheme != "file":
        return
    path = urlsplit(url).path
    shown = "the default database ./var/Data.fs" if default else _shown(value, path)
    if os.path.isdir(path):
        raise UsageError(f"{shown} is a directory, not a database file")
    if os.path.exists(path):
        _storage.check_database_file(path)  # a non-database file is refused, untouched
        return
    if not may_create:
        raise UsageError(f"no such database: {shown}")
    if default:
        return  # the default ./var/Data.fs is created with its folder
    if "://" not in value and not path.endswith(NEW_DATABASE_SUFFIX):
        raise UsageError(f"no such database: {shown} (a new database file name must end in "
                         f"{NEW_DATABASE_SUFFIX})")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise UsageError(f"no such folder: {folder} (for the new database {value!r}); "
                         f"create it first")
    blob_dir = dict(_storage.parse_qsl(urlsplit(url).query)).get("blobstorage_dir")
    _storage.check_database_file(path, blob_dir)


def check_input_file(given, what):
    path = os.path.abspath(given)
    if os.path.isdir(path):
        raise UsageError(f"{what} {_shown(given, path)} is a directory")
    if not os.path.isfile(path):
        raise UsageError(f"no such {what}: {_shown(given, path)}")


def check_input_dir(given, what):
    path = os.path.abspath(given)
    if not os.path.isdir(path):
        raise UsageError(f"no such {what} directory: {_shown(given, path)}")


def check_output(given, what, directory=False):
    """An output path whose folder exists (nothing is created for a typo'd folder)."""
    path = os.path.abspath(given)
    if not directory and os.path.isdir(path):
        raise UsageError(f"{what} {_shown(given, path)} is a directory")
    if directory and os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} {_shown(given, path)} exists and is not a directory")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise UsageError(f"no such folder: {folder} (for the {what} {given!r})")


def check_arguments(args):
    """Check every argument of ``args`` before the command runs (nothing created yet)."""
    command = args.command
    for name in ("tls_cert", "tls_key", "tls_ca"):
        given = getattr(args, name, None)
        if given:
            check_input_file(given, "--" + name.replace("_", "-") + " file")
    if command == "shell":
        check_database(args.url, may_create=True)
    elif command == "export":
        check_database(args.url, may_create=False)
        if args.output:
            check_output(args.output, "output file")
        if args.files_dir:
            check_output(args.files_dir, "--files-dir", directory=True)
    elif command == "import":
        if args.file != "-":
            check_input_file(args.file, "JSON file")
        if args.files_dir:
            check_input_dir(args.files_dir, "--files-dir")
        check_database(args.url, may_create=True)
    elif command == "copy":
        check_database(args.src_url, may_create=False)
        check_database(args.dst_url, may_create=True)
    elif command == "pack":
        check_database(args.url, may_create=False)
        if not args.days >= 0 or args.days == float("inf"):
            raise UsageError(f"--days must be a number of days >= 0, not {args.days:g}")
    elif command == "watch":
        args.url, args.path = split_watch_arguments(args.where)
        if args.since is not None:
            try:
                feed.parse_id(args.since)
            except Error:
                raise UsageError(f"--since must be a change id (16 hex digits), not "
                                 f"{args.since!r}") from None
        if args.timeout is not None and not 0 <= args.timeout < float("inf"):
            raise UsageError(f"--timeout must be a number of seconds >= 0, not "
                             f"{args.timeout:g}")
        check_database(args.url, may_create=False)
    elif command == "serve":
        if args.config:
            check_input_file(args.config, "--config file")
        if args.data_dir:
            check_output(args.data_dir, "--data-dir", directory=True)
    elif command == "certs":
        check_output(args.directory, "certificate directory", directory=True)
    elif command == "web":
        from . import web
        check_database(args.url, may_create=True)
        try:
            web.check_arguments(args)
        except web.WebUsageError as exc:
            raise UsageError(str(exc)) from None
    elif command in ("log", "show", "diff"):
        _time_travel_arguments(args)
        check_database(args.url, may_create=False)
    if getattr(args, "read_url", None):
        check_database(args.read_url, may_create=False)


# -- the commands -------------------------------------------------------------------------

def _connect(args, read_only=False):
    options = {}
    if args.wait_timeout is not None:
        options["wait_timeout"] = args.wait_timeout
    if args.local_reads:
        options["fresh_reads"] = False
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(args, name):
            options[name] = getattr(args, name)
    if read_only:
        options["read_only"] = True
    return connect(args.url, read_url=args.read_url, **options)


def _shell(args):
    with _connect(args) as db:
        return run_shell(db, command=args.statement)


def _export(args):
    context = export.export_context(args.output, args.files_dir)
    steps = export.parse_path(args.path)
    # An embedded file is read read-only: no lock, so it works while a shell has it open.
    url = _storage.normalize_url(args.url)
    read_only = _storage.scheme_of(url) == "file"
    made = [d for d in (context.get("files_dir"), context.get("default_files_dir"))
            if d and not os.path.exists(d)]
    with _connect(args, read_only=read_only) as db:
        if not args.output:
            export.export_json(db, steps, indent=args.indent, progress=not args.no_progress,
                               context=context)
            return 0
        # Written beside the target and renamed into place: a failed export leaves nothing.
        folder = os.path.dirname(os.path.abspath(args.output))
        fd, partial = tempfile.mkstemp(dir=folder, prefix=".zpydb-export-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as stream:
                export.export_json(db, steps, stream, indent=args.indent,
                                   progress=not args.no_progress, context=context)
            os.replace(partial, args.output)
        except BaseException:
            _storage.remove_paths([partial, *made])
            raise
    return 0


def _import(args):
    steps = export.parse_path(args.path)
    source = None if args.file == "-" else args.file
    context = export.import_context(source, args.files_dir)
    created = _storage.paths_created_by_opening(_storage.normalize_url(args.url))
    try:
        with _connect(args) as db:
            # Read as bytes: import checks UTF-8 itself (a BOM is allowed), whatever the locale.
            if args.file == "-":
                count = export.import_json(db, sys.stdin.buffer, steps,
                                           progress=not args.no_progress, context=context)
            else:
                with open(args.file, "rb") as stream:
                    count = export.import_json(db, stream, steps,
                                               progress=not args.no_progress, context=context)
    except BaseException:
        _storage.remove_paths(created)  # a new database that got nothing is removed again
        raise
    print(f"imported {count} item(s) into {args.path}", file=sys.stderr)
    return 0


def _pack_command(args):
    url = _storage.normalize_url(args.url)
    path = urlsplit(url).path if _storage.scheme_of(url) == "file" else None
    before = os.path.getsize(path) if path else None
    with _connect(args) as db:
        db.pack(days=args.days)
        name = db._session.name
    sizes = f"; {path}: {before:,} -> {os.path.getsize(path):,} bytes" if path else ""
    print(f"zpydb pack: packed {name}, keeping {args.days:g} day(s) of history{sizes}")
    return 0


def split_watch_arguments(where):
    """``[URL] [PATH]`` -> (url or None, path steps); one argument is a PATH when it
    starts with ``db`` (``db``, ``db['cfg']``), else the URL."""
    if len(where) > 2:
        raise UsageError(f"watch takes at most a URL and a PATH, not {len(where)} arguments")
    url, path = None, "db"
    if len(where) == 2:
        url, path = where
    elif len(where) == 1:
        if where[0] == "db" or where[0].startswith("db["):
            path = where[0]
        else:
            url = where[0]
    try:
        return url, export.parse_path(path)
    except Error as exc:
        raise UsageError(str(exc)) from None


# -- log, show, diff (timetravel.py, pathhistory.py) ----------------------------------------

def _when(text):
    try:
        return timetravel.parse_when(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _is_when(text):
    try:
        timetravel.parse_when(text)
    except ValueError:
        return False
    return True


def _is_path(text):
    """``db`` or ``db[...``: a path (a database named ``db.fs`` is not one)."""
    return re.fullmatch(r"\s*db(\[.*)?", text, re.S) is not None


def _steps(text):
    try:
        return export.parse_path(text)
    except Error as exc:
        raise UsageError(str(exc)) from None


def _watch_command(args):
    url = _storage.normalize_url(args.url)
    embedded = _storage.scheme_of(url) == "file"
    timeout = args.timeout
    if embedded:  # read-only: no lock, so it works beside a shell; it sees the file as it is now
        timeout = 0
        print(f"zpydb watch: {_storage.describe(url)} is an embedded file: printing the changes "
              f"committed so far; serve it (zpydb serve) to watch live", file=sys.stderr)
    with _connect(args, read_only=embedded) as db:
        path = db
        for step in args.path:
            path = path[step]
        with path.watch(since=args.since, timeout=timeout) as changes:
            for change in changes:
                line = _change_line(change)
                try:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                except BrokenPipeError:  # `zpydb watch | head`: the reader has gone
                    sys.stdout = open(os.devnull, "w")
                    return 0
    return 0


def _change_line(change):
    try:
        return json.dumps(feed.change_json(change), allow_nan=False)
    except ValueError:
        raise Error(f"change {change['id']}: the value holds NaN or infinity, which JSON "
                    f"cannot write") from None
def _time_travel_arguments(args):
    """Sort the positional arguments of log/show/diff into url, steps and times.

    A URL is optional in front: ``log`` tells a path by its ``db``, ``diff``
    its times by their form (an id, a number, an ISO date).
    """
    given, command = list(args.args), args.command
    args.url, args.steps, args.a, args.b = None, (), None, None
    if command == "log":
        if len(given) > 2:
            raise UsageError(f"log takes [URL] [PATH], not {len(given)} arguments")
        paths = [g for g in given if _is_path(g)]
        others = [g for g in given if not _is_path(g)]
        if len(paths) > 1 or len(others) > 1:
            raise UsageError(f"log takes [URL] [PATH] (a path like db['x']), not "
                             f"{' '.join(map(repr, given))}")
        args.steps = _steps(paths[0]) if paths else ()
        args.url = others[0] if others else None
        if args.n < 0:
            raise UsageError(f"-n must be >= 0, not {args.n}")
    elif command == "show":
        if len(given) > 2:
            raise UsageError(f"show takes [URL] PATH --at WHEN, not {len(given)} arguments")
        args.steps = _steps(given.pop())
        args.url = given.pop() if given else None
        args.a = _when(args.at)
    else:
        if len(given) > 3:
            raise UsageError(f"diff takes [URL] A [B], not {len(given)} arguments")
        if len(given) == 3 or (len(given) == 2 and not all(_is_when(g) for g in given)):
            args.url = given.pop(0)
        args.a = _when(given[0])
        args.b = _when(given[1]) if len(given) > 1 else None
        args.steps = _steps(args.path)


def _open_for_reading(args):
    """Read-only for an embedded file (no lock: works while a shell has it open)."""
    url = _storage.normalize_url(args.url)
    return _connect(args, read_only=_storage.scheme_of(url) == "file")


def _log(args):
    with _open_for_reading(args) as db:
        path = db
        for step in args.steps:
            path = path[step]
        changes = path.history(args.n)
    if args.json:
        print(json.dumps([_json_change(change) for change in changes], indent=1))
        return 0
    for change in changes:
        print(_log_line(change, bool(args.steps)))
    return 0


def _json_change(change):
    change = dict(change, time=change["time"].isoformat())
    if "value" in change:
        change["value"] = export.encode(change["value"])
    return change


def _log_line(change, of_path):
    head = f"{change['id']}  {change['time']:%Y-%m-%d %H:%M:%S}  {change['user'] or '-'}"
    if not of_path:
        return f"{head}  {change['kind']:<5}  {change['note']}"
    value = "(deleted)" if change["deleted"] else json.dumps(export.encode(change["value"]))
    if len(value) > 200:
        value = value[:197] + "..."
    return f"{head}  {change['note']}  -> {value}"


def _show(args):
    with _open_for_reading(args) as db:
        with db.at(args.a) as old:
            export.export_json(old, args.steps, indent=args.indent, progress=False)
    return 0


def _diff(args):
    with _open_for_reading(args) as db:
        path = db
        for step in args.steps:
            path = path[step]
        patch = path.diff(args.a, args.b)
    print(json.dumps(patch, indent=args.indent))
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = route(argv)
    except UsageError as exc:
        print(f"zpydb: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
    except UsageError as exc:
        print(f"zpydb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except URLError as exc:
        print(f"zpydb {args.command}: error: {exc}", file=sys.stderr)
        return 1
    try:
        return args.func(args)
    except (Error, OSError) as exc:
        print(f"zpydb: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _one_line(exc):
    return " ".join(str(exc).split())
