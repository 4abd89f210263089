"""Small helpers shared by the test modules."""


def transaction_count(db):
    """How many transactions the storage's undo log holds (reads must add none)."""
    return len(db._session.db.undoInfo(0, 100_000))


def last_note(db):
    return db.history(1)[0]["note"]
