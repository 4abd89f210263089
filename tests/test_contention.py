"""Many writer processes on one key, under load: every statement succeeds, nothing is lost.

Issue 10, item 3.  Every test here runs with every core busy (``cpu_hog``: one
busy-looping process per core, started by the test module and stopped by PID),
for 2, 8 and 16 writer processes, over ZEO (a real runzeo) and PostgreSQL
(RelStorage on a real cluster).  The embedded FileStorage cannot be shared
between processes, so it is not here (tests/test_transactions.py covers it with
threads).

Each writer is a separate OS process (tests/workers.py; one pool of processes
per module, as starting 16 Pythons on a busy machine takes longer than the
test) that connects its own client for the test, says ``ready``, and starts
only when every writer is ready, so the writers really collide.  A worker
counts a statement that raises instead of dying, so the assertions say how many failed: the promise is *zero* failed statements, zero
lost updates and zero duplicates, for

* ``db['n'] += 1`` on one key,
* ``db['items'].append(tag)`` on one list (each tag a unique ``worker:seq``):
  empty at the start; growing past the BigList threshold (1,024) while the
  writers append; a BigList whose last chunk fills up while they append;
* ``db.atomic`` read-modify-write of one counter,
* ``db.atomic`` bank transfers between 10 accounts (the total must hold in every
  snapshot, and every account must end at its start plus the transfers that
  reported success).

Counts are small so the module runs in a few minutes on two busy cores; the
16-writer cases are marked ``sixteen`` (``-m "not sixteen"`` skips them in a
quick local run; ``make test`` runs them).
"""

import os
from collections import Counter

import pytest

from tests import workers
from tests.load import cpu_hog, worker_pool  # noqa: F401  (module-scoped fixtures)

SHARED_BACKENDS = [b for b in ("zeo", "postgres")
                   if b in os.environ.get("ZPYDB_TEST_BACKENDS", "file,zeo,postgres").split(",")]

#: writers -> statements per writer (cheap statements, and read-modify-write blocks)
OPS = {2: 100, 8: 20, 16: 10}
BLOCK_OPS = {2: 30, 8: 8, 16: 5}

SIXTEEN = pytest.mark.sixteen  # registered in setup.cfg
WRITERS = [2, 8, pytest.param(16, marks=SIXTEEN)]

#: items in the list before the appends: none; 1,015 (the writers push it past the
#: BigList threshold of 1,024); 1,530 (a BigList whose third 512-item chunk is full
#: after 6 more appends, so the writers open a new chunk)
PREFIX = {"small": 0, "promoted": 1015, "big": 1530}

pytestmark = [pytest.mark.usefixtures("cpu_hog"),
              pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)]


def run(pool, backend, mode, writers, count, **options):
    reports = pool.run(backend.url, mode, writers, count, **options)
    return reports, workers.summary(reports)


def assert_all_statements_succeeded(total, writers, count):
    assert total["unfinished"] == 0, total
    assert total["failed"] == 0, (f"{total['failed']} of {writers * count} statements "
                                  f"failed: {total['errors']}")
    assert total["done"] == writers * count, total


@pytest.mark.parametrize("writers", WRITERS)
def test_increments_on_one_key(backend, worker_pool, writers):
    db = backend.connect()
    db["n"] = 0
    count = OPS[writers]
    _, total = run(worker_pool, backend, "increment", writers, count, key="n")
    final = db["n"]._run()
    assert final == total["done"], f"lost {total['done'] - final} of {total['done']} increments"
    assert_all_statements_succeeded(total, writers, count)


def check_appends(items, reports, prefix):
    """Every successful append is there exactly once, nothing else was added."""
    assert items[:len(prefix)] == prefix, "the items before the appends changed"
    added = items[len(prefix):]
    expected = {workers.tag(r["seed"], seq) for r in reports for seq in r["ok"]}
    duplicates = [t for t, n in Counter(added).items() if n > 1]
    assert not duplicates, f"appended twice: {duplicates[:10]}"
    assert not expected - set(added), f"lost appends: {sorted(expected - set(added))[:10]}"
    assert not set(added) - expected, (f"appends that reported failure but were applied: "
                                       f"{sorted(set(added) - expected)[:10]}")
    for report in reports:  # one writer's appends stay in its own order
        own = [t for t in added if t.startswith(f"{report['seed']}:")]
        assert own == [workers.tag(report["seed"], seq) for seq in report["ok"]]


@pytest.mark.parametrize("writers, size", [
    (2, "small"), (8, "small"), pytest.param(16, "small", marks=SIXTEEN),
    (8, "promoted"),
    (2, "big"), (8, "big"), pytest.param(16, "big", marks=SIXTEEN)])
def test_appends_to_one_list(backend, worker_pool, writers, size):
    db = backend.connect()
    prefix = [f"pre{i}" for i in range(PREFIX[size])]
    db["items"] = prefix
    count = OPS[writers]
    reports, total = run(worker_pool, backend, "append", writers, count, key="items")
    check_appends(db["items"]._run(), reports, prefix)
    assert_all_statements_succeeded(total, writers, count)


@pytest.mark.parametrize("writers", WRITERS)
def test_atomic_read_modify_write(backend, worker_pool, writers):
    db = backend.connect()
    db["counter"] = 0
    count = BLOCK_OPS[writers]
    _, total = run(worker_pool, backend, "atomic_incr", writers, count, key="counter")
    final = db["counter"]._run()
    assert final == total["done"], f"lost {total['done'] - final} of {total['done']} blocks"
    assert_all_statements_succeeded(total, writers, count)


ACCOUNTS = 10
START = 100


@pytest.mark.parametrize("writers", WRITERS)
def test_bank_transfers(backend, worker_pool, writers):
    db = backend.connect()
    initial = {f"acct{i}": START for i in range(ACCOUNTS)}
    db["accounts"] = initial
    count = BLOCK_OPS[writers]
    reports, total = run(worker_pool, backend, "bank", writers, count, total=ACCOUNTS * START)
    balances = db["accounts"]._run()
    assert sum(balances.values()) == ACCOUNTS * START, balances
    assert min(balances.values()) >= 0, balances
    expected = {name: START + sum(r["net"][name] for r in reports) for name in initial}
    assert balances == expected, "a transfer was lost or applied without reporting success"
    assert sum(r["bad_total_count"] for r in reports) == 0, \
        [r["bad_totals"] for r in reports if r["bad_totals"]]
    assert sum(r["moved"] for r in reports) > 0
    assert_all_statements_succeeded(total, writers, count)


@pytest.mark.parametrize("writers", [8])
def test_writes_to_different_keys_of_one_dict(backend, worker_pool, writers):
    """Different keys of one dict: BTree buckets merge them; none may fail or vanish."""
    db = backend.connect()
    db["shared"] = {}
    count = OPS[writers]
    reports, total = run(worker_pool, backend, "distinct_keys", writers, count, key="shared")
    stored = db["shared"]._run()
    expected = {f"{r['seed']}-{seq}": seq for r in reports for seq in r["ok"]}
    assert stored == expected
    assert_all_statements_succeeded(total, writers, count)
