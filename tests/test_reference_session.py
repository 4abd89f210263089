"""pyzdb's reference session, run exactly as a new user would: API, pipe and terminal."""

import subprocess
import sys

import pexpect

import zpydb
from tests.helpers import spawn_shell

FULL = {"x": 3, "l": [0, 1, 2, 3, ["a", "b", "c"], 5, 6, 7, 8, 9]}
SESSION = """\
db
db['x'] = 3
db['x']
db['l'] = range(10)
db
db['l'][4] = ['a', 'b', 'c']
db.undo()
db
db.undo()
db
db.redo()
db.redo()
db
[v for v in db['l'][4]]
sorted([k for k in db])
db['l'][4].append('d')
db['l'][4]
"""
EXPECTED_OUTPUT = [
    "{}",
    "3",
    "{'l': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'x': 3}",
    "{'l': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'x': 3}",
    "{'x': 3}",
    "{'l': [0, 1, 2, 3, ['a', 'b', 'c'], 5, 6, 7, 8, 9], 'x': 3}",
    "['a', 'b', 'c']",
    "['l', 'x']",
    "['a', 'b', 'c', 'd']",
]


def test_reference_session_through_the_api(db):
    assert db == {}
    db["x"] = 3
    assert db["x"] == 3
    db["l"] = range(10)
    assert db == {"x": 3, "l": list(range(10))}
    db["l"][4] = ["a", "b", "c"]
    db.undo()
    assert db == {"x": 3, "l": list(range(10))}
    db.undo()
    assert db == {"x": 3}
    db.redo()
    db.redo()
    assert db == FULL
    assert [v for v in db["l"][4]] == ["a", "b", "c"]
    assert sorted(k for k in db) == ["l", "x"]
    db["l"][4].append("d")
    assert db["l"][4]._run() == ["a", "b", "c", "d"]


def test_application_code_example(backend):
    db = backend.connect()
    db["x"] = 3
    db["l"] = range(10)
    x = db["x"]._run()
    odd_squares = [v * v for v in db["l"] if v % 2]
    assert x == 3 and odd_squares == [1, 9, 25, 49, 81]
    root, conn = zpydb.client(backend.url, wait_timeout=10)
    try:
        assert root["x"]._run() == 3
    finally:
        conn.close()


def _zpydb(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "zpydb", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_reference_session_piped_into_the_shell(backend):
    result = _zpydb("shell", backend.url, input=SESSION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == EXPECTED_OUTPUT


def test_reference_session_at_a_terminal(tmp_path):
    url = str(tmp_path / "Data.fs")
    child = spawn_shell(url, tmp_path)
    try:
        child.expect_exact("> ")
        outputs = iter(EXPECTED_OUTPUT)
        for line in SESSION.splitlines():
            child.sendline(line)
            shows_value = not any(line.startswith(p) for p in
                                  ("db['x'] =", "db['l'] =", "db['l'][4] =", "db.undo", "db.redo",
                                   "db['l'][4].append"))
            if shows_value:
                child.expect_exact(next(outputs))
            child.expect_exact("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert (tmp_path / "history").read_text().count("db['l'][4]") >= 2
