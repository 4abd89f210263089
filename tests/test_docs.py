"""Every ```python block in the user docs runs, in a fresh directory, as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
RUNNABLE = ["usage.md", "transactions.md", "files.md"]


def blocks():
    for name in RUNNABLE:
        path = DOCS / name
        if not path.exists():
            continue
        for number, code in enumerate(BLOCK.findall(path.read_text()), 1):
            yield pytest.param(code, id=f"{name}#{number}")


@pytest.mark.parametrize("code", list(blocks()))
def test_doc_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.delenv("ZPYDB_URL", raising=False)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
