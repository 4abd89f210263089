"""session.py: reads and writes of a thread's own connection, against real storages.

Found by the hostile run against issue 13 (the reads without a Transaction object):
a read made while this thread's write is converting its value (a mapping of the
application's that looks something up in db as zpydb reads it) used to end the
write's transaction: the write was then committed in a transaction of its own,
without its note, its user or the mark the exactly-once lookup finds after a
disconnect (db.history() did not list it).
"""

from collections.abc import Mapping

import pytest

import zpydb


class _LooksUp(Mapping):
    """An application's mapping that reads ``db`` while zpydb reads it to store it."""

    def __init__(self, db, how):
        self.db, self.how, self.seen = db, how, []
        self.items = {'a': 1}

    def __getitem__(self, key):
        return self.items[key]

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        if self.how == "value":
            self.seen.append(self.db['src']['v'].value())
        else:  # an iteration: its later batches read the snapshot of its first one
            self.seen.append(sum(1 for _ in self.db['many']))
        return iter(self.items)


@pytest.mark.parametrize("how", ["value", "iteration"])
def test_a_read_inside_a_writes_value_leaves_the_write_whole(db, how):
    db['src'] = {'v': 7}
    db['many'] = list(range(2500))  # several batches
    value = _LooksUp(db, how)
    db['x'] = value
    assert value.seen == ([7] if how == "value" else [2500])
    assert db['x'].value() == {'a': 1}
    newest = db.history(1)[0]
    assert newest['note'].startswith("db['x'] ="), newest
    db['l'] = []
    db['l'].append(_LooksUp(db, how))
    assert db['l'].value() == [{'a': 1}]
    assert db.history(1)[0]['note'].startswith("db['l'].append("), db.history(1)
    db['src']['v'] = 8  # and the session goes on reading fresh data
    assert db['src']['v'].value() == 8


class _Writes(Mapping):
    """An application's mapping that writes to ``db`` while zpydb reads it to store it."""

    def __init__(self, db):
        self.db, self.runs = db, 0

    def __getitem__(self, key):
        return 1

    def __len__(self):
        return 1

    def __iter__(self):
        self.db['n'] += 1
        self.runs += 1  # (the statement's note, its repr, reads it too)
        return iter(['a'])


def test_a_write_inside_a_writes_value_commits_on_its_own_and_the_write_whole(db):
    """A write cannot share the connection of another write of the same thread (one
    transaction): before the fix the inner one ended the outer's transaction and
    committed itself, and the outer was committed unnamed (no note, no exactly-once
    mark).  The inner write commits on a connection of its own."""
    db['n'] = 0
    value = _Writes(db)
    db['x'] = value
    assert value.runs >= 1 and db['n'].value() == value.runs
    assert db['x'].value() == {'a': 1}
    assert db.history(1)[0]['note'].startswith("db['x'] = ")
    assert db.history(2)[1]['note'] == "db['n'] += 1"


def test_a_signal_handler_that_writes_lets_the_interrupted_write_go_on(db):
    """A SIGTERM handler that records something in db and returns (the program goes
    on): run at the safe point of the write it interrupted, its statement used to end
    that write's transaction, and the write returned having applied nothing."""
    import os
    import signal
    import time

    got = []

    def record(signum, frame):
        db['signals'].append(signum)
        got.append(signum)

    class SendsTerm(dict):
        def __iter__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(50):
                if got:
                    break
                time.sleep(0.002)
            return super().__iter__()

    db['signals'] = []
    db['x'] = 0
    previous = signal.signal(signal.SIGTERM, record)
    try:
        db['x'] = SendsTerm(a=1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert got == [signal.SIGTERM]
    assert db['signals'].value() == [signal.SIGTERM]
    assert db['x'].value() == {'a': 1}
    assert db.history(1)[0]['note'].startswith("db['x'] = ")
