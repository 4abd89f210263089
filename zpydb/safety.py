"""The closed set of classes zpydb ever loads from a database, and the hooks that enforce it.

A ZODB record is a pickle, and unpickling calls whatever global the pickle
names: ``posix.system`` is as easy to name as ``BTrees.OOBTree.OOBTree``.
zpydb itself only ever stores the few classes in :data:`ALLOWED_CLASSES`
(its node classes, BTrees, persistent containers, blobs; scalars, tuples and
bytes need no class at all in ZODB's pickle protocol 3), so anything else in a
record was put there by some other program -- possibly to run code in whoever
reads it.  Every place that unpickles data another client wrote is therefore
restricted to that list:

* :func:`class_factory` is ``ZODB.DB(class_factory=...)``: ZODB's
  ``ObjectReader`` resolves *every* global of a record through it (the class
  of a persistent object, the class in a persistent reference, and any other
  global inside the state, such as ``posix.system`` in a ``__reduce__``);
* :func:`conflict_find_global` replaces ``ZODB.ConflictResolution.find_global``,
  which imports any module a record names, when conflicts are resolved (in
  runzeo for ZEO; in the client for FileStorage and RelStorage);
* :func:`plain_loads` replaces the unrestricted ``loads`` ZODB, FileStorage
  and RelStorage use for transaction metadata (the "extension" dict of
  ``undoLog``/``history``), which a client sends as raw bytes if it likes.

Refusals raise :class:`~zpydb.errors.UnsafeClassError` naming the global; the
refused module is never imported.  :func:`install` applies the process-wide
patches (idempotent); :func:`db_kwargs` adds the class factory to the keywords
of a ``ZODB.DB``.  See docs/security.md.
"""

import importlib
import io
import logging
import sys
import threading

from zodbpickle import pickle as zpickle

from .errors import UnsafeClassError

logger = logging.getLogger("zpydb.safety")

#: (module, name) of every class zpydb stores.  Some may not exist in an older
#: zpydb; they are listed so data written by a newer one is not called unsafe.
ALLOWED_CLASSES = frozenset({
    ("persistent.mapping", "PersistentMapping"),   # ZODB's root object
    ("persistent.list", "PersistentList"),         # lists (before AppendList), old data
    ("BTrees.OOBTree", "OOBTree"),                 # dicts
    ("BTrees.OOBTree", "OOBucket"),
    ("BTrees.Length", "Length"),                   # a BigDict's key count
    ("BTrees.IOBTree", "IOBTree"),                 # BigList's chunk index
    ("BTrees.IOBTree", "IOBucket"),
    ("ZODB.blob", "Blob"),                         # zpydb.File content
    ("zpydb.files", "StoredFile"),
    ("zpydb.biglist", "BigList"),
    ("zpydb.biglist", "Chunk"),
    ("zpydb.bigdict", "BigDict"),
    ("zpydb.merging", "Counter"),
    ("zpydb.merging", "AppendList"),
})

_extra = set()       # classes a program added with allow()
_resolved = {}       # (module, name) -> the class, once imported
_installed = False
_install_lock = threading.Lock()


def allow(module, name):
    """Let this process also load ``module.name`` (for programs that store their own classes).

    Only the calling process is affected; a ZEO server still refuses the class
    during conflict resolution unless it is allowed there as well.
    """
    _extra.add((module, name))


def is_allowed(module, name):
    return (module, name) in ALLOWED_CLASSES or (module, name) in _extra


def load_class(module, name):
    """The allowed class ``module.name``; UnsafeClassError for anything else (never imported)."""
    key = (module, name)
    found = _resolved.get(key)
    if found is not None:
        return found
    if not (isinstance(module, str) and isinstance(name, str) and is_allowed(module, name)):
        raise UnsafeClassError(module, name)
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise UnsafeClassError(module, name, "it is not available in this installation "
                                             "(data written by a newer zpydb?)") from None
    _resolved[key] = found
    return found


def class_factory(connection, module, name):
    """``ZODB.DB(class_factory=...)``: resolve a record's global, refusing unknown ones."""
    return load_class(module, name)


def db_kwargs(dbkw):
    """``dbkw`` for ``ZODB.DB(storage, **dbkw)`` with the class factory; also :func:`install`."""
    install()
    return dict(dbkw, class_factory=class_factory)


# -- conflict resolution ------------------------------------------------------

def conflict_find_global(module, name):
    """``ZODB.ConflictResolution.find_global`` for allowed classes only.

    Raising ``BadClassName`` makes ZODB give up resolving (the writer gets a
    ConflictError) instead of importing and calling what the record names.
    """
    from ZODB.ConflictResolution import BadClassName

    try:
        return load_class(module, name)
    except UnsafeClassError as exc:
        logger.warning("conflict resolution refused: %s", exc)
        raise BadClassName(module, name) from None


# -- transaction metadata -----------------------------------------------------

class _PlainUnpickler(zpickle.Unpickler):
    """An unpickler that loads plain data only (dicts, lists, str, bytes, numbers)."""

    def find_class(self, module, name):
        raise UnsafeClassError(module, name, "transaction metadata holds plain data only")


def plain_loads(data):
    """``ZODB._compat.loads`` for transaction extensions, refusing every global."""
    return _PlainUnpickler(io.BytesIO(data), encoding="ASCII", errors="bytes").load()


#: Modules whose module-level ``loads`` only ever reads transaction extensions.
EXTENSION_LOADERS = ("ZODB.Connection", "ZODB.FileStorage.FileStorage",
                     "relstorage.storage.history")


def _patch_extension_loaders():
    for module_name in EXTENSION_LOADERS:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, "loads", None) is not plain_loads:
            module.loads = plain_loads


def install():
    """Restrict conflict resolution and metadata loading in this process (idempotent).

    Called by :func:`db_kwargs` (every database zpydb opens) and by
    ``zpydb.zeo_guard`` (runzeo).  RelStorage's loader is patched once it is
    imported, so this runs again on every open.
    """
    global _installed
    import ZODB.ConflictResolution
    import ZODB.Connection  # noqa: F401 - patched below
    import ZODB.FileStorage.FileStorage  # noqa: F401

    with _install_lock:
        if not _installed:
            ZODB.ConflictResolution.find_global = conflict_find_global
            _register_zeo_error()
            _installed = True
        _patch_extension_loaders()


def _register_zeo_error():
    """Let a ZEO client re-raise a server-side refusal as UnsafeClassError.

    Over msgpack, ZEO sends an exception as its class name and ``__dict__``;
    names it does not know arrive as a generic ``ServerException``.
    """
    from ZEO.asyncio import client

    name = f"{UnsafeClassError.__module__}.{UnsafeClassError.__name__}"
    client.exc_factories[name] = lambda _name, state: UnsafeClassError(
        state.get("module", "?"), state.get("name", "?"), state.get("reason"))


# -- exact scalar types ---------------------------------------------------------

#: How to copy an instance of a subclass into its builtin base type.  Each is the
#: base type's own slot called directly, so nothing the subclass defines runs
#: (not ``__str__``, ``__index__``, ``__getitem__``, ``__reduce__``...).
_SCALAR_COPIES = ((str, str.__str__), (bytes, lambda value: bytes.__getitem__(value, slice(None))),
                  (int, int.__index__), (float, float.__float__))


def exact_scalar(value, path="db"):
    """A str/bytes/int/float subclass instance as an instance of the builtin type.

    Stored as is, the instance would be pickled with a reference to its class:
    readers without that class would get ``<broken ...>`` objects, and a
    ``__reduce__`` would run code in every reader.  ``type()`` is used, not
    ``isinstance``, which an object can fool with a ``__class__`` property.
    """
    kind = type(value)
    if value is None or kind is bool:  # neither can be subclassed
        return value
    for base, copy in _SCALAR_COPIES:
        if issubclass(kind, base):
            return copy(value)
    from .errors import UnstorableValueError
    raise UnstorableValueError(path, f"cannot store a value of type {kind.__name__} (it only "
                                     f"claims to be a {value.__class__.__name__})")


def exact_tuple(value, path="db"):
    """A tuple subclass instance (a namedtuple...) as a plain tuple of its items.

    ``tuple.__getitem__`` with a full slice copies the items the tuple really
    holds; the subclass's ``__iter__``/``__getitem__``/``__len__`` never run.
    """
    if type(value) is tuple:
        return value
    if issubclass(type(value), tuple):
        return tuple.__getitem__(value, slice(None))
    from .errors import UnstorableValueError
    raise UnstorableValueError(path, f"cannot store a value of type {type(value).__name__} (it "
                                     f"only claims to be a {value.__class__.__name__})")
