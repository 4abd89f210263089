"""Where a statement's transaction comes from: autocommit, blocks, lock/unlock, atomic.

A :class:`~zpydb.paths.Path` hands each operation to an *executor*:

* :class:`Autocommit` (the default ``db``): each statement is its own
  transaction (session.py), or joins this thread's ``db.lock()`` block if open;
* :class:`Block` (``with db.transaction() as t``): every statement runs in one
  open ZODB transaction on a private connection, which commits at the end.

Blocks are serializable: every persistent object a block reads is registered
with ``Connection.readCurrent``, so if another client commits a change to it
before the block commits, the commit fails with ConflictError instead of
silently committing a decision based on stale data (no write skew).  Each
statement runs inside a savepoint, so a statement that fails half-way inside a
block leaves nothing of itself behind even when the caller catches the error.

``db.atomic(func)`` re-runs a whole block on conflict, with ``transaction``'s
``TransactionManager.attempts()`` plus a bounded, jittered back-off.
"""

import random
import threading
import time

from . import errors
from .session import data_root, describe_transaction, translate_errors


class Autocommit:
    """One transaction per statement (or this thread's open lock() block)."""

    def __init__(self, session):
        self.session = session
        self._locks = threading.local()

    @property
    def lock_block(self):
        return getattr(self._locks, "block", None)

    def read(self, func):
        block = self.lock_block
        if block is not None:
            return block.read(func)
        return self.session.read(lambda root, conn: func(root, None))

    def write(self, func, note):
        block = self.lock_block
        if block is not None:
            return block.write(func, note)
        return self.session.write(lambda root, conn: func(root, None), note)

    # pyzdb's lock()/unlock(): an optimistic block, not a global lock
    def lock(self):
        if self.lock_block is not None:
            raise errors.Error("db.lock() is already held by this thread; call db.unlock()")
        self._locks.block = Block(self.session)

    def unlock(self):
        block = self.lock_block
        if block is None:
            raise errors.Error("db.unlock() without db.lock()")
        self._locks.block = None
        block.commit()


class Block:
    """One open transaction on a private connection; statements join it."""

    def __init__(self, session):
        self.session = session
        self.tm, self.conn = session.open_private()
        self.notes = []
        self.done = False
        with translate_errors(session.name):
            self.tm.begin()

    def _visit(self, obj):
        if getattr(obj, "_p_oid", None) is not None:
            self.conn.readCurrent(obj)

    def read(self, func):
        self._check()
        with translate_errors(self.session.name):
            return func(data_root(self.conn), self._visit)

    def write(self, func, note):
        self._check()
        savepoint = self.tm.savepoint()
        try:
            with translate_errors(self.session.name):
                result = func(data_root(self.conn), self._visit)
        except BaseException:
            savepoint.rollback()
            raise
        self.notes.append(note)
        return result

    def commit(self):
        self._check()
        self.done = True
        try:
            self.describe()
            with translate_errors(self.session.name):
                self.tm.commit()
        except BaseException:
            self.tm.abort()
            raise
        finally:
            self.conn.close()

    def describe(self):
        if self.notes:
            describe_transaction(self.tm.get(), "; ".join(self.notes))

    def close(self):
        self.done = True
        self.tm.abort()
        self.conn.close()

    def abort(self):
        if self.done:
            return
        self.done = True
        self.tm.abort()
        self.conn.close()

    def _check(self):
        if self.done:
            raise errors.Error("this transaction block has already ended")


class TransactionContext:
    """``with db.transaction() as t:`` commits on success, aborts on exception."""

    def __init__(self, session, make_root):
        self.session = session
        self.make_root = make_root
        self.block = None

    def __enter__(self):
        self.block = Block(self.session)
        return self.make_root(self.block)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.block.abort()
            return False
        self.block.commit()
        return False


def atomic(session, make_root, func, tries=5, backoff=0.01, max_backoff=0.5):
    """Run ``func(t)`` in a block; on a conflict start over, at most ``tries`` times.

    The retry loop is ``TransactionManager.attempts()`` from the ``transaction``
    package: each attempt begins a new transaction (so it reads the newly
    committed state), commits on success, and swallows a transient error
    (ConflictError) to go round again; the last attempt's error propagates.
    Between attempts zpydb sleeps a jittered, doubling, capped back-off.
    """
    block = Block(session)
    try:
        with translate_errors(session.name):
            for number, attempt in enumerate(block.tm.attempts(tries)):
                if number:
                    _back_off(backoff, number, max_backoff)
                with attempt:
                    block.notes = []
                    result = func(make_root(block))
                    block.describe()
        return result
    finally:
        block.close()


def _back_off(base, number, cap):
    time.sleep(min(cap, base * 2 ** (number - 1)) * (0.5 + random.random()))
