"""Client workloads run as separate OS processes (or threads for an embedded file).

    python -m tests.workers MODE URL SEED COUNT

Each mode connects its own client, does COUNT operations, and prints a JSON
report.  Loops are bounded in count and by DEADLINE seconds.
"""

import json
import random
import sys
import time

import zpydb

DEADLINE = 120.0


def increment_atomic(db, seed, count):
    """COUNT increments of db['counter'] through db.atomic (read, then write)."""
    def bump(t):
        t["counter"] = t["counter"]._run() + 1
    for _ in range(count):
        db.atomic(bump)
    return {"done": count}


def increment_augmented(db, seed, count):
    for _ in range(count):
        db["n"] += 1
    return {"done": count}


def append_items(db, seed, count):
    for i in range(count):
        db["items"].append(f"{seed}-{i}")
    return {"done": count}


def distinct_keys(db, seed, count):
    for i in range(count):
        db["shared"][f"{seed}-{i}"] = i
    return {"done": count}


def bank_transfers(db, seed, count):
    """Move random amounts between accounts, each transfer one transaction block."""
    rng = random.Random(seed)
    accounts = db["accounts"].keys()
    moved = 0
    for _ in range(count):
        source, target = rng.sample(accounts, 2)
        amount = rng.randint(1, 20)

        def transfer(t):
            balance = t["accounts"][source]._run()
            if balance >= amount:
                t["accounts"][source] = balance - amount
                t["accounts"][target] = t["accounts"][target]._run() + amount
        db.atomic(transfer)
        moved += 1
    return {"done": moved}


MODES = {f.__name__: f for f in (increment_atomic, increment_augmented, append_items,
                                 distinct_keys, bank_transfers)}


def run(mode, url, seed, count):
    with zpydb.connect(url, wait_timeout=30) as db:
        started = time.monotonic()
        report = MODES[mode](db, seed, count)
        report["seconds"] = time.monotonic() - started
        return report


if __name__ == "__main__":
    mode, url, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(run(mode, url, seed, count)))
