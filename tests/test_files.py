"""zpydb.File: large files as ZODB blobs (zpydb/files.py, docs/files.md).

Content is always checked by SHA-256.  The ``backend`` tests run on the
embedded FileStorage, a real runzeo (client blob dirs private, not the
server's) and RelStorage on PostgreSQL (blob_dir = its blob cache).
"""

import gc
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zpydb
from zpydb.files import FileHandle, format_size
from tests.servers import ZeoServer

REPO = Path(__file__).resolve().parent.parent


def sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def handle_sha(handle):
    digest = hashlib.sha256()
    with handle.open() as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_file(path, size, seed=0):
    """``size`` pseudo-random bytes (a 1 MB random block, rotated per MB)."""
    block = os.urandom(1 << 20) if seed is None else hashlib.sha256(str(seed).encode()).digest() * 32768
    with open(path, "wb") as stream:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            rotate = (written >> 20) % 997
            stream.write((block[rotate:] + block[:rotate])[:n])
            written += n
    return Path(path)


def zpydb_cmd(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "zpydb", *args], capture_output=True, text=True,
                          timeout=120, cwd=kwargs.pop("cwd", REPO), **kwargs)


# -- storing and reading ---------------------------------------------------------

def test_store_a_path_and_read_it_back(backend, tmp_path):
    source = make_file(tmp_path / "report.pdf", 3 * 1024 * 1024 + 17, seed=1)
    before = (file_sha(source), source.stat().st_mtime_ns, source.stat().st_ino)
    db = backend.connect()
    db["f"] = zpydb.File(source)
    handle = db["f"]._run()
    assert isinstance(handle, FileHandle)
    assert handle.name == "report.pdf"
    assert handle.content_type == "application/pdf"
    assert handle.size == source.stat().st_size
    assert handle.sha256 == before[0] == handle_sha(handle)
    assert repr(handle) == "<File report.pdf 3.1 MB>"
    # the source is only read
    assert (file_sha(source), source.stat().st_mtime_ns, source.stat().st_ino) == before
    # another client (its own ZEO client blob dir / RelStorage blob cache) reads the same bytes
    other = backend.connect()
    again = other["f"]._run()
    assert handle_sha(again) == before[0]
    assert again == handle
    (tmp_path / "out").mkdir()
    copy = again.save_to(tmp_path / "out")              # a directory: keeps the name
    assert file_sha(copy) == before[0] and os.path.basename(copy) == "report.pdf"


def test_bytes_streams_and_files_inside_lists_and_dicts(backend, tmp_path):
    db = backend.connect()
    payload = os.urandom(200_000)
    source = make_file(tmp_path / "data.csv", 1_500_000, seed=2)
    with open(source, "rb") as stream:
        db["docs"] = [zpydb.File(b"hello", name="a.txt"),
                      zpydb.File(stream, content_type="text/x-custom"),
                      {"inner": zpydb.File(io.BytesIO(payload), name="p.bin")}]
    docs = backend.connect()["docs"]._run()
    assert [type(x).__name__ for x in docs[:2]] == ["FileHandle", "FileHandle"]
    assert docs[0].read() == b"hello" and docs[0].content_type == "text/plain"
    assert docs[1].name == "data.csv" and docs[1].content_type == "text/x-custom"
    assert handle_sha(docs[1]) == file_sha(source)
    assert docs[2]["inner"].read() == payload and docs[2]["inner"] == payload
    assert docs[2]["inner"] != b"other" and docs[0] != docs[2]["inner"]
    # appends and dict updates convert too
    db["docs"].append(zpydb.File(b"x" * 10, name="x.bin"))
    db["docs"][2].update({"more": zpydb.File(b"more")})
    assert db["docs"][3]._run().read() == b"x" * 10
    more = db["docs"][2]["more"]._run()
    assert more.read() == b"more" and more.name is None
    assert more.content_type == "application/octet-stream"
    assert repr(more) == "<File (unnamed) 4 bytes>"


def test_a_handle_is_a_read_only_snapshot_and_storing_it_copies(backend):
    db = backend.connect()
    db["f"] = zpydb.File(b"version 1", name="v.txt")
    first = db["f"]._run()
    with pytest.raises(AttributeError):
        first.name = "other"
    db["copy"] = first                     # a handle stores as a new file with the same bytes
    db["copy2"] = db["f"]                  # so does a path
    db["f"] = zpydb.File(b"version 2", name="v.txt")
    assert first.read() == b"version 1"    # the old revision until a pack
    assert db["f"]._run().read() == b"version 2"
    assert db["copy"]._run() == first and db["copy2"]._run().read() == b"version 1"
    assert db["f"] == b"version 2"         # Path == bytes compares the content
    with db.transaction() as t:            # inside a block, before commit
        t["new"] = zpydb.File(b"pending", name="n.txt")
        assert t["new"]._run().read() == b"pending"
    assert db["new"]._run().read() == b"pending"


def test_move_hands_the_file_over(backend, tmp_path):
    source = make_file(tmp_path / "big.iso", 2_000_000, seed=3)
    digest = file_sha(source)
    db = backend.connect()
    db["iso"] = zpydb.File(source, move=True)
    gc.collect()
    assert not source.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".big.iso")] == []
    assert handle_sha(db["iso"]._run()) == digest
    # a write that fails puts the file back where it was
    kept = make_file(tmp_path / "kept.bin", 1000, seed=4)
    db["l"] = [1]
    with pytest.raises(zpydb.BadIndexError):
        db["l"][5] = zpydb.File(kept, move=True)
    gc.collect()
    assert kept.exists() and kept.read_bytes() == make_file(tmp_path / "ref", 1000, seed=4).read_bytes()


def test_unstorable_sources_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        zpydb.File(tmp_path / "missing")
    with pytest.raises(TypeError):
        zpydb.File(12)
    with pytest.raises(ValueError):
        zpydb.File(b"x", move=True)


def test_shell_prints_one_line(tmp_path):
    url = str(tmp_path / "Data.fs")
    make_file(tmp_path / "report.pdf", 2_400_000, seed=5)
    result = zpydb_cmd("shell", url, "-c",
                       f"db['f'] = zpydb.File({str(tmp_path / 'report.pdf')!r}); "
                       f"db['d'] = {{'f': zpydb.File(b'abc', name='a.txt')}}")
    assert result.returncode == 0, result.stderr
    result = zpydb_cmd("shell", url, input="db['f']\ndb['d']\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["<File report.pdf 2.4 MB>", "{'f': <File a.txt 3 bytes>}"]


def test_format_size():
    assert [format_size(n) for n in (0, 1, 999, 1000, 2_400_000, 209_715_200, 5 * 10**12)] == \
        ["0 bytes", "1 byte", "999 bytes", "1.0 kB", "2.4 MB", "209.7 MB", "5.0 TB"]


# -- undo, redo, pack -----------------------------------------------------------------

def test_undo_redo_replace_and_delete(backend, tmp_path):
    db = backend.connect()
    old = make_file(tmp_path / "old.bin", 1_200_000, seed=6)
    new = make_file(tmp_path / "new.bin", 900_000, seed=7)
    db["f"] = zpydb.File(old)
    db["f"] = zpydb.File(new)
    assert handle_sha(db["f"]._run()) == file_sha(new)
    db.undo()                                               # the replace
    assert handle_sha(db["f"]._run()) == file_sha(old)
    assert db["f"]._run().name == "old.bin"
    db.redo()
    assert handle_sha(db["f"]._run()) == file_sha(new)
    del db["f"]
    assert "f" not in db
    db.undo()                                               # the delete
    assert handle_sha(backend.connect()["f"]._run()) == file_sha(new)
    db.redo()
    assert "f" not in db
    db.undo()
    assert handle_sha(db["f"]._run()) == file_sha(new)


def test_undo_redo_of_a_new_file(backend):
    db = backend.connect()
    db["f"] = zpydb.File(b"created", name="c.txt")
    db.undo()                                               # the creation
    assert "f" not in db
    db.redo()                                               # re-applied: same bytes
    assert backend.connect()["f"]._run().read() == b"created"


def test_undo_after_redo_of_a_replace(backend):
    """undo, redo, undo of a replace: the old content again.

    zodburi's ``file://...?blobstorage_dir=`` would wrap FileStorage in
    ``ZODB.blob.BlobStorage``, whose ``undo()`` fails here with POSKeyError;
    storage.py opens a FileStorage with its own ``blob_dir`` instead.
    """
    db = backend.connect()
    db["f"] = zpydb.File(b"old", name="o.txt")
    db["f"] = zpydb.File(b"new", name="n.txt")
    db.undo()
    db.redo()
    db.undo()
    assert db["f"]._run().read() == b"old"


def blob_files(directory):
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*.blob"))


def test_pack_removes_blobs_nothing_references(file_backend, tmp_path):
    db = file_backend.connect()
    blobs = tmp_path / "blobs"
    db["keep"] = zpydb.File(b"keep me", name="keep.txt")
    db["gone"] = zpydb.File(make_file(tmp_path / "gone.bin", 1_000_000, seed=8))
    db["swap"] = zpydb.File(b"first", name="s.txt")
    db["swap"] = zpydb.File(b"second", name="s.txt")
    old_handle = db["gone"]._run()
    assert len(blob_files(blobs)) == 4
    del db["gone"]
    assert len(blob_files(blobs)) == 4                      # undo still needs them
    db._session.db.pack()
    assert len(blob_files(blobs)) == 2                      # keep + the current swap
    assert db["keep"]._run().read() == b"keep me"
    assert db["swap"]._run().read() == b"second"
    with pytest.raises(zpydb.Error, match="no longer exists"):
        old_handle.read()
    with pytest.raises(zpydb.UndoError):                    # pack trimmed the undo log too
        db.undo()


# -- export / import ---------------------------------------------------------------

def test_export_import_round_trip_through_the_cli(tmp_path):
    src_url, dst_url = str(tmp_path / "src" / "Data.fs"), str(tmp_path / "dst" / "Data.fs")
    big = make_file(tmp_path / "big.bin", 3_000_000, seed=9)
    small = os.urandom(1000)
    with zpydb.connect(src_url) as db:
        db["files"] = {"big": zpydb.File(big, name="big video.mp4"),
                       "small": zpydb.File(small, name="s.png"),
                       "list": [zpydb.File(b"", name="empty.txt"), 1, b"raw"]}
    out = tmp_path / "export" / "dump.json"
    out.parent.mkdir()
    result = zpydb_cmd("export", src_url, "-o", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    big_ref = document["files"]["big"]["$file"]
    assert big_ref["path"] == "dump.files/000001-big_video.mp4" and "base64" not in big_ref
    assert big_ref["sha256"] == file_sha(big) and big_ref["size"] == 3_000_000
    assert file_sha(out.parent / big_ref["path"]) == file_sha(big)
    small_ref = document["files"]["small"]["$file"]
    assert small_ref["content_type"] == "image/png" and "path" not in small_ref

    # move the export elsewhere: paths are relative to the JSON file
    moved = tmp_path / "moved"
    (out.parent).rename(moved)
    (tmp_path / "dst").mkdir()          # the zpydb command creates no missing folder
    result = zpydb_cmd("import", str(moved / "dump.json"), dst_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    with zpydb.connect(dst_url) as db:
        files = db["files"]._run()
        assert files["big"].name == "big video.mp4" and handle_sha(files["big"]) == file_sha(big)
        assert files["small"].read() == small and files["small"].content_type == "image/png"
        assert files["list"][0].read() == b"" and files["list"][1:] == [1, b"raw"]
    assert file_sha(moved / big_ref["path"]) == file_sha(big)   # import only reads

    # stdout: a large file needs --files-dir; with it every file goes there
    result = zpydb_cmd("export", src_url, "--no-progress")
    assert result.returncode == 1 and "--files-dir" in result.stderr
    result = zpydb_cmd("export", src_url, "--no-progress", "--files-dir", "blobs-out",
                       "--path", "db['files']", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["list"][0]["$file"]["path"] == "blobs-out/000002-empty.txt"  # sorted keys: big, list, small
    (tmp_path / "stdin.json").write_text(result.stdout)
    with open(tmp_path / "stdin.json") as stdin:
        result = zpydb_cmd("import", "-", dst_url, "--path", "db['again']", "--no-progress",
                           "--files-dir", str(tmp_path / "blobs-out"), stdin=stdin)
    assert result.returncode == 0, result.stderr
    with zpydb.connect(dst_url) as db:
        assert handle_sha(db["again"]["big"]._run()) == file_sha(big)

    # a changed file is refused and nothing is imported
    victim = tmp_path / "blobs-out" / "000003-s.png"
    victim.write_bytes(b"tampered")
    result = zpydb_cmd("import", str(tmp_path / "stdin.json"), dst_url, "--path",
                       "db['bad']", "--no-progress", "--files-dir", str(tmp_path / "blobs-out"))
    assert result.returncode == 1 and "does not match" in result.stderr
    with zpydb.connect(dst_url) as db:
        assert "bad" not in db


# -- streaming over ZEO: bounded memory ----------------------------------------------

CLIENT = textwrap.dedent("""
    import hashlib, json, os, sys, time
    sys.path.insert(0, {repo!r})
    import zpydb

    def peak_kb():
        with open("/proc/self/status") as status:
            return {{l.split(":")[0]: int(l.split()[1]) for l in status
                    if l.startswith(("VmHWM", "VmRSS"))}}

    url, source, blob_dir, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(source, "wb") as stream:
        for i in range(size >> 20):
            chunk = block[i % 251:] + block[:i % 251]
            stream.write(chunk)
            digest.update(chunk)
    writer = zpydb.connect(url, blob_dir=blob_dir + "/writer")
    writer["warm"] = 1
    writer["warm"]._run()
    base = peak_kb()
    start = time.monotonic()
    writer["big"] = zpydb.File(source)
    stored = time.monotonic() - start
    after_store = peak_kb()
    reader = zpydb.connect(url, blob_dir=blob_dir + "/reader")   # an empty blob cache
    start = time.monotonic()
    handle = reader["big"]._run()
    check = hashlib.sha256()
    with handle.open() as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            check.update(chunk)
    read = time.monotonic() - start
    print(json.dumps(dict(base=base, after_store=after_store, after_read=peak_kb(),
                          stored_s=stored, read_s=read, size=handle.size,
                          sha_ok=check.hexdigest() == digest.hexdigest() == handle.sha256,
                          reader_cache=sorted(os.listdir(blob_dir + "/reader")))))
""")


def proc_status_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        return {line.split(":")[0]: int(line.split()[1]) for line in status
                if line.startswith(("VmHWM", "VmRSS"))}


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_200_mb_over_zeo_streams_with_bounded_memory(tmp_path):
    size = 200 << 20
    with ZeoServer(tmp_path / "server") as server:
        server_before = proc_status_kb(server.pid)
        result = subprocess.run(
            [sys.executable, "-c", CLIENT.format(repo=str(REPO)), server.url,
             str(tmp_path / "source.bin"), str(tmp_path / "client-blobs"), str(size)],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        server_after = proc_status_kb(server.pid)
        server_blobs = list((server.data_dir / "blobs").rglob("*.blob"))
    report = json.loads(result.stdout.splitlines()[-1])
    print("ZEO 200 MB:", report, "server", server_before, server_after)
    assert report["sha_ok"] and report["size"] == size
    client_growth_mb = (report["after_read"]["VmHWM"] - report["base"]["VmHWM"]) / 1024
    server_growth_mb = (server_after["VmHWM"] - server_before["VmHWM"]) / 1024
    assert client_growth_mb < 100, report
    assert server_growth_mb < 100, (server_before, server_after)
    # the server keeps the blob in its blob-dir; the reader's private dir got a cached copy
    assert len(server_blobs) == 1 and server_blobs[0].stat().st_size == size
    assert report["reader_cache"]
