"""The ``zpydb`` command: shell, export, import, and the commands other modules add.

    zpydb [shell] [URL] [-c STATEMENT]      the > prompt (default command)
    zpydb export [URL] [--path EXPR] [-o FILE.json] [--files-dir DIR]   JSON (stdout)
    zpydb import FILE.json [URL] [--path EXPR] [--files-dir DIR]
    zpydb serve ... / zpydb certs DIR       (server.py)
    zpydb copy SRC_URL DST_URL              (copy.py)

Every command takes the connection options of :func:`zpydb.connect`
(``--read-url``, ``--wait-timeout``, ``--local-reads``, TLS files).  Errors print
one line and exit with status 1; no traceback for expected failures.
"""

import argparse
import importlib
import sys

from . import export
from .database import connect
from .errors import Error
from .shell import run_shell

#: Modules that add their own subcommands through ``register_commands(subparsers)``.
COMMAND_MODULES = ("zpydb.server", "zpydb.copy")
COMMANDS = {"shell", "export", "import", "serve", "certs", "copy"}


def build_parser():
    parser = argparse.ArgumentParser(prog="zpydb", description="A Python-syntax database on ZODB.")
    subparsers = parser.add_subparsers(dest="command")

    shell = subparsers.add_parser("shell", help="the interactive > prompt (default)")
    shell.add_argument("url", nargs="?", help="database URL (default: $ZPYDB_URL or ./var/Data.fs)")
    shell.add_argument("-c", dest="statement", help="run STATEMENT and exit")
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

    for name in COMMAND_MODULES:
        importlib.import_module(name).register_commands(subparsers)
    return parser


def _connection_options(parser):
    group = parser.add_argument_group("connection")
    group.add_argument("--read-url", help="read-only replica for reads")
    group.add_argument("--wait-timeout", type=float, help="seconds to wait for a ZEO server")
    group.add_argument("--local-reads", action="store_true",
                       help="read from the local cache without asking the server first")
    group.add_argument("--tls-cert", help="client certificate (ZEO TLS)")
    group.add_argument("--tls-key", help="client key")
    group.add_argument("--tls-ca", help="CA that signed the server certificate")


def _connect(args):
    options = {}
    if args.wait_timeout is not None:
        options["wait_timeout"] = args.wait_timeout
    if args.local_reads:
        options["fresh_reads"] = False
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(args, name):
            options[name] = getattr(args, name)
    return connect(args.url, read_url=args.read_url, **options)


def _shell(args):
    with _connect(args) as db:
        return run_shell(db, command=args.statement)


def _export(args):
    context = export.export_context(args.output, args.files_dir)
    steps = export.parse_path(args.path)
    with _connect(args) as db:
        if args.output:
            with open(args.output, "w") as stream:
                export.export_json(db, steps, stream, indent=args.indent,
                                   progress=not args.no_progress, context=context)
        else:
            export.export_json(db, steps, indent=args.indent,
                               progress=not args.no_progress, context=context)
    return 0


def _import(args):
    steps = export.parse_path(args.path)
    source = None if args.file == "-" else args.file
    context = export.import_context(source, args.files_dir)
    with _connect(args) as db:
        if args.file == "-":
            count = export.import_json(db, sys.stdin, steps, progress=not args.no_progress,
                                       context=context)
        else:
            with open(args.file) as stream:
                count = export.import_json(db, stream, steps, progress=not args.no_progress,
                                           context=context)
    print(f"imported {count} item(s) into {args.path}", file=sys.stderr)
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "shell")  # `zpydb`, `zpydb URL` and `zpydb -c ...` open the shell
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (Error, OSError) as exc:
        print(f"zpydb: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
