"""``zpydb serve`` and ``zpydb certs``: a thin wrapper over ZEO's ``runzeo``.

The server is stock ZEO: ``runzeo`` with one of the bundled ZConfig files in
``zeo_configs/`` (``zeo.conf`` read-write, ``replica.conf`` read-only replica,
``zeo-tls.conf`` TLS with client certificates).  This module only picks the
config, applies overrides and runs ``runzeo`` in the foreground.  Every config
it runs must start with ``%import zpydb.zeo_guard``, which hardens runzeo from
inside (msgpack only, allowed classes only; see zpydb/zeo_guard and
docs/security.md); a config without that line is refused.

Overrides use runzeo's own command line, so the bundled files are never copied
or rewritten:

* ``-a HOST:PORT`` replaces the ``<zeo>`` listen address;
* ``-X section-type/key=value`` (ZConfig command-line overrides, passed through
  by zdaemon's option parser) replaces any key: ``filestorage/path``,
  ``filestorage/blob-dir``, ``zeoclient/server``, ``zeoclient/blob-dir``.

:func:`runzeo_command` builds that command line for tests and benchmarks.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

DEFAULT_ADDRESS = "127.0.0.1:8100"
DEFAULT_REPLICA_ADDRESS = "127.0.0.1:8101"
PRIMARY_CONFIG = "zeo.conf"
REPLICA_CONFIG = "replica.conf"
TLS_CONFIG = "zeo-tls.conf"
#: Default data directories (relative to the current directory), as in the configs.
DEFAULT_DATA_DIR = os.path.join("var", "zeo")
DEFAULT_REPLICA_DATA_DIR = os.path.join("var", "replica")
#: The config line that installs zpydb.zeo_guard in runzeo (required by zpydb serve).
GUARD_IMPORT = "%import zpydb.zeo_guard"


def configs_dir():
    """The directory of the bundled ZEO configs, wherever zpydb was installed from.

    An installed wheel carries them as package data in ``zpydb/zeo_configs/``
    (setup.cfg maps that package onto the repository's ``zeo_configs/``, which
    stays the one copy you edit); a source checkout or an editable install has
    only ``zeo_configs/`` beside the package.  Never the current directory:
    ``zpydb serve`` must find the same configs from any directory.
    """
    here = Path(__file__).resolve().parent
    packaged = here / "zeo_configs"
    source = here.parent / "zeo_configs"
    for candidate in (packaged, source):
        if (candidate / PRIMARY_CONFIG).is_file():
            return candidate
    return packaged  # a broken install: runzeo_command names the missing file


def bundled_config(name):
    """The path of a bundled config (``zeo.conf``, ``replica.conf``, ``zeo-tls.conf``)."""
    return configs_dir() / name


def runzeo_executable():
    """``runzeo`` next to the running Python (the virtualenv's), else on ``$PATH``."""
    beside = Path(sys.executable).parent / "runzeo"
    if beside.exists():
        return str(beside)
    found = shutil.which("runzeo")
    if found:
        return found
    raise FileNotFoundError("runzeo not found next to %s nor on $PATH; install ZEO"
                            % sys.executable)


def _normalize_address(address):
    """``HOST:PORT`` as given; a bare port means loopback (runzeo would bind all interfaces)."""
    address = str(address).strip()
    if address.isdigit():
        return f"127.0.0.1:{address}"
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return address


def _is_replica_config(config):
    try:
        text = Path(config).read_text()
    except OSError:
        return False
    return any(line.strip().startswith("<zeoclient") for line in text.splitlines())


def _loads_guard(config):
    """True when the config imports zpydb's server guard (``%import zpydb.zeo_guard``)."""
    try:
        lines = Path(config).read_text().splitlines()
    except OSError:
        return False
    return any(line.split() == GUARD_IMPORT.split() for line in lines)


def runzeo_command(config=None, address=None, read_only=False, upstream=None, data_dir=None):
    """The ``runzeo`` command line (a list) that serves a zpydb database.

    config:    a ZConfig file; default the bundled ``zeo.conf``, or ``replica.conf``
               when ``read_only``/``upstream`` is given.  It must contain the line
               ``%import zpydb.zeo_guard`` (ValueError otherwise).
    address:   ``HOST:PORT`` to listen on (``-a``; a bare port means 127.0.0.1).
    read_only: serve a read-only replica of ``upstream`` (default 127.0.0.1:8100).
    upstream:  the primary's ``HOST:PORT`` for a replica (implies ``read_only``).
    data_dir:  directory for ``Data.fs`` and ``blobs/`` (for a replica: its blob
               cache); created if missing.  Default for the bundled configs
               (any file in ``zeo_configs/``): ``./var/zeo`` (``./var/replica``
               for a replica), made absolute; other configs keep their own paths.

    The command uses only runzeo's options: ``-C config``, ``-a address`` and
    ZConfig ``-X`` overrides, so a custom config must have the sections the
    overrides name (``<filestorage>`` or ``<zeoclient>``).
    """
    read_only = bool(read_only or upstream)
    if config is None:
        config = bundled_config(REPLICA_CONFIG if read_only else PRIMARY_CONFIG)
    config = Path(config).absolute()
    # The bundled configs get an absolute default data directory (created here);
    # a config of your own keeps its paths unless data_dir is given.
    bundled = config.resolve().parent == configs_dir().resolve()
    if not config.is_file():
        raise FileNotFoundError(f"ZEO config not found: {config}")
    if not _loads_guard(config):
        raise ValueError(f"{config} does not load zpydb's server guard: add the line "
                         f"'{GUARD_IMPORT}' at its top (see docs/security.md)")
    replica = _is_replica_config(config)
    if read_only and not replica:
        raise ValueError(f"{config} has no <zeoclient> storage: a read-only replica needs "
                         f"a replica config such as {bundled_config(REPLICA_CONFIG)}")

    command = [runzeo_executable(), "-C", str(config)]
    if address is not None:
        command += ["-a", _normalize_address(address)]
    if upstream is not None:
        command += ["-X", f"zeoclient/server={_normalize_address(upstream)}"]
    if data_dir is None and bundled:
        data_dir = DEFAULT_REPLICA_DATA_DIR if replica else DEFAULT_DATA_DIR
    if data_dir is not None:
        data_dir = os.path.abspath(data_dir)
        os.makedirs(data_dir, exist_ok=True)
        if replica:
            command += ["-X", f"zeoclient/blob-dir={os.path.join(data_dir, 'blobs')}"]
        else:
            command += ["-X", f"filestorage/path={os.path.join(data_dir, 'Data.fs')}",
                        "-X", f"filestorage/blob-dir={os.path.join(data_dir, 'blobs')}"]
    return command


def describe_command(command):
    """What a runzeo command line will serve, as a dict (parsed exactly as runzeo does).

    Keys: ``address`` ("host:port"), ``read_only``, ``tls``, ``storages`` (a list of
    dicts with ``name`` and ``path``/``blob_dir`` for a FileStorage or ``upstream``
    for a replica).  Raises ``ValueError`` with runzeo's message on a bad config.
    """
    import io
    import contextlib
    from ZEO.runzeo import ZEOOptions

    options = ZEOOptions()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            options.realize(list(command[1:]), progname="runzeo")
    except SystemExit:
        message = stderr.getvalue().strip().splitlines()
        raise ValueError(message[0] if message else "invalid runzeo configuration") from None
    address = options.address
    if isinstance(address, tuple):
        address = f"{address[0]}:{address[1]}"
    storages = []
    for opener in options.storages:
        conf = opener.config
        info = {"name": opener.name}
        if hasattr(conf, "path"):
            info["path"] = conf.path
        if getattr(conf, "server", None):
            info["upstream"] = ", ".join(
                f"{s.address[0]}:{s.address[1]}" if isinstance(s.address, tuple)
                else str(s.address) for s in conf.server)
        info["blob_dir"] = getattr(conf, "blob_dir", None)
        info["read_only"] = bool(getattr(conf, "read_only", False))
        storages.append(info)
    return {"address": address, "read_only": bool(options.read_only),
            "tls": options.ssl is not None, "storages": storages}


def _set_parent_death_signal():
    """In the child: get SIGTERM when the parent dies (Linux), so no orphan server."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass


def run_foreground(command):
    """Run ``command`` until it exits, forwarding SIGTERM/SIGINT/SIGHUP; return its exit code.

    The child runs in its own session so a terminal's Ctrl-C reaches it once (through
    this process) and not twice.
    """
    process = subprocess.Popen(command, start_new_session=True,
                               preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None)
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {}

    def forward(signum, frame):
        if process.poll() is None:
            process.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in forwarded:
            previous[signum] = signal.signal(signum, forward)
    try:
        while True:
            try:
                returncode = process.wait()
                break
            except KeyboardInterrupt:  # pragma: no cover - handler replaced above
                forward(signal.SIGINT, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:  # pragma: no cover - only on an unexpected exception
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return 128 - returncode if returncode < 0 else returncode


def serve(args):
    """The ``zpydb serve`` handler."""
    if args.upstream and not args.read_only:
        print("zpydb serve: --upstream needs --read-only (a replica is read-only)",
              file=sys.stderr)
        return 2
    try:
        command = runzeo_command(config=args.config, address=args.address,
                                 read_only=args.read_only, upstream=args.upstream,
                                 data_dir=args.data_dir)
        info = describe_command(command)
    except (OSError, ValueError) as exc:
        print(f"zpydb serve: {exc}", file=sys.stderr)
        return 2
    kind = "read-only replica" if info["read_only"] else "read-write"
    if info["tls"]:
        kind += ", TLS with client certificates"
    print(f"zpydb serve: ZEO server ({kind}) listening on {info['address']}")
    if info["tls"]:
        print(f"  clients: zpydb.connect('zeo://{info['address']}', tls_cert=..., "
              f"tls_key=..., tls_ca=...)  (see `zpydb certs`)")
    elif info["read_only"]:
        print(f"  clients: zpydb.connect('zeo://{info['address']}', read_only=True)")
    else:
        print(f"  clients: zpydb.connect('zeo://{info['address']}')")
    for storage in info["storages"]:
        if "upstream" in storage:
            print(f"  storage {storage['name']}: replica of {storage['upstream']}"
                  f" (blob cache {storage['blob_dir']})")
        else:
            print(f"  storage {storage['name']}: {storage.get('path')}"
                  f" (blobs {storage['blob_dir']})")
    print(f"  config: {command[2]}")
    print(f"  command: {' '.join(command)}", flush=True)
    return run_foreground(command)


def certs(args):
    """The ``zpydb certs`` handler."""
    from .certs import make_dev_certs

    paths = make_dev_certs(args.directory)
    print(f"zpydb certs: development CA and certificates in {os.path.abspath(args.directory)}")
    for kind, path in paths.items():
        print(f"  {kind:11} {path}")
    print("Server (zeo_configs/zeo-tls.conf, <zeo><ssl>):")
    print(f"  certificate {paths['server']}\n  key {paths['server_key']}"
          f"\n  authenticate {paths['ca']}")
    print("Client:")
    print(f"  zpydb.connect('zeo://127.0.0.1:8100', tls_cert={paths['client']!r},\n"
          f"                tls_key={paths['client_key']!r}, tls_ca={paths['ca']!r})")
    print("Keys are unencrypted (mode 0600) and meant for development only.", flush=True)
    return 0


def register_commands(subparsers):
    """Add the ``serve`` and ``certs`` subcommands to an argparse ``add_subparsers()``."""
    parser = subparsers.add_parser(
        "serve", help="run a ZEO server (runzeo) in the foreground",
        description="Run a ZEO server for zpydb in the foreground (stock runzeo with a "
                    "bundled config from zeo_configs/). Stop it with Ctrl-C or SIGTERM.")
    parser.add_argument("--config", metavar="FILE",
                        help=f"ZConfig file (default: {bundled_config(PRIMARY_CONFIG)}; "
                             f"with --read-only: {REPLICA_CONFIG})")
    parser.add_argument("--address", metavar="HOST:PORT",
                        help=f"listen address (default from the config: {DEFAULT_ADDRESS}, "
                             f"replica {DEFAULT_REPLICA_ADDRESS})")
    parser.add_argument("--read-only", action="store_true",
                        help="serve a read-only replica of --upstream")
    parser.add_argument("--upstream", metavar="HOST:PORT",
                        help=f"the primary server of a replica (default {DEFAULT_ADDRESS})")
    parser.add_argument("--data-dir", metavar="DIR",
                        help=f"directory for Data.fs and blobs/ (default ./{DEFAULT_DATA_DIR}; "
                             f"replica: blob cache, ./{DEFAULT_REPLICA_DATA_DIR})")
    parser.set_defaults(func=serve)

    parser = subparsers.add_parser(
        "certs", help="create development TLS certificates",
        description="Create a development CA, a server certificate for 127.0.0.1/localhost "
                    "and a client certificate (for zeo_configs/zeo-tls.conf).")
    parser.add_argument("directory", metavar="DIR", help="where to write the files")
    parser.set_defaults(func=certs)


def main(argv=None):
    """``python -m zpydb.server serve|certs ...`` (the same as ``zpydb serve|certs``)."""
    parser = argparse.ArgumentParser(prog="zpydb")
    register_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
