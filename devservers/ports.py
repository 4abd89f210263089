"""Ports and child processes: the one implementation tests/ and bench/ share.

``free_port`` finds a loopback port, ``wait_for_port`` polls until something
listens on it (stopping early when the server process dies),
``wait_for_port_closed`` until nothing does, and ``stop_process`` stops a
child by its PID: SIGTERM (or another signal), a bounded wait, then SIGKILL.
"""

import os
import signal
import socket
import subprocess
import time

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port(host=HOST):
    """A TCP port that was free a moment ago (bind to port 0, read it, close).

    Another process may take it before the caller binds it; callers that can
    retry (PostgresCluster) do.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host, port, timeout=0.2):
    """True when ``host:port`` accepts a TCP connection now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host, port, timeout=START_TIMEOUT, process=None):
    """Poll until ``host:port`` accepts a TCP connection; raise TimeoutError at the deadline.

    With ``process`` (a ``subprocess.Popen``), stop early with RuntimeError if it exits.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if port_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode} "
                               f"before listening on {host}:{port}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def wait_for_port_closed(host, port, timeout=STOP_TIMEOUT):
    """Poll until ``host:port`` refuses connections; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while port_open(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} still accepts connections after {timeout:.1f} s")
        time.sleep(0.05)


def stop_process(process, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Send ``sig`` to ``process`` (a ``Popen``) by PID, wait ``timeout`` s, then SIGKILL.

    Returns the exit code (None when ``process`` is None).
    """
    if process is None:
        return None
    if process.poll() is None:
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout)
    return process.returncode
