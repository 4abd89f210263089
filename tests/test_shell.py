"""The zpydb shell and command line (shell.py, cli.py)."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect

import zpydb
from tests.helpers import spawn_shell
from zpydb.shell import MAX_CHARS, MAX_LINES, Shell


def zpydb_cmd(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "zpydb", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_piped_script_stops_at_the_first_error_and_names_its_line(tmp_path):
    """Piped input is a script (as ``python file.py``): the first error stops it."""
    url = str(tmp_path / "Data.fs")
    script = "db['a'] = {'b': 1}\ndb['a']['b']\ndb['a']['zz']\ndb['after'] = 1\n"
    result = zpydb_cmd("shell", url, input=script)
    assert result.returncode == 1                       # a script with an error fails
    assert result.stdout.splitlines() == ["1"]
    assert result.stderr == "line 3: KeyNotFoundError: db['a']['zz']: no such key\n"
    assert zpydb_cmd("shell", url, "-c", "'after' in db").stdout == "False\n"  # stopped there


def test_each_error_is_one_line_naming_the_line(tmp_path):
    url = str(tmp_path / "Data.fs")
    zpydb_cmd("shell", url, "-c", "db['a'] = {'b': 1}")
    cases = {"\n\ndb['a']['b'][0]\n": "line 3: NotAContainerError: db['a']['b'][0]:",
             "x = 1\n1/0\n": "line 2: ZeroDivisionError: division by zero",
             "{}['k']\n": "line 1: KeyError: 'k'",
             "def f():\n    return 1/0\n\nf()\n": "line 2: ZeroDivisionError"}
    for script, expected in cases.items():
        result = zpydb_cmd("shell", url, input=script)
        assert result.returncode == 1 and result.stderr.startswith(expected), (script, result)
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_syntax_error_anywhere_runs_nothing(tmp_path):
    url = str(tmp_path / "Data.fs")
    result = zpydb_cmd("shell", url, input="db['x'] = 1\ndb['a'] = = 1\n")
    assert result.returncode == 1
    assert result.stderr == "line 2: SyntaxError: invalid syntax\n"
    assert zpydb_cmd("shell", url, "-c", "'x' in db").stdout == "False\n"


def test_unfinished_statements_are_syntax_errors(tmp_path):
    url = str(tmp_path / "Data.fs")
    result = zpydb_cmd("shell", url, "-c", "db['q'] = [1, 2")
    assert result.returncode == 1
    assert result.stderr == "line 1: SyntaxError: '[' was never closed\n"
    piped = zpydb_cmd("shell", url, input="db['p'] = 1\ndb['q'] = {'a': (1,\n")
    assert piped.returncode == 1 and piped.stderr.startswith("line 2: SyntaxError: ")
    block = zpydb_cmd("shell", url, input="for i in range(3):\n")
    assert block.returncode == 1                        # IndentationError is a SyntaxError
    assert block.stderr.startswith("line 1: IndentationError: expected an indented block")
    assert zpydb_cmd("shell", url, "-c", "sorted(db)").stdout == "[]\n"


def test_piped_input_runs_as_a_script_does(tmp_path):
    """The issue's repro: a one-line ``with`` block, then statements, no blank lines."""
    url = str(tmp_path / "x.fs")
    script = "db['a']=0\nwith db.transaction() as t: t['a'] += 1\ndb['b']=2\n"
    result = zpydb_cmd("shell", url, input=script)
    assert result.returncode == 0, result.stderr
    python = subprocess.run([sys.executable, "-c", "import zpydb\ndb = zpydb.connect('y.fs')\n"
                             + script + "db.close()\n"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert python.returncode == 0, python.stderr
    with zpydb.connect(url) as db, zpydb.connect(str(tmp_path / "y.fs")) as other:
        assert db._run() == other._run() == {"a": 1, "b": 2}
    blocks = "for i in range(3):\n    db[f'k{i}'] = i\ndb['done'] = True\nif db['done']:\n" \
             "    db['k9'] = 9\ndb['k2']\nfor k in ['k0', 'k9']:\n    db[k]\n"
    result = zpydb_cmd("shell", url, input=blocks)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["2", "0", "9"]    # bare expressions still print
    same = zpydb_cmd("shell", url, "-c", blocks)
    assert same.returncode == 0 and same.stdout == result.stdout


def test_the_docs_transfer_example_piped_into_the_shell(tmp_path):
    text = (Path(__file__).resolve().parent.parent / "docs" / "transactions.md").read_text()
    example = next(code for code in re.findall(r"```python\n(.*?)```", text, re.S)
                   if "amount = 30" in code)
    result = subprocess.run([sys.executable, "-m", "zpydb", "shell"], input=example,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "ZPYDB_URL"})
    assert result.returncode == 0, result.stderr
    with zpydb.connect(str(tmp_path / "var" / "Data.fs")) as db:
        assert db["accounts"]._run() == {"alice": 70, "bob": 30}


def test_exit_status_of_a_script(tmp_path):
    url = str(tmp_path / "Data.fs")
    assert zpydb_cmd("shell", url, "-c", "import sys; sys.exit(3)").returncode == 3
    assert zpydb_cmd("shell", url, "-c", "db['x'] = 1; exit()").returncode == 0
    assert zpydb_cmd("shell", url, input="").returncode == 0


def test_long_values_are_shortened_with_a_note(tmp_path):
    url = str(tmp_path / "Data.fs")
    zpydb_cmd("shell", url, "-c", "db['l'] = range(100_000); db['s'] = 'x' * 100_000")
    result = zpydb_cmd("shell", url, "-c", "db['l']")
    lines = result.stdout.splitlines()
    assert len(lines) == MAX_LINES + 1 and lines[0] == "[0,"
    assert lines[-1] == "... (99,950 more lines not shown; print(_) shows all of it)"
    everything = zpydb_cmd("shell", url, "-c", "db['l']\nprint(_)")
    assert everything.stdout.splitlines()[-1] == str(list(range(100_000)))
    assert zpydb_cmd("shell", url, "-c", "print(list(db['l']) == list(range(100_000)))") \
        .stdout == "True\n"
    long_string = zpydb_cmd("shell", url, "-c", "db['s']").stdout
    assert len(long_string) < MAX_CHARS + 200 and "print(_) shows all" in long_string
    assert zpydb_cmd("shell", url, "-c", "len(db['l'])").stdout == "100000\n"


def test_at_a_terminal_errors_do_not_stop_the_prompt(tmp_path):
    """REPL rules stay at the prompt: an error prints one line and the prompt goes on."""
    url = str(tmp_path / "Data.fs")
    child = spawn_shell(url, tmp_path)
    try:
        child.expect_exact("> ")
        child.sendline("db['zz']")
        child.expect_exact("KeyNotFoundError: db['zz']: no such key")
        child.expect_exact("> ")
        child.sendline("for i in range(2):")
        child.expect_exact("... ")
        child.sendline("    i * 10")
        child.expect_exact("... ")
        child.sendline("")
        child.expect_exact("0")
        child.expect_exact("10")
        child.expect_exact("> ")
        child.sendline("list(range(1000))")
        child.expect_exact("print(_) shows all of it")
        child.expect_exact("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


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
    status = shell.run_script("\n".join([
        "for i in range(3):",
        "    db[f'k{i}'] = i",
        "db['k1']",
        "None",
        "db.get('nope')",
        "db['none'] = None",
        "db['none']",
        "x = 5",
        "x",
    ]))
    assert status == 0 and err.getvalue() == ""
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


def test_an_int_too_long_to_print_is_shown_by_its_size(tmp_path):
    """pprint of an int past 4300 digits raises ValueError; the shell shows its size."""
    url = str(tmp_path / "Data.fs")
    result = zpydb_cmd("shell", url, "-c",
                       "db['n'] = 2 ** 20000\n{'n': db['n'], 'l': [1, True]}\ndb['n']\n"
                       "print(_.bit_length())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "{'n': <int of about 6021 digits>, 'l': [1, True]}", "<int of about 6021 digits>",
        "20001"], result.stdout + result.stderr
