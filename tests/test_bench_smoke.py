"""The benchmark suite runs end to end at tiny sizes (``python -m bench --smoke``).

No timing thresholds: this only checks that every workload ran and measured something
(every row a throughput and a latency above zero, every comparison a real ratio).
"""

import json
import numbers
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

WORKLOADS = ["FS", "W1", "R1", "R2", "W2", "W3", "B1", "I1", "C1", "S1", "F1", "P1", "C2", "H1",
             "H2", "L1", "X1", "WA", "V1", "V2", "HP", "W4"]

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
            # a throughput row has ops/s; a latency row (H2, WA) has its p99 instead
            kind = "ops_per_s" if "ops_per_s" in row or "p99_us" not in row else "p99_us"
            for field in (kind, "median_us"):
                assert isinstance(row[field], numbers.Number), (key, row)
                assert row[field] > 0, (key, row)       # 0 ops/s: nothing was measured
        for ratio in wl.get("ratios", []):
            assert not ratio.get("error"), (key, ratio)
            assert isinstance(ratio["ratio"], numbers.Number), (key, ratio)
            if ratio.get("target") != "0":              # counts of failures may be 0
                assert ratio["ratio"] > 0, (key, ratio)


def test_a_ratio_needs_a_measured_baseline():
    from bench.common import ratio_row
    assert ratio_row("z vs b", {"ops_per_s": 50.0}, {"ops_per_s": 100.0}, 0.9) == {
        "name": "z vs b", "ratio": 0.5, "target": 0.9, "pass": False}
    assert ratio_row("z vs b", {"ops_per_s": 100.0}, {"ops_per_s": 100.0}, 0.9)["pass"] is True
    for base in (0, 0.0, None):
        row = ratio_row("z vs b", {"ops_per_s": 100.0}, {"ops_per_s": base}, 0.9)
        assert row["ratio"] is None and row["pass"] is False and "baseline" in row["error"]
        row = ratio_row("z vs b", {"ops_per_s": 100.0}, {"ops_per_s": base})
        assert row["ratio"] is None and "pass" not in row
