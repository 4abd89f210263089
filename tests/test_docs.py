"""Every ```python block in the user docs runs, in a fresh directory, as written,
and prints what its comments say.

A ``print(...)`` line in a runnable block must end with ``# prints: EXPECTED``: the
text it printed (every time, if it runs more than once) must equal EXPECTED, where
``...`` stands for any text.  Blocks check everything else with ``assert``.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
RUNNABLE = ["usage.md", "transactions.md", "files.md", "web.md", "history.md"]
PRINTS = re.compile(r"#\s*prints:\s?(.*)$")

# Runs the example with print() recording what each line of it printed.
RUNNER = """\
import builtins, io, json, sys
path, out = sys.argv[1], sys.argv[2]
printed = []
real_print = builtins.print
def recording_print(*args, **kwargs):
    frame = sys._getframe(1)
    if kwargs.get("file") is None and frame.f_code.co_filename == path:
        buffer = io.StringIO()
        real_print(*args, **dict(kwargs, file=buffer))
        printed.append([frame.f_lineno, buffer.getvalue()])
    real_print(*args, **kwargs)
builtins.print = recording_print
try:
    with open(path) as source:
        exec(compile(source.read(), path, "exec"), {"__name__": "__main__"})
finally:
    with open(out, "w") as stream:
        json.dump(printed, stream)
"""


def blocks():
    for name in RUNNABLE:
        path = DOCS / name
        if not path.exists():
            continue
        for number, code in enumerate(BLOCK.findall(path.read_text()), 1):
            yield pytest.param(code, id=f"{name}#{number}")


def expectations(code):
    """{line number: expected output} from the ``# prints:`` comments of ``code``."""
    expected = {}
    for number, line in enumerate(code.splitlines(), 1):
        match = PRINTS.search(line)
        if match:
            expected[number] = match.group(1).rstrip()
        elif re.match(r"\s*print\(", line):
            raise AssertionError(f"line {number} prints but says not what: add "
                                 f"'# prints: ...' to {line.strip()!r}")
    return expected


def matches(expected, text):
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, text, re.S) is not None


def check_output(code, printed):
    expected = expectations(code)
    lines = code.splitlines()
    seen = set()
    for number, text in printed:
        text = text.rstrip("\n")
        assert number in expected, f"line {number} printed {text!r} without '# prints:'"
        assert matches(expected[number], text), (
            f"line {number}: {lines[number - 1].strip()}\n"
            f"   printed: {text!r}\n   the docs say: {expected[number]!r}")
        seen.add(number)
    missing = sorted(set(expected) - seen)
    assert not missing, f"lines {missing} say what they print but printed nothing"


@pytest.mark.parametrize("code", list(blocks()))
def test_doc_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.delenv("ZPYDB_URL", raising=False)
    example, out = tmp_path / "example.py", tmp_path / "printed.json"
    example.write_text(code)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(example), str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    check_output(code, json.loads(out.read_text()))


def test_the_output_check_catches_a_wrong_expectation():
    code = "print(1 + 1)  # prints: 2\nprint('a', 'b')  # prints: a ...\n"
    check_output(code, [[1, "2\n"], [2, "a b\n"]])
    with pytest.raises(AssertionError, match="the docs say"):
        check_output(code, [[1, "3\n"], [2, "a b\n"]])
    with pytest.raises(AssertionError, match="printed nothing"):
        check_output(code, [[1, "2\n"]])
    with pytest.raises(AssertionError, match="prints but says not what"):
        check_output("print(1)\n", [[1, "1\n"]])
