"""zpydb: a Python-syntax database for nested dicts and lists, on ZODB/ZEO.

    import zpydb
    db = zpydb.connect()             # ./var/Data.fs, or $ZPYDB_URL
    db['l'] = range(10)
    db['l'][4] = ['a', 'b', 'c']
    db.undo(); db.redo()
    [v for v in db['l'][4]]          # ['a', 'b', 'c']
"""

from .database import Database, client, connect
from .errors import (AttributeNotFoundError, StorageError, BadArgumentError, BadIndexError,
                     ConflictError, DatabaseLockedError, DisconnectedError, FormatError,
                     Error, KeyNotFoundError, NotAContainerError, PathError, ReadOnlyError,
                     UndoError, UnorderableKeyError, UnstorableValueError, URLError,
                     OperationError, UnsafeClassError, ValueNotFoundError, CommitInterrupted, PackError,
                     PastIsReadOnlyError, HistoryNotKeptError)
from .files import File
from .paths import Path

__version__ = "0.1.0"

__all__ = [
    "connect", "client", "Database", "Path", "File",
    "Error", "PathError", "KeyNotFoundError", "BadIndexError", "NotAContainerError",
    "UnstorableValueError", "UnorderableKeyError", "ValueNotFoundError", "ConflictError",
    "UndoError", "ReadOnlyError", "DisconnectedError", "StorageError", "DatabaseLockedError",
    "FormatError", "URLError", "BadArgumentError", "AttributeNotFoundError", "OperationError",
    "UnsafeClassError", "CommitInterrupted", "PackError", "PastIsReadOnlyError",
    "HistoryNotKeptError",
]
