"""An installed zpydb, not run from the repository: a real wheel, built and installed offline.

The wheel is built from a copy of the packaging files (nothing is written into the
repository), installed with ``pip install --target`` and run from another directory
with only that install on ``PYTHONPATH``; its dependencies (ZODB, ZEO...) come from the
test virtualenv, whose ``runzeo`` the server runs.  Building needs setuptools and
``wheel`` in that virtualenv (the ``test`` extra installs ``wheel``).
"""

import os
import shutil
import signal
import subprocess
import sys

import pytest

try:
    from tests.servers import REPO, free_port, wait_for_port, wait_for_port_closed
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from servers import REPO, free_port, wait_for_port, wait_for_port_closed

import zpydb

SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "zpydb", "zeo_configs")


def pip(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, bin)``: zpydb installed from its wheel into a directory of its own."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"),
        str(source), cwd=root)
    wheels = list((root / "dist").glob("zpydb-*.whl"))
    assert len(wheels) == 1, wheels
    site = root / "site"
    pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheels[0]), cwd=root)
    return site, site / "bin"


def installed_env(site):
    """Only the installed copy of zpydb is importable (not the repository's)."""
    return dict(os.environ, PYTHONPATH=str(site))


def test_the_wheel_carries_the_bundled_configs(installed):
    site, _ = installed
    for name in ("zeo.conf", "replica.conf", "zeo-tls.conf"):
        packaged = site / "zpydb" / "zeo_configs" / name
        assert packaged.read_text() == (REPO / "zeo_configs" / name).read_text()


def test_the_wheel_carries_the_console(installed):
    """`zpydb web` serves these from the package (importlib.resources), nothing else."""
    site, _bin = installed
    for name in ("index.html", "console.js", "console.css"):
        packaged = site / "zpydb" / "web" / "console" / name
        assert packaged.read_bytes() == (REPO / "zpydb" / "web" / "console" / name).read_bytes()
    assert (site / "zpydb" / "web" / "app.py").exists()


def test_installed_zpydb_finds_its_configs_from_another_directory(installed, tmp_path):
    site, _ = installed
    code = ("import zpydb.server as s; print(s.__file__); "
            "print(s.bundled_config('zeo.conf')); print(s.runzeo_command()[2])")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=installed_env(site),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    module, config, command_config = result.stdout.split()
    assert module.startswith(str(site))  # the installed copy, not the repository
    assert config == command_config == str(site / "zpydb" / "zeo_configs" / "zeo.conf")


def test_installed_zpydb_version(installed, tmp_path):
    site, bin_dir = installed
    result = subprocess.run([str(bin_dir / "zpydb"), "--version"], cwd=tmp_path,
                            env=installed_env(site), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"zpydb {zpydb.__version__}"


def test_installed_zpydb_serve_runs_from_another_directory(installed, tmp_path):
    site, bin_dir = installed
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with open(tmp_path / "out", "wb") as out:
        process = subprocess.Popen([str(bin_dir / "zpydb"), "serve", "--address",
                                    f"127.0.0.1:{port}"], cwd=elsewhere, env=installed_env(site),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 30, process)
        db = zpydb.connect(f"zeo://127.0.0.1:{port}", wait_timeout=10)
        try:
            db["served"] = [1, 2]
            assert db["served"]._run() == [1, 2]
        finally:
            db.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    wait_for_port_closed("127.0.0.1", port)
    output = (tmp_path / "out").read_text()
    assert f"config: {site / 'zpydb' / 'zeo_configs' / 'zeo.conf'}" in output, output
    assert (elsewhere / "var" / "zeo" / "Data.fs").exists()  # data where it was started
