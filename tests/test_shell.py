"""The zpydb shell and command line (shell.py, cli.py)."""

import io
import os
import subprocess
import sys

import pexpect

from tests.helpers import spawn_shell
from zpydb.shell import Shell


def zpydb_cmd(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "zpydb", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_errors_print_one_line_and_the_shell_goes_on(tmp_path):
    url = str(tmp_path / "Data.fs")
    script = "db['a'] = {'b': 1}\ndb['a']['zz']\ndb['a']['b'][0]\n1/0\ndb['a'] = = 1\ndb['a']['b']\n"
    result = zpydb_cmd("shell", url, input=script)
    assert result.returncode == 1                       # a script with errors fails
    assert result.stdout.splitlines() == ["1"]          # ...but every statement ran
    errors = result.stderr.splitlines()
    assert errors[0] == "KeyNotFoundError: db['a']['zz']: no such key"
    assert errors[1].startswith("NotAContainerError: db['a']['b'][0]: db['a']['b'] is a int")
    assert errors[2] == "ZeroDivisionError: division by zero"
    assert errors[3].startswith("SyntaxError")
    assert "Traceback" not in result.stderr


def test_dash_c_and_python_dash_m(tmp_path):
    url = str(tmp_path / "Data.fs")
    assert zpydb_cmd(url, "-c", "db['k'] = [1, 2]").returncode == 0
    result = zpydb_cmd("shell", url, "-c", "db['k'].append(3); db['k']")
    assert result.returncode == 0 and result.stdout == "[1, 2, 3]\n"
    entry = subprocess.run(["zpydb", "shell", url, "-c", "len(db['k'])"], capture_output=True,
                           text=True, timeout=120,
                           env=dict(os.environ, PATH=os.path.dirname(sys.executable) + ":"
                                    + os.environ["PATH"]))
    assert entry.stdout == "3\n"


def test_environment_variable_selects_the_database(tmp_path):
    env = dict(os.environ, ZPYDB_URL=str(tmp_path / "env.fs"))
    zpydb_cmd("-c", "db['e'] = 1", env=env)
    assert (tmp_path / "env.fs").exists()


def test_multiline_statements_and_printing(fdb):
    out, err = io.StringIO(), io.StringIO()
    shell = Shell(fdb, out=out, err=err)
    failures = shell.run_lines([
        "for i in range(3):",
        "    db[f'k{i}'] = i",
        "",
        "db['k1']",
        "None",
        "db.get('nope')",
        "db['none'] = None",
        "db['none']",
        "x = 5",
        "x",
    ])
    assert failures == 0 and err.getvalue() == ""
    assert out.getvalue().splitlines() == ["1", "None", "5"]  # a stored None is shown


def test_key_completion(fdb):
    fdb["users"] = {"alice": 1, "albert": 2, "bob": 3}
    shell = Shell(fdb)
    assert sorted(shell.complete_keys("db['users'][", "'al")) == ["'albert']", "'alice']"]
    assert sorted(shell.complete_keys("db['users']['", "al")) == ["albert", "alice"]
    assert shell.complete_keys("db['", "us") == ["users"]
    assert shell.complete_keys("print(", "x") is None
    assert fdb["users"]._ipython_key_completions_() == ["albert", "alice", "bob"]


def test_tab_completion_at_a_real_terminal(tmp_path):
    url = str(tmp_path / "Data.fs")
    zpydb_cmd(url, "-c", "db['zebra_count'] = 7")
    child = spawn_shell(url, tmp_path, term="xterm")
    child.logfile_read = open(tmp_path / "pty.log", "w")
    try:
        child.expect_exact("> ")
        child.send("db['zeb\t")
        child.expect_exact("zebra_count'", timeout=10)    # readline closes the quote
        child.send("]\r")
        child.expect_exact("7")
        child.expect_exact("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
