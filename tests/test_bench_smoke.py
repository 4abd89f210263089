"""The benchmark suite runs end to end at tiny sizes (``python -m bench --smoke``).

No timing thresholds: this only checks that every workload ran and reported numbers.
"""

import json
import numbers
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

WORKLOADS = ["FS", "W1", "R1", "R2", "W2", "W3", "B1", "I1", "C1", "S1", "F1", "P1", "C2"]

# `make test` installs the bench extra (tinydb, psutil, matplotlib, redis), so CI runs this.
if not os.environ.get("CI"):
    pytest.importorskip("tinydb")
    pytest.importorskip("psutil")
    pytest.importorskip("matplotlib")


@pytest.mark.timeout(120)
def test_bench_smoke(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr[-4000:]
    files = sorted(p.name for p in out.iterdir())
    json_files = [name for name in files if name.endswith(".json")]
    assert len(json_files) == 1, files
    assert any(name.endswith(".md") for name in files), files
    assert any(name.endswith(".png") for name in files), files
    results = json.loads((out / json_files[0]).read_text())
    assert results["meta"]["mode"] == "smoke"
    workloads = results["workloads"]
    for key in WORKLOADS:
        assert key in workloads, key
        wl = workloads[key]
        assert not wl.get("error"), (key, wl.get("error"))
        if wl.get("skipped"):
            continue
        assert wl["rows"], key
        for row in wl["rows"]:
            assert isinstance(row["name"], str)
            for field in ("ops_per_s", "median_us"):
                assert isinstance(row[field], numbers.Number), (key, row)
                assert row[field] >= 0, (key, row)
        for ratio in wl.get("ratios", []):
            assert isinstance(ratio["ratio"], numbers.Number), (key, ratio)
