"""Small helpers shared by the test modules."""

import os
import sys

import pexpect
import transaction
from BTrees.OOBTree import OOBTree

from zpydb import nodes
from zpydb.bigdict import BigDict, spans_buckets
from zpydb.session import data_root


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


def check_stored_counts(db, legacy=False):
    """Walk every stored dict of ``db``: each BigDict's Length equals its tree's real
    size, and (unless ``legacy``: data written by format 1 may hold big plain trees)
    every plain OOBTree is one bucket, anything bigger having been wrapped.
    Returns how many BigDicts there are."""
    tm = transaction.TransactionManager()
    conn = db._session.db.open(transaction_manager=tm)
    tm.begin()
    try:
        found = 0
        stack = [data_root(conn)]
        while stack:
            node = stack.pop()
            if isinstance(node, BigDict):
                found += 1
                assert node.length() == sum(1 for _ in node.tree.keys()), "a wrong count"
                assert len(node) == node.length()
                stack.extend(node.values())
            elif isinstance(node, OOBTree):
                assert legacy or not spans_buckets(node), "a dict past one bucket without a Length"
                stack.extend(node.values())
            elif nodes.is_list_node(node):
                stack.extend(node)
        return found
    finally:
        tm.abort()
        conn.close()
