"""Small helpers shared by the test modules."""

import os
import sys

import pexpect


def spawn_shell(url, tmp_path, *args, term="dumb", timeout=30):
    """``zpydb shell URL`` on a real pseudo-terminal, with a private history file."""
    env = dict(os.environ, ZPYDB_HISTORY=str(tmp_path / "history"), TERM=term)
    return pexpect.spawn(sys.executable, ["-m", "zpydb", "shell", url, *args], env=env,
                         encoding="utf-8", timeout=timeout)


def transaction_count(db):
    """How many transactions the storage's undo log holds (reads must add none)."""
    return len(db._session.db.undoInfo(0, 100_000))


def last_note(db):
    return db.history(1)[0]["note"]
