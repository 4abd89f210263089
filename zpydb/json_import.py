"""``zpydb import``: a JSON document stored while it is parsed, in bounded memory.

The document is read as a stream of events (:mod:`zpydb.json_events`: strict
UTF-8 and JSON, no integer literal the parser would crash on) and stored as it
is read, inside one transaction block, so a problem found half-way (in the
input, or a value zpydb cannot store) stores nothing.  What is held in memory:

* the value at the import's path (at the root: each key's value) is created
  empty and filled in batches of :data:`IMPORT_BATCH` items; values nested
  deeper are built whole before they are stored (they are what one item is);
* every :data:`IMPORT_RELEASE_EVERY` items a savepoint writes what was stored
  to the transaction's temporary storage and the object cache drops it.  ZODB
  still keeps its bookkeeping of every new persistent object until the commit
  (the oid, its place in the temporary storage: about 150 bytes, 300 of RSS);
  a dict or list of scalars makes one object per BTree bucket or list chunk,
  a dict of 1M small dicts makes 1M of them;
* ``{"$dict": [[key, value], ...]}`` (a dict whose keys are not all str, as
  export writes it) is streamed too.  Whether the object is that tag or a plain
  dict that happens to have a "$dict" key is known only after the array ends,
  so its pairs are written aside (:class:`_Spool`: marshal, in memory up to
  :data:`SPOOL_MEMORY` bytes, then a temporary file) and stored from there.

The tags (``$bytes``, ``$int``, ``$tuple``, ``$dict``, ``$file``) are decoded
with :mod:`zpydb.export`'s decoders, so the result is what decoding the whole
document at once gives (tests/test_json_import.py), with one difference: of an
object's repeated keys the last value is stored, but every value is checked as
it is read, so a malformed one is refused even if a later one would replace it.
"""

import marshal
import os
import tempfile

from . import export, json_events
from .errors import Error
from .nodes import MAX_DEPTH

#: Import stores a streamed list's items / dict's keys in batches of this many.
IMPORT_BATCH = 1000
#: Import takes a savepoint and lets the cache drop what it saved every this many items.
IMPORT_RELEASE_EVERY = 5000
#: A $dict's pairs are held in memory up to this many bytes, then in a temporary file.
SPOOL_MEMORY = 4 << 20


def import_json(db, stream, steps=(), progress=True, context=None):
    """Read JSON from ``stream`` (text or binary) and store it at ``steps`` in one block.

    At the root the document must be an object; its keys are added to (and
    replace the same keys in) the database.  Returns the number of keys/items.
    ``context``: see :func:`zpydb.export.import_context` (where referenced files are).
    """
    if context is None:
        name = getattr(stream, "name", None)
        context = export.import_context(name if isinstance(name, str) and os.path.isfile(name)
                                        else None)
    events = json_events.events(stream)
    block = db.transaction()
    with block as t, export.Progress(progress, "import", "item") as bar:
        importer = _Importer(events, context, bar, block.block)
        event, value = events.next()
        if not steps:
            if event != "start_map":
                raise Error("importing at the root needs a JSON object (a dict of keys)")
            count = importer.root(t)
        else:
            count = importer.store(_path(t, steps[:-1]), steps[-1], event, value, "")
        events.end()
    return count


def _path(root, steps):
    for step in steps:
        root = root[step]
    return root


#: One-key objects that decode to something else (files.py adds $file).
def _is_tag(key):
    return key in ("$bytes", "$int", "$tuple", "$dict") or key in export.decoders


class _Importer:
    """Stores the events of one document inside one transaction block (see the module doc)."""

    def __init__(self, events, context, bar, block):
        self.events, self.context, self.bar, self.block = events, context, bar, block
        self.items = 0

    def _tick(self, number=1):
        """Count stored items; every IMPORT_RELEASE_EVERY: a savepoint, then ghost what it saved."""
        before, self.items = self.items, self.items + number
        self.bar.update(number)
        if before // IMPORT_RELEASE_EVERY != self.items // IMPORT_RELEASE_EVERY:
            self.block.tm.savepoint(optimistic=True)
            self.block.conn.cacheMinimize()

    # -- the document's root object: the database's keys -------------------------------

    def root(self, t):
        """The document's keys into db (the object's start already read); how many.

        Like :meth:`_object`, except that each key's value is streamed into db
        as it is read; a one-key document that is a tag other than ``$dict``
        decodes to something that is not a dict of keys, and is refused.
        """
        event, first = self.events.next()
        if event == "end_map":
            return 0
        event, value = self.events.next()
        pairs = stored = None
        while True:  # the first key's value; a repeated first key: the last one counts
            if first == "$dict" and event == "start_array":
                pairs = self._spool()
                if stored:
                    del t[first]
                    stored = False
            else:
                pairs, stored = None, True
                self.store(t, first, event, value, f"[{first!r}]")
            event, key = self.events.next()
            if event != "map_key" or key != first:
                break
            event, value = self.events.next()
        if event == "end_map":  # one key
            if pairs is not None:  # the tag: a root whose keys are not all str
                return self._put_pairs(pairs, "", lambda batch: self._set_each(t, batch))
            if _is_tag(first):
                raise Error(f"importing at the root needs a JSON object (a dict of keys), "
                            f"not a {first} value")
            return 1
        if pairs is not None:  # a plain "$dict" key after all: its value is a list
            t[first] = []
            self._put_items(t[first], pairs, "['$dict']")
        self._tick()
        count = 1
        while event != "end_map":
            event, value = self.events.next()
            self.store(t, key, event, value, f"[{key!r}]")
            count += 1
            self._tick()
            event, key = self.events.next()
        return count

    @staticmethod
    def _set_each(t, batch):
        for key, value in batch.items():
            t[key] = value

    # -- the value at the import's path (at the root: each key's value) ----------------------

    def store(self, parent, key, event, value, where):
        """Store the JSON value starting with (event, value) as ``parent[key]``; its size.

        An array or object is stored empty and filled in batches; its items are
        built whole (:meth:`whole`) one at a time.
        """
        if event == "start_array":
            parent[key] = []
            count = 0
            batch = []
            event, value = self.events.next()
            while event != "end_array":
                batch.append(self.decoded(self.whole(event, value), f"{where}[{count}]"))
                count += 1
                if len(batch) >= IMPORT_BATCH:
                    parent[key].extend(batch)
                    self._tick(len(batch))
                    batch = []
                event, value = self.events.next()
            if batch:
                parent[key].extend(batch)
                self._tick(len(batch))
            return count
        if event == "start_map":
            return self._object(parent, key, where)
        stored = self.decoded(self.whole(event, value), where)
        parent[key] = stored
        return _size(stored)

    def _object(self, parent, key, where):
        """A JSON object (its start read) as ``parent[key]``: a tag, or a dict filled in batches."""
        event, first = self.events.next()
        if event == "end_map":
            parent[key] = {}
            return 0
        event, value = self.events.next()
        while True:  # the first key's value; a repeated first key: the last one counts
            if first == "$dict" and event == "start_array":
                raw = self._spool()
            else:
                raw = self.whole(event, value)
            event, second = self.events.next()
            if event != "map_key" or second != first:
                break
            event, value = self.events.next()
        if event == "end_map":  # one key: maybe a tag ($bytes, $tuple, $dict...)
            if isinstance(raw, _Spool):
                parent[key] = {}
                target = parent[key]
                return self._put_pairs(raw, where, target.update)
            stored = self.decoded({first: raw}, where)
            parent[key] = stored
            return _size(stored)
        if isinstance(raw, _Spool):
            raw = list(raw)  # a plain dict with a "$dict" key: its value is built whole
        parent[key] = {}
        return self._fill_dict(parent[key], where, first, raw, second)

    def _fill_dict(self, target, where, first, raw, key):
        """The rest of a dict whose ``first`` key (value ``raw``) is read; ``key`` is next."""
        batch, count = {first: self.decoded(raw, f"{where}[{first!r}]")}, 1
        event = "map_key"
        while event != "end_map":
            event, value = self.events.next()
            batch[key] = self.decoded(self.whole(event, value), f"{where}[{key!r}]")
            count += 1
            if len(batch) >= IMPORT_BATCH:
                target.update(batch)
                self._tick(len(batch))
                batch = {}
            event, key = self.events.next()
        if batch:
            target.update(batch)
            self._tick(len(batch))
        return count

    # -- {"$dict": [[key, value], ...]} --------------------------------------------------

    def _spool(self):
        """The items of the array being read (its start read), written aside."""
        spool = _Spool()
        event, value = self.events.next()
        while event != "end_array":
            spool.add(self.whole(event, value))
            event, value = self.events.next()
        return spool

    def _put_pairs(self, pairs, where, put):
        """Decode ``[key, value]`` pairs and ``put`` them in batches; how many."""
        batch, count = {}, 0
        for pair in pairs:
            key, value = self._pair(pair, where)
            batch[key] = value
            count += 1
            if len(batch) >= IMPORT_BATCH:
                put(batch)
                self._tick(len(batch))
                batch = {}
        if batch:
            put(batch)
            self._tick(len(batch))
        return count

    def _put_items(self, target, items, where):
        batch = []
        for index, item in enumerate(items):
            batch.append(self.decoded(item, f"{where}[{index}]"))
            if len(batch) >= IMPORT_BATCH:
                target.extend(batch)
                self._tick(len(batch))
                batch = []
        if batch:
            target.extend(batch)
            self._tick(len(batch))

    def _pair(self, pair, where):
        """One decoded ``(key, value)`` of a $dict, as :func:`zpydb.export.decode` makes it."""
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Error(f"a tagged value ($bytes, $int, $tuple, $dict...) is malformed: "
                        f"$dict needs [key, value] pairs, not {str(pair)[:40]}")
        key = self.decoded(pair[0], where)
        key = tuple(key) if isinstance(key, list) else key
        return key, self.decoded(pair[1], f"{where}[{key!r}]")

    # -- values built whole ------------------------------------------------------------------

    def whole(self, event, value):
        """The JSON value starting with (event, value), built in memory (not decoded)."""
        if event not in ("start_map", "start_array"):
            return value
        stack = [[] if event == "start_array" else {}]
        keys = [None]
        while True:
            event, value = self.events.next()
            if event == "map_key":
                keys[-1] = value
                continue
            if event in ("start_map", "start_array"):
                child = [] if event == "start_array" else {}
                _put(stack[-1], keys[-1], child)
                stack.append(child)
                keys.append(None)
                continue
            if event in ("end_map", "end_array"):
                done = stack.pop()
                keys.pop()
                if not stack:
                    return done
                continue
            _put(stack[-1], keys[-1], value)

    def decoded(self, raw, where):
        """:func:`zpydb.export.decode` of ``raw`` (at ``where``), with import's messages."""
        try:
            return export.decode_at(raw, self.context, where)
        except RecursionError:
            raise Error(f"the input nests arrays/objects deeper than zpydb stores "
                        f"({MAX_DEPTH} levels); nothing was imported") from None
        except (ValueError, TypeError) as exc:
            raise Error(f"a tagged value ($bytes, $int, $tuple, $dict...) is malformed: "
                        f"{exc}") from None


def _put(container, key, value):
    if isinstance(container, list):
        container.append(value)
    else:
        container[key] = value


def _size(value):
    return len(value) if isinstance(value, (dict, list, tuple, str, bytes)) else 1


class _Spool:
    """Values written aside in order and read back once: marshal (the values are
    plain JSON values this process made), in memory up to :data:`SPOOL_MEMORY`
    bytes, then in a temporary file that is gone when closed."""

    def __init__(self):
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
        self.count = 0

    def add(self, value):
        self.file.write(marshal.dumps(value))
        self.count += 1

    def __iter__(self):
        self.file.seek(0)
        try:
            for _ in range(self.count):
                yield marshal.load(self.file)
        finally:
            self.file.close()
