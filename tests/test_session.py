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
        self.db = db

    def __getitem__(self, key):
        return 1

    def __len__(self):
        return 1

    def __iter__(self):
        self.db['n'] += 1
        return iter(['a'])


def test_a_write_inside_a_writes_value_is_refused_and_nothing_is_applied(db):
    """A write cannot run inside another write of the same thread (one connection, one
    transaction): before the refusal the inner one ended the outer's transaction,
    committed itself, and the outer was committed unnamed (no note, no exactly-once
    mark)."""
    db['n'] = 0
    with pytest.raises(zpydb.UnstorableValueError, match="inside another write"):
        db['x'] = _Writes(db)
    assert db['n'].value() == 0
    with pytest.raises(zpydb.KeyNotFoundError):
        db['x'].value()
    assert db.history(1)[0]['note'] == "db['n'] = 0"
    db['x'] = {'a': 1}
    assert db['x'].value() == {'a': 1}
