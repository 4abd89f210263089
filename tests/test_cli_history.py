"""``zpydb log``, ``zpydb show`` and ``zpydb diff`` (cli.py over timetravel.py), run as a user runs them.

Bad arguments are in test_cli.py's table (one line, nothing created).
"""

import json
import time

import jsonpatch

import zpydb
from tests.test_cli import listing, run
from zpydb.export import encode


def make_history(folder):
    """db.fs with a few changes; returns their ids, oldest first."""
    with zpydb.connect(str(folder / "db.fs")) as db:
        db["cfg"] = {"port": 1, "raw": b"\x00"}
        db["cfg"]["port"] = 2
        db["other"] = [1]
        del db["cfg"]["port"]
        return [entry["id"] for entry in reversed(db.history(4))]


def test_log_of_the_database_and_of_a_path(tmp_path):
    ids = make_history(tmp_path)
    result = run(tmp_path, "log", "db.fs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line[:16] for line in lines] == ids[::-1]
    assert "write  del db['cfg']['port']" in lines[0]
    result = run(tmp_path, "log", "db.fs", "db['cfg']['port']", "-n", "5")
    lines = result.stdout.splitlines()
    assert [line[:16] for line in lines] == [ids[3], ids[1], ids[0]]
    assert lines[0].endswith("-> (deleted)") and lines[1].endswith("-> 2")
    assert run(tmp_path, "log", "db['cfg']['port']", "db.fs", "-n", "1").stdout == \
        lines[0] + "\n"                                       # either order
    as_json = json.loads(run(tmp_path, "log", "db.fs", "db['cfg']", "--json").stdout)
    assert [c["value"] for c in as_json] == [{"raw": {"$bytes": "AA=="}},
                                             {"port": 2, "raw": {"$bytes": "AA=="}},
                                             {"port": 1, "raw": {"$bytes": "AA=="}}]
    assert all(c["time"].startswith("20") for c in as_json)
    assert run(tmp_path, "log", "db.fs", "-n", "0").stdout == ""


def test_show_a_path_as_it_was(tmp_path):
    ids = make_history(tmp_path)
    result = run(tmp_path, "show", "db.fs", "db['cfg']", "--at", ids[0])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"port": 1, "raw": {"$bytes": "AA=="}}
    assert json.loads(run(tmp_path, "show", "db.fs", "db", "--at", str(time.time())).stdout) \
        == {"cfg": {"raw": {"$bytes": "AA=="}}, "other": [1]}
    with zpydb.connect(str(tmp_path / "db.fs")) as db:
        when = db.history(4)[2]["time"].isoformat()            # local time, as history shows it
    assert json.loads(run(tmp_path, "show", "db.fs", "db['cfg']['port']", "--at", when).stdout) == 2


def test_diff_between_two_moments_applies_with_jsonpatch(tmp_path):
    ids = make_history(tmp_path)
    with zpydb.connect(str(tmp_path / "db.fs")) as db:
        trees = [db.at(tid).value() for tid in ids]
    for a, b in ((0, 3), (3, 0), (1, 2)):
        result = run(tmp_path, "diff", "db.fs", ids[a], ids[b])
        assert result.returncode == 0, result.stderr
        assert jsonpatch.apply_patch(encode(trees[a]), json.loads(result.stdout)) == \
            encode(trees[b])
    to_now = json.loads(run(tmp_path, "diff", "db.fs", ids[0]).stdout)
    assert jsonpatch.apply_patch(encode(trees[0]), to_now) == encode(trees[3])
    sub = json.loads(run(tmp_path, "diff", "db.fs", ids[0], ids[1], "--path", "db['cfg']").stdout)
    assert sub == [{"op": "replace", "path": "/port", "value": 2}]


def test_the_url_is_optional_and_a_file_open_elsewhere_is_read(tmp_path):
    (tmp_path / "var").mkdir()
    holder = zpydb.connect(str(tmp_path / "var" / "Data.fs"))  # holds the file's lock
    try:
        holder["x"] = 1
        holder["x"] = 2
        first = holder.history(2)[1]["id"]
        before = listing(tmp_path)
        result = run(tmp_path, "log", "db['x']")
        assert result.returncode == 0, result.stderr
        assert [line.rsplit(" ", 1)[-1] for line in result.stdout.splitlines()] == ["2", "1"]
        assert run(tmp_path, "show", "db['x']", "--at", first).stdout.strip() == "1"
        assert json.loads(run(tmp_path, "diff", first).stdout) == [
            {"op": "replace", "path": "/x", "value": 2}]
        assert listing(tmp_path) == before                    # read-only: nothing written
        holder["x"] = 3                                       # still the writer
    finally:
        holder.close()


def test_log_and_diff_over_zeo(tmp_path, zeo_server):
    with zpydb.connect(zeo_server.url, wait_timeout=10) as db:
        db["x"] = 1
        first = db.history(1)[0]["id"]
        db["x"] = 2
    result = run(tmp_path, "log", zeo_server.url, "db['x']")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert json.loads(run(tmp_path, "diff", zeo_server.url, first).stdout) == [
        {"op": "replace", "path": "/x", "value": 2}]
