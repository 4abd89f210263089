"""What a transaction says it may have changed: the paths in its ``zpydb_paths``.

Every zpydb write records, in its transaction's extension, the paths its
statements wrote to: ``db['a']['b'] = 1`` the path ``('a', 'b')``, ``del
db['x']`` ``('x',)`` (with an int index, ``del db['l'][0]``, the list ``('l',)``:
it shifts every later item), ``db['n'] += 1`` ``('n',)``, a method call
(``db['l'].append(1)``, ``db['d'].update(...)``) the path it is called on.  A
block records the paths of all its statements; an undo or redo copies those of
the change it undoes (it changes the same places back).

Why: ZODB keeps revisions per record, and one record (a BTree bucket, a
small dict, a list chunk) holds many paths.  ``db['x'].history()`` steps back
through every revision of the records on its path; a transaction that wrote
the bucket holding ``'x'`` for its neighbour ``'y'`` says so here, and the walk
(pathhistory.py) passes it over without reading the past state, so a busy
neighbour costs a metadata read per change instead of a historical read.

The encoding is plain data (transaction metadata is unpickled with no classes
at all: safety.py): a list of paths, each a list of steps (over ZEO's msgpack
they come back as tuples; both are read).  A step that is not
a plain str, int, float, bool or tuple of those, or that msgpack cannot carry
(an int beyond 64 bits, a str with a lone surrogate), or is long, ends its path
there (a shorter path covers more: still true).  Too many paths: only their
first steps; still too many, or a transaction that records nothing: the walk
treats it as "may have changed anything" and reads the past.
"""

KEY = "zpydb_paths"
#: At most this many paths in one transaction (then their first steps only).
MAX_PATHS = 100
#: A step whose repr is longer than this ends its path (metadata stays small).
MAX_STEP = 200
#: msgpack's integers: signed and unsigned 64 bits.
_INT_MIN, _UINT_MAX = -2 ** 63, 2 ** 64 - 1


def encode(paths):
    """The ``zpydb_paths`` value for the given paths (tuples of steps), or None
    when there are too many to say anything useful."""
    encoded, seen, firsts = [], set(), {}
    for path in paths:  # a bulk load's block has a path per statement: linear, bounded
        steps = _plain_prefix(path)
        first = tuple(steps[:1])
        if first not in firsts:
            if len(firsts) == MAX_PATHS:
                return None  # more first steps than MAX_PATHS: nothing useful to say
            firsts[first] = steps[:1]
        if len(encoded) <= MAX_PATHS and tuple(steps) not in seen:
            seen.add(tuple(steps))
            encoded.append(steps)
    if len(encoded) > MAX_PATHS:
        return list(firsts.values())
    return encoded


def _plain_prefix(path):
    steps = []
    for step in path:
        if not _plain(step) or len(repr(step)) > MAX_STEP:
            break
        steps.append(step)
    return steps


def _plain(step):
    if type(step) is tuple:
        return all(_plain_item(item) for item in step)
    return _plain_item(step)


def _plain_item(item):
    """A str, int, float or bool that ZEO's msgpack can carry: an int of at most 64
    bits, a str without lone surrogates (UTF-8 encodable).  Anything else is a fine
    zpydb key but would make the transaction's metadata fail to encode."""
    kind = type(item)
    if kind is str:
        return item.isascii() or _utf8(item)
    if kind is int:
        return _INT_MIN <= item <= _UINT_MAX
    return kind is float or kind is bool


def _utf8(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def may_change(written, steps):
    """False only when none of the ``written`` paths (a ``zpydb_paths`` value) can
    change the value at ``steps``: none is a prefix of it, and it is a prefix of none.

    Steps that could name the same item count as the same: equal keys (``1``,
    ``1.0`` and ``True`` are one dict key), two list indexes when either is
    negative (``-1`` is some index), and a slice matches everything.
    """
    if not isinstance(written, (list, tuple)):  # tuples: as it comes back over ZEO (msgpack)
        return True
    for path in written:
        if not isinstance(path, (list, tuple)):
            return True
        if all(_same_place(a, b) for a, b in zip(path, steps)):
            return True  # one is a prefix of the other (zip stops at the shorter)
    return False


def _same_place(a, b):
    if isinstance(a, slice) or isinstance(b, slice):
        return True
    a, b = _tuple(a), _tuple(b)
    if type(a) is int and type(b) is int:
        return a == b or a < 0 or b < 0
    try:
        return bool(a == b)
    except Exception:
        return True


def _tuple(step):
    """A tuple key may come back as a list (a transport's choice): compare it as the tuple."""
    return tuple(_tuple(item) for item in step) if isinstance(step, list) else step
