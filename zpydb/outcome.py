"""Exactly-once statements: find out whether a commit that failed did commit.

When the connection to a ZEO server breaks during the two-phase commit (the
server was killed, the network dropped), the client cannot know whether the
server wrote the transaction before it went away.  Saying "nothing was
applied" would be a guess, and retrying blindly would apply an ``append``
twice.  So every zpydb transaction carries a unique id in its extension
(:data:`TXID_KEY`), and after such a failure zpydb reads the newest part of the
transaction log (``DB.undoInfo``, which travels over ZEO and RelStorage) once
the server answers again: the id is there (it committed: the statement
returns normally) or it is not (nothing was applied: safe to retry).

The walk is bounded: it stops at transactions older than the statement (with
a margin for clock differences between client and server) and after
:data:`MAX_ENTRIES` entries.
"""

import os
import time

TXID_KEY = "zpydb_txid"
CLOCK_MARGIN = 600.0      # seconds a server clock may be behind this client's
MAX_ENTRIES = 100_000
BATCH = 200


class Unknown(Exception):
    """The log could not be read (storage without undo, or still unreachable)."""


def new_txid():
    """32 hex digits of 128 random bits (a uuid4 has 122; ``uuid.uuid4().hex``
    costs 2 µs, most of it building the UUID object, this 0.3 µs)."""
    return os.urandom(16).hex()


def mark(txn, txid):
    """Label ``txn`` so that :func:`committed` can find it later."""
    txn.setExtendedInfo(TXID_KEY, txid)


def committed(db, txid, started):
    """True if a transaction labelled ``txid`` is in ``db``'s log.

    ``started`` is ``time.time()`` before the statement began; entries older
    than that (minus :data:`CLOCK_MARGIN`) cannot be it.  Raises the storage's
    own error (e.g. ClientDisconnected) if the server does not answer.
    """
    if not db.supportsUndo():
        raise Unknown("this storage keeps no transaction log to look in")
    oldest = started - CLOCK_MARGIN
    first = 0
    while first < MAX_ENTRIES:
        batch = db.undoInfo(first, first + BATCH)
        for entry in batch:
            if entry.get(TXID_KEY) == txid:
                return True
            if entry.get("time", time.time()) < oldest:
                return False
        if len(batch) < BATCH:
            return False
        first += BATCH
    raise Unknown(f"the transaction was not among the newest {MAX_ENTRIES} transactions")
