"""The ``zpydb`` command with real files, run as a user runs it (subprocess, cwd in a tmp dir).

Bad arguments: every one prints ONE line on stderr, exits non-zero and creates
nothing (the directory is listed before and after).  Blob directories: two
databases in one folder never share (and so never erase) each other's files.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

import zpydb
from tests.servers import free_port, wait_for_port, wait_for_port_closed
from zpydb import storage
from zpydb.server import runzeo_executable

REPO = Path(__file__).resolve().parent.parent
PHOTO = "db['photo'] = zpydb.File(b'x' * 5000, name='p.png')"


def run(cwd, *args, input=None, env=None):
    """``zpydb ARGS`` in ``cwd`` (a fresh user folder)."""
    environment = dict(os.environ if env is None else env)
    if env is None:
        environment.pop("ZPYDB_URL", None)
    environment["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "zpydb", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, input=input, env=environment)


def listing(directory):
    """Every path under ``directory`` (relative), to check that nothing was created."""
    directory = Path(directory)
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- item 1: every database has its own blob directory ------------------------------------

def test_second_database_in_the_same_folder_and_copy_keep_stored_files(tmp_path):
    """The issue's exact repro: a File in var/Data.fs, a second database in var/, a copy."""
    assert run(tmp_path, "shell", "-c", PHOTO).returncode == 0
    second = run(tmp_path, "shell", "var/scratch.fs", "-c", "db")
    assert second.returncode == 0, second.stderr
    read = "db['photo']._run().read() == b'x' * 5000"
    source = run(tmp_path, "shell", "-c", read)
    assert source.stdout == "True\n", source.stderr
    copied = run(tmp_path, "copy", "var/Data.fs", "var/backup.fs", "--no-progress")
    assert copied.returncode == 0, copied.stderr
    for url in ("var/Data.fs", "var/backup.fs"):
        result = run(tmp_path, "shell", url, "-c", read)
        assert result.stdout == "True\n", (url, result.stderr)
    var = tmp_path / "var"
    assert (var / "blobs").is_dir() and (var / "backup.fs.blobs").is_dir()
    assert (var / "scratch.fs.blobs").is_dir()


def test_blob_directory_rules(tmp_path):
    assert storage.blob_dir_for(str(tmp_path / "Data.fs")) == str(tmp_path / "blobs")
    assert storage.blob_dir_for(str(tmp_path / "x.fs")) == str(tmp_path / "x.fs.blobs")
    assert storage.blob_dir_for(str(tmp_path / "blobs")) == str(tmp_path / "blobs.blobs")
    url = storage.normalize_url(str(tmp_path / "x.fs"))
    assert dict(parse_qsl(urlsplit(url).query)) == {"blobstorage_dir": f"{tmp_path}/x.fs.blobs"}


def test_a_database_of_the_old_shared_layout_keeps_its_files(tmp_path):
    """zpydb used to give every file in a folder DIR/blobs: such a database still reads."""
    legacy = f"file://{tmp_path}/old.fs?blobstorage_dir={tmp_path}/blobs"
    with zpydb.connect(legacy) as db:
        db["f"] = zpydb.File(b"legacy bytes", name="l.txt")
    assert storage.blob_dir_for(str(tmp_path / "old.fs")) == str(tmp_path / "blobs")
    with zpydb.connect(str(tmp_path / "old.fs")) as db:
        assert db["f"]._run().read() == b"legacy bytes"
    assert not (tmp_path / "old.fs.blobs").exists()


def test_creating_a_database_never_erases_a_blob_directory_with_files(tmp_path):
    """FileStorage(create) clears its blob dir: a new Data.fs must not take an old one's."""
    legacy = f"file://{tmp_path}/old.fs?blobstorage_dir={tmp_path}/blobs"
    with zpydb.connect(legacy) as db:
        db["f"] = zpydb.File(b"keep me", name="k.txt")
    before = listing(tmp_path)
    with pytest.raises(zpydb.URLError, match="already holds stored files"):
        zpydb.connect(str(tmp_path / "Data.fs"))             # DIR/blobs belongs to old.fs
    assert listing(tmp_path) == before
    result = run(tmp_path, "shell", "Data.fs", "-c", "db")
    assert "already holds stored files" in one_line_error(result)
    assert listing(tmp_path) == before
    with zpydb.connect(str(tmp_path / "old.fs")) as db:
        assert db["f"]._run().read() == b"keep me"
    # a deleted database's files are not erased either
    with zpydb.connect(str(tmp_path / "gone.fs")) as db:
        db["f"] = zpydb.File(b"orphan", name="o.txt")
    for ext in ("", ".index", ".lock", ".tmp"):
        if (tmp_path / f"gone.fs{ext}").exists():
            os.remove(tmp_path / f"gone.fs{ext}")
    with pytest.raises(zpydb.URLError, match="gone.fs.blobs already holds"):
        zpydb.connect(str(tmp_path / "gone.fs"))


def test_copy_of_an_old_layout_database_to_data_fs_keeps_the_source_files(tmp_path):
    """old.fs keeps its files in DIR/blobs; a copy to DIR/Data.fs (whose blob dir is
    DIR/blobs too) would erase them on creation: refused, source intact."""
    with zpydb.connect(f"file://{tmp_path}/old.fs?blobstorage_dir={tmp_path}/blobs") as db:
        db["f"] = zpydb.File(b"source bytes", name="s.txt")
    before = listing(tmp_path)
    result = run(tmp_path, "copy", "old.fs", "Data.fs", "--no-progress")
    assert "already holds stored files" in one_line_error(result)
    assert listing(tmp_path) == before
    assert run(tmp_path, "copy", "old.fs", "new.fs", "--no-progress").returncode == 0
    for name in ("old.fs", "new.fs"):
        assert run(tmp_path, name, "-c", "db['f']._run().read()").stdout == "b'source bytes'\n"


def test_copy_refuses_a_destination_that_would_erase_files_and_removes_a_failed_copy(tmp_path):
    assert run(tmp_path, "shell", "-c", PHOTO).returncode == 0
    (tmp_path / "var" / "backup.fs.blobs").mkdir()
    (tmp_path / "var" / "backup.fs.blobs" / "x.blob").write_bytes(b"someone's")
    before = listing(tmp_path)
    result = run(tmp_path, "copy", "var/Data.fs", "var/backup.fs", "--no-progress")
    assert "already holds stored files" in one_line_error(result)
    assert listing(tmp_path) == before


# -- item 6 and the reliability list: bad arguments, one line, nothing created ------------

@pytest.fixture
def workdir(tmp_path):
    """A user folder holding one real database (db.fs), a JSON file and a non-database."""
    folder = tmp_path / "work"
    folder.mkdir()
    assert run(folder, "shell", "db.fs", "-c", "db['a'] = 1").returncode == 0
    (folder / "data.json").write_text('{"b": 2}')
    (folder / "junk.txt").write_text("not a database\n")
    (folder / "adir").mkdir()
    return folder


BAD = {
    "typo export": (["exprot"], "did you mean 'export'"),
    "typo shell": (["shel"], "did you mean 'shell'"),
    "typo import": (["imprt", "data.json"], "did you mean 'import'"),
    "not a command": (["frobnicate"], "not a command"),
    "shell missing folder": (["shell", "{absent}/dir/x.fs"], "no such folder: {absent}/dir"),
    "shell relative missing folder": (["shell", "sub/x.fs"], "no such folder"),
    "shell non-database": (["shell", "junk.txt"], "not a zpydb database"),
    "bare non-database": (["junk.txt"], "not a zpydb database"),
    "shell directory": (["shell", "adir"], "is a directory"),
    "shell new name without .fs": (["shell", "newdb"], "must end in .fs"),
    "shell path typo": (["./exprot"], "must end in .fs"),
    "shell unknown option": (["shell", "db.fs", "--bogus"], "unrecognized arguments"),
    "shell -c without statement": (["shell", "db.fs", "-c"], "expected one argument"),
    "shell bad wait": (["shell", "db.fs", "--wait-timeout", "soon"], "invalid float"),
    "shell missing read-url": (["shell", "db.fs", "--read-url", "nope.fs"], "no such database"),
    "shell zconfig missing": (["shell", "zconfig://nowhere.conf"], "no such configuration file"),
    "export missing db": (["export", "missing.fs"], "no such database"),
    "export non-database": (["export", "junk.txt"], "not a zpydb database"),
    "export default missing": (["export"], "no such database: the default database"),
    "export bad path": (["export", "db.fs", "--path", "db["], "not a path"),
    "export missing key": (["export", "db.fs", "--path", "db['zz']", "-o", "out.json"],
                           "no such key"),
    "export output folder": (["export", "db.fs", "-o", "{absent}/out.json"], "no such folder"),
    "export output dir": (["export", "db.fs", "-o", "adir"], "is a directory"),
    "export files-dir folder": (["export", "db.fs", "--files-dir", "no/such/dir"], "no such folder"),
    "import missing json": (["import", "missing.json", "new.fs"], "no such JSON file"),
    "import json is dir": (["import", "adir", "new.fs"], "is a directory"),
    "import into missing folder": (["import", "data.json", "{absent}/x.fs"], "no such folder"),
    "import into non-database": (["import", "data.json", "junk.txt"], "not a zpydb database"),
    "import into new name without .fs": (["import", "data.json", "newdb"], "must end in .fs"),
    "import bad files-dir": (["import", "data.json", "new.fs", "--files-dir", "nope"],
                             "no such --files-dir directory"),
    "import bad json": (["import", "-", "new.fs"], "not valid JSON"),
    "import no args": (["import"], "required"),
    "copy missing source": (["copy", "missing.fs", "new.fs"], "no such database"),
    "copy non-database source": (["copy", "junk.txt", "new.fs"], "not a zpydb database"),
    "copy into missing folder": (["copy", "db.fs", "{absent}/x.fs"], "no such folder"),
    "copy into non-database": (["copy", "db.fs", "junk.txt"], "not a zpydb database"),
    "copy onto itself": (["copy", "db.fs", "./db.fs", "--no-progress"], "same database"),
    "copy one arg": (["copy", "db.fs"], "required"),
    "copy new name without .fs": (["copy", "db.fs", "backup"], "must end in .fs"),
    "serve missing config": (["serve", "--config", "nope.conf"], "no such --config file"),
    "serve data-dir folder": (["serve", "--data-dir", "{absent}/a/b"], "no such folder"),
    "serve data-dir is file": (["serve", "--data-dir", "junk.txt"], "not a directory"),
    "serve bad address": (["serve", "--address", "nonsense"], "HOST:PORT"),
    "serve upstream without read-only": (["serve", "--upstream", "127.0.0.1:1"], "--read-only"),
    "pack no url": (["pack"], "required"),
    "pack missing db": (["pack", "missing.fs"], "no such database"),
    "pack non-database": (["pack", "junk.txt"], "not a zpydb database"),
    "pack negative days": (["pack", "db.fs", "--days", "-1"], "--days must be"),
    "pack bad days": (["pack", "db.fs", "--days", "week"], "invalid float"),
    "pack memory": (["pack", "memory://"], "memory://: an in-memory database"),
    "pack no server": (["pack", "127.0.0.1:1", "--wait-timeout", "1"], "no ZEO server answered"),
    "certs no dir": (["certs"], "required"),
    "certs missing parent": (["certs", "{absent}/a/certs"], "no such folder"),
    "certs onto a file": (["certs", "junk.txt"], "not a directory"),
    "tls cert missing": (["shell", "127.0.0.1:1", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                          "--tls-ca", "ca.pem"], "c.pem"),
    "log missing db": (["log", "missing.fs"], "no such database"),
    "log default missing": (["log", "db['a']"], "no such database: the default database"),
    "log too many": (["log", "db.fs", "db['a']", "x"], "log takes [URL] [PATH]"),
    "log two paths": (["log", "db['a']", "db['b']"], "log takes [URL] [PATH]"),
    "log bad path": (["log", "db.fs", "db[1+"], "not a path"),
    "log bad n": (["log", "db.fs", "-n", "-1"], "-n must be >= 0"),
    "show without at": (["show", "db.fs", "db['a']"], "required: --at"),
    "show bad when": (["show", "db.fs", "db", "--at", "soon"], "not a time: 'soon'"),
    "show bad path": (["show", "db.fs", "db[", "--at", "1"], "not a path"),
    "show missing db": (["show", "missing.fs", "db", "--at", "1"], "no such database"),
    "show missing key": (["show", "db.fs", "db['zz']", "--at", "2100-01-01"], "no such key"),
    "show too old": (["show", "db.fs", "db", "--at", "2001-01-01"], "is not kept"),
    "diff no times": (["diff"], "required"),
    "diff bad when": (["diff", "db.fs", "later"], "not a time: 'later'"),
    "diff missing db": (["diff", "missing.fs", "1"], "no such database"),
    "diff too many": (["diff", "db.fs", "1", "2", "3"], "diff takes [URL] A [B]"),
    "diff too old": (["diff", "db.fs", "2001-01-01"], "is not kept"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_arguments_print_one_line_and_create_nothing(workdir, case):
    absent = workdir.parent / "absent"       # a folder that does not exist (the issue's
    args = [a.replace("{absent}", str(absent)) for a in BAD[case][0]]   # /nonexistent)
    expected = BAD[case][1].replace("{absent}", str(absent))
    before = listing(workdir)
    result = run(workdir, *args, input="{not json" if "-" in args else "")
    line = one_line_error(result)
    assert expected in line, line
    assert listing(workdir) == before
    assert not absent.exists()


def test_a_typo_is_never_a_database_but_urls_and_paths_are(workdir):
    assert run(workdir, "db.fs", "-c", "db['a']").stdout == "1\n"          # existing file
    assert run(workdir, "fresh.fs", "-c", "db['n'] = 1").returncode == 0    # a new .fs name
    assert (workdir / "fresh.fs").exists()
    assert run(workdir, "-c", "db['d'] = 1").returncode == 0                # default database
    assert (workdir / "var" / "Data.fs").exists()
    result = run(workdir, "127.0.0.1:1", "--wait-timeout", "1", "-c", "db")  # a URL, no server
    assert "no ZEO server answered" in one_line_error(result)


def test_tls_files_relative_to_another_folder_and_a_misspelled_ca(tmp_path):
    """Relative TLS paths work from the folder they are relative to; elsewhere the message
    names the file (as typed and absolute); a misspelled CA is named too."""
    from tests.servers import ZeoServer
    from zpydb.certs import make_dev_certs

    certs = make_dev_certs(tmp_path / "certs")
    other = tmp_path / "other"
    other.mkdir()
    with ZeoServer(tmp_path / "zeo", kind="tls", certs=certs) as server:
        tls = ["--tls-cert", "certs/client.pem", "--tls-key", "certs/client-key.pem",
               "--tls-ca", "certs/ca.pem", "--wait-timeout", "10"]
        ok = run(tmp_path, "shell", server.url, *tls, "-c", "db['t'] = 1; db['t']")
        assert ok.returncode == 0 and ok.stdout == "1\n", ok.stderr
        before = listing(tmp_path)
        wrong_place = run(other, "shell", server.url, *tls, "-c", "db")
        line = one_line_error(wrong_place)
        assert f"'certs/client.pem' ({other}/certs/client.pem)" in line
        misspelled = tls[:5] + ["certs/ca.pme"] + tls[6:]
        line = one_line_error(run(tmp_path, "shell", server.url, *misspelled, "-c", "db"))
        assert "certs/ca.pme" in line
        garbage = tmp_path / "certs" / "garbage.pem"
        garbage.write_text("not a certificate")
        before = listing(tmp_path)
        bad = tls[:5] + [str(garbage)] + tls[6:]
        line = one_line_error(run(tmp_path, "shell", server.url, *bad, "-c", "db"))
        assert "TLS" in line
        assert listing(tmp_path) == before
        api = zpydb.connect(server.url, tls_cert=certs["client"], tls_key=certs["client_key"],
                            tls_ca=certs["ca"], wait_timeout=10)
        assert api["t"]._run() == 1
        api.close()


def test_import_into_a_new_database_that_fails_leaves_nothing(workdir):
    before = listing(workdir)
    bad = run(workdir, "import", "-", "new.fs", input='{"b": {"$bytes": "!"}}')
    assert "$bytes" in one_line_error(bad)
    assert listing(workdir) == before
    good = run(workdir, "import", "data.json", "new.fs")
    assert good.returncode == 0, good.stderr
    assert run(workdir, "shell", "new.fs", "-c", "db['b']").stdout == "2\n"


# -- issue 13 item 7: zpydb --version and zpydb pack ------------------------------------------

def test_version(tmp_path):
    result = run(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"zpydb {zpydb.__version__}\n"
    assert listing(tmp_path) == []  # not taken for `zpydb shell` on the default database


def _history(folder, url):
    result = run(folder, "shell", url, "-c", "[c['note'] for c in db.history(100)]")
    assert result.returncode == 0, result.stderr
    return eval(result.stdout)


def test_pack_a_file(workdir):
    for i in range(20):
        assert run(workdir, "shell", "db.fs", "-c", f"db['a'] = {i}").returncode == 0
    size = os.path.getsize(workdir / "db.fs")
    assert len(_history(workdir, "db.fs")) == 21
    result = run(workdir, "pack", "db.fs", "--days", "1")  # everything is recent: kept
    assert result.returncode == 0, result.stderr
    assert "keeping 1 day(s) of history" in result.stdout
    assert len(_history(workdir, "db.fs")) == 21
    result = run(workdir, "pack", "db.fs")
    assert result.returncode == 0, result.stderr
    assert f"packed {workdir / 'db.fs'}, keeping 0 day(s) of history" in result.stdout
    assert os.path.getsize(workdir / "db.fs") < size
    assert _history(workdir, "db.fs") == []
    assert run(workdir, "shell", "db.fs", "-c", "db['a']").stdout == "19\n"


def test_pack_refuses_a_file_open_in_another_process(tmp_path):
    url = str(tmp_path / "Data.fs")
    holder = _hold(url)
    try:
        result = run(tmp_path, "pack", url)
        assert "is open in another process" in one_line_error(result)
        assert result.returncode == 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_pack_a_zeo_server(tmp_path, zeo_server):
    with zpydb.connect(zeo_server.url, wait_timeout=10) as db:
        for i in range(20):
            db["a"] = list(range(i, i + 100))
        count = len(db.history(100))
    size = os.path.getsize(zeo_server.data_dir / "Data.fs")
    result = run(tmp_path, "pack", zeo_server.url, "--wait-timeout", "10")
    assert result.returncode == 0, result.stderr
    assert f"packed {zeo_server.url}" in result.stdout
    assert os.path.getsize(zeo_server.data_dir / "Data.fs") < size
    with zpydb.connect(zeo_server.url, wait_timeout=10) as db:
        assert db["a"]._run() == list(range(19, 119))
        assert len(db.history(100)) < count


# -- item 14: the "locked" message names a command that serves this very file --------------

def _hold(url):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import zpydb, sys; db = zpydb.connect({url!r}); "
         f"db['f'] = zpydb.File(b'served bytes', name='s.txt'); print('ok', flush=True); "
         f"sys.stdin.read(); db.close()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(
            os.environ, PYTHONPATH=str(REPO)))
    assert holder.stdout.readline().strip() == "ok"
    return holder


def _serve_and_read(command, port, cwd):
    server = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, process=server)
        with zpydb.connect(f"zeo://127.0.0.1:{port}", wait_timeout=10) as db:
            return db["f"]._run().read()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        wait_for_port_closed("127.0.0.1", port)


@pytest.mark.parametrize("name", ["Data.fs", "other.fs"])
def test_locked_message_names_a_command_that_serves_this_file(tmp_path, name):
    url = str(tmp_path / name)
    holder = _hold(url)
    try:
        with pytest.raises(zpydb.DatabaseLockedError) as caught:
            zpydb.connect(url)
        message = str(caught.value)
        result = run(tmp_path, "shell", url, "-c", "db")
        assert "is open in another process" in one_line_error(result)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    command = shlex.split(re.search(r"`([^`]+)`", message).group(1))
    port = free_port()
    if name == "Data.fs":
        assert command == ["zpydb", "serve", "--data-dir", str(tmp_path)]
        command = [sys.executable, "-m", "zpydb", *command[1:], "--address", f"127.0.0.1:{port}"]
    else:
        assert command[0] == "runzeo" and f"filestorage/path={url}" in command
        command = [runzeo_executable(), *command[1:], "-a", f"127.0.0.1:{port}"]
    assert _serve_and_read(command, port, tmp_path) == b"served bytes"


# -- item 15: README examples run on their own ------------------------------------------

def test_readme_python_examples_run_in_a_fresh_folder(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks
    for number, code in enumerate(blocks, 1):
        if "zeo://" in code:  # needs a running server (make serve): syntax only
            compile(code, f"README.md#{number}", "exec")
            continue
        folder = tmp_path / f"block{number}"
        folder.mkdir()
        result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                                text=True, timeout=120,
                                env=dict(os.environ, PYTHONPATH=str(REPO), ZPYDB_URL=""))
        assert result.returncode == 0, (number, result.stderr)
