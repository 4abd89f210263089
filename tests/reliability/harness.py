"""Starting, watching and stopping writer processes (tests/reliability/writer.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import child_env, wait_until
from .history import LogTail


class WriterProcess:
    """One writer child; its log is ``directory/<run>.log``; stopped by PID."""

    def __init__(self, directory, url, run, seed=0, **config):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run = run
        self.log_path = self.directory / f"{run}.log"
        self.stop_path = self.directory / f"{run}.stop"
        self.stderr_path = self.directory / f"{run}.stderr"
        self.config = {"url": url, "log": str(self.log_path), "stop": str(self.stop_path),
                       "run": run, "seed": seed, **config}
        self.process = None
        self.tail = LogTail(self.log_path)

    def start(self):
        with open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.writer", json.dumps(self.config)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=child_env(),
                cwd=self.directory)
        return self

    @property
    def pid(self):
        return self.process.pid

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def acks(self):
        return self.tail.poll().acks

    def stderr(self, limit=3000):
        try:
            text = self.stderr_path.read_text(errors="replace")
            return text[-limit:] if limit else text
        except OSError:
            return ""

    def wait_acks(self, count, timeout, what="acknowledged writes", max_errors=None):
        """Until the log holds ``count`` acks; fails early if the writer died or (with
        ``max_errors``) logged more errors than that."""
        def reached():
            if self.acks() >= count:
                return True
            if max_errors is not None:
                errors = [e for e in self.tail.events if e.get("ev") == "err"]
                if len(errors) > max_errors:
                    raise AssertionError(f"writer {self.run}: {len(errors)} errors before "
                                         f"{count} {what}; last: {errors[-1]['type']}: "
                                         f"{errors[-1]['msg'][:300]}")
            if not self.alive():
                raise AssertionError(f"writer {self.run} exited ({self.process.returncode}) "
                                     f"before {count} {what}:\n{self.stderr()}")
            return False
        try:
            wait_until(reached, timeout, f"{count} {what} of writer {self.run} "
                                         f"(has {self.tail.acks})")
        except AssertionError as exc:
            if self.alive() and "timed out" in str(exc):   # a hang: where is it stuck?
                raise AssertionError(f"{exc}; writer HUNG after {self.tail.events[-3:]}; "
                                     f"stacks:\n{self.stacks()}") from None
            raise

    def stacks(self):
        """Every thread's stack of a live writer (faulthandler on SIGUSR1)."""
        if not self.alive():
            return ""
        size = len(self.stderr(limit=None))
        self.signal(signal.SIGUSR1)
        wait_until(lambda: len(self.stderr(limit=None)) > size or not self.alive(), 10,
                   "the writer's stack dump")
        time.sleep(0.2)                                    # let the dump finish
        return self.stderr(limit=None)[size:][-6000:]

    def signal(self, sig):
        os.kill(self.process.pid, sig)

    def kill(self):
        """SIGKILL by PID and reap."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout=60):
        """Ask the loop to end (stop file), wait; SIGKILL if it does not. Returns exit code."""
        self.stop_path.touch()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"writer {self.run} did not stop within {timeout} s "
                                 f"(killed):\n{self.stderr()}") from None

    def events(self):
        return self.tail.poll().events
