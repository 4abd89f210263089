"""JSON export and import of the whole tree or of one path.

JSON has only str keys and no bytes or tuples, so values JSON cannot express
are written as one-key tagged objects, and read back the same way:

* ``{"$bytes": "<base64>"}``      bytes
* ``{"$int": "0x<hex digits>"}``   an int with more decimal digits than Python's
  ``sys.get_int_max_str_digits()`` (4300) lets ``json`` write or read; hex has no
  such limit
* ``{"$tuple": [...]}``          a tuple
* ``{"$dict": [[key, value], ...]}`` a dict whose keys are not all str
* ``{"$file": {...}}``          a zpydb.File (see zpydb/files.py and docs/files.md):
  ``{"name", "content_type", "size", "sha256", "base64"}`` inline for files up to
  ``inline_limit`` bytes (1 MB), else ``"path"`` instead of ``"base64"``: the
  content is written to a files directory and ``path`` is relative to the JSON
  file's directory (to the current directory when the JSON goes to stdout).

A plain JSON document (no ``$`` tags) imports as-is.  Import writes in one
transaction block: it either all lands or none of it does.

Encoders are called as ``encoder(value, context)`` and decoders as
``decoder(inner, context)``; ``context`` is a dict of the export/import options
(``files_dir``, ``default_files_dir``, ``json_dir``, ``inline_limit``).
"""

import ast
import base64
import contextlib
import itertools
import json
import os
import re
import sys

from BTrees.OOBTree import OOBTree
from tqdm import tqdm

from . import nodes, ops
from . import session as session_module
from . import translate as translate_module
from .bigdict import BigDict
from .errors import Error
from .nodes import MAX_DEPTH

_HEX_INT = re.compile(r"-?0x[0-9a-f]+")

#: Other modules (files.py) register (type, encode) and (tag, decode) pairs.
encoders = []
decoders = {}
PROGRESS_MIN_ITEMS = 1000


def encode(value, context=None):
    """A plain value -> a JSON-ready value, tagging what JSON cannot express."""
    context = {} if context is None else context
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not _looks_tagged(value):
            return {k: encode(v, context) for k, v in value.items()}
        return {"$dict": [[encode(k, context), encode(v, context)] for k, v in value.items()]}
    if isinstance(value, list):
        return [encode(v, context) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, context) for v in value]}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, int) and _too_long_for_decimal(value):
        return {"$int": hex(value)}
    for value_type, encoder in encoders:
        if isinstance(value, value_type):
            return encoder(value, context)
    return value


def _looks_tagged(mapping):
    """A user's own one-key dict ``{"$bytes": ...}`` would import as the tagged type;
    it is written as ``{"$dict": [["$bytes", ...]]}`` instead (any ``$`` key)."""
    return len(mapping) == 1 and next(iter(mapping)).startswith("$")


def _too_long_for_decimal(number):
    """Would ``str(number)`` exceed ``sys.get_int_max_str_digits()``? (0: no limit)"""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    return bool(limit) and number.bit_length() > (limit - 1) * 3.32  # 3.32 bits a digit


def _decode_int(inner):
    if not isinstance(inner, str) or not _HEX_INT.fullmatch(inner):
        raise ValueError(f"$int needs a hex string like \"0x1f\", not {inner!r:.40}")
    return int(inner, 16)


def decode(value, context=None):
    """The inverse of :func:`encode`."""
    context = {} if context is None else context
    where = context.get("where", "")  # the location in the document, for messages
    if isinstance(value, list):
        return [decode_at(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag == "$bytes":
                return base64.b64decode(inner, validate=True)
            if tag == "$int":
                return _decode_int(inner)
            if tag == "$tuple":
                return tuple(decode_at(v, context, f"{where}[{i}]") for i, v in enumerate(inner))
            if tag == "$dict":
                return {_hashable(decode(k, context)): decode(v, context) for k, v in inner}
            if tag in decoders:
                return decoders[tag](inner, context)
        return {k: decode_at(v, context, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def decode_at(value, context, where):
    """:func:`decode` of the item at ``where`` (``['a'][0]``), restoring the location after."""
    outer = context.get("where", "")
    context["where"] = where
    try:
        return decode(value, context)
    finally:
        context["where"] = outer


def export_context(output=None, files_dir=None, inline_limit=None):
    """The options file values need: where the JSON goes and where large files go.

    ``output``: the JSON file's path (None: stdout).  ``files_dir``: write every
    file there (none inline).  Without it, files over ``inline_limit`` go to
    ``<output without .json>.files/`` beside the JSON (an error for stdout).
    """
    context = {"json_dir": os.path.dirname(os.path.abspath(output)) if output else None,
               "files_dir": os.path.abspath(files_dir) if files_dir else None,
               "default_files_dir": None}
    if output and not files_dir:
        stem = output[:-5] if output.lower().endswith(".json") else output
        context["default_files_dir"] = os.path.abspath(stem + ".files")
    if inline_limit is not None:
        context["inline_limit"] = inline_limit
    return context


def import_context(source=None, files_dir=None):
    """Where ``$file`` references may point (see :func:`resolve_file_reference`).

    ``source``: the JSON file (None: stdin).  ``files_dir``: the files directory
    the user names; without it, the ``<source without .json>.files/`` directory
    that export wrote beside the JSON.
    """
    return {"source": os.path.abspath(source) if source else None,
            "json_dir": os.path.dirname(os.path.abspath(source)) if source else None,
            "files_dir": os.path.abspath(files_dir) if files_dir else None}


def files_root(context):
    """The only directory ``$file`` references may read from (None: there is none)."""
    if context.get("files_dir"):
        return context["files_dir"]
    source = context.get("source")
    if not source:
        return None
    return (source[:-5] if source.lower().endswith(".json") else source) + ".files"


def resolve_file_reference(inner, context):
    """The checked real path of a ``{"$file": {"path": ...}}`` reference's content.

    A JSON document is input like any other: it must not make the import read
    files it was not given (``/proc/self/environ``, ``../../etc/hostname``, a
    symlink out).  So the reference must be relative without ``..``; it
    resolves inside :func:`files_root` (by base name when the user named the
    directory, else relative to the JSON file, as export writes it), the real
    path (symlinks followed) must stay inside that directory, and ``size`` and
    ``sha256`` must be given: the size is checked here, the hash when the
    content is copied (zpydb.files), inside the import's one transaction.
    """
    reference = inner.get("path")
    fail = _reference_error(context, reference)
    if not isinstance(reference, str) or not reference:
        raise fail("the path must be a non-empty string")
    if _unsafe_reference(reference):
        raise fail("only relative paths inside the files directory are allowed "
                   "(no absolute path, no '..')")
    size, digest = inner.get("size"), inner.get("sha256")
    if not _is_size(size) or not _is_sha256(digest):
        raise fail("size (bytes) and sha256 (64 hex digits) are required, as export writes them")
    root = files_root(context)
    if root is None:
        raise fail("JSON read from stdin has no files directory: pass --files-dir DIR")
    real = os.path.realpath(os.path.join(root, os.path.basename(reference))
                            if context.get("files_dir") else
                            os.path.join(context["json_dir"], reference))
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise fail(f"it is outside the files directory {root} (or a symlink leads out of "
                   f"it); pass --files-dir DIR naming the directory that holds the files")
    if not os.path.isfile(real):
        raise fail(f"{real} is missing or not a file (export wrote the files to {root}; "
                   f"pass --files-dir DIR if they were moved)")
    if os.path.getsize(real) != size:
        raise fail(f"the content does not match the export: {real} has "
                   f"{os.path.getsize(real)} bytes, the export says {size}")
    return real


def _unsafe_reference(reference):
    parts = reference.replace("\\", "/").split("/")
    return os.path.isabs(reference) or reference.startswith(("/", "\\", "~")) or ".." in parts \
        or ":" in parts[0]


def _is_size(size):
    return isinstance(size, int) and not isinstance(size, bool) and size >= 0


def _is_sha256(digest):
    return isinstance(digest, str) and len(digest) == 64 and \
        all(c in "0123456789abcdef" for c in digest)


def _reference_error(context, reference):
    """A function making the Error for a bad reference: JSON file, location, reference, reason."""
    source = context.get("source") or "<stdin>"
    where = context.get("where") or "the document"

    def fail(reason):
        return Error(f"{source}: $file {reference!r} at {where}: {reason}; nothing was imported")
    return fail


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def parse_path(text):
    """``"db['a'][0]"`` -> ``('a', 0)``; only literal subscripts are accepted."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise Error(f"not a path: {text!r} ({exc.msg})") from None
    steps = []
    while isinstance(node, ast.Subscript):
        steps.append(_literal_step(node.slice, text))
        node = node.value
    if not (isinstance(node, ast.Name) and node.id == "db"):
        raise Error(f"a path must start with db, like db['key'][0]: {text!r}")
    return tuple(reversed(steps))


def _literal_step(node, text):
    if isinstance(node, ast.Slice):
        parts = [None if p is None else _literal(p, text) for p in (node.lower, node.upper, node.step)]
        return slice(*parts)
    return _literal(node, text)


def _literal(node, text):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise Error(f"path subscripts must be literals: {text!r}") from None


def export_json(db, steps=(), stream=None, indent=None, progress=True, context=None):
    """Write the value at ``steps`` as JSON to ``stream``; returns the item count.

    The stored tree is walked inside one read transaction of a connection of
    its own (one snapshot: writes committed meanwhile are not seen) and written
    as it is walked, so memory stays bounded however large the value is (see
    :class:`_Writer`).  ``context``: see :func:`export_context` (where large
    files are written).
    """
    stream = stream or sys.stdout
    context = export_context() if context is None else context
    with _snapshot(db) as (root, conn):
        node = ops.traverse(root, steps)
        writer = _Writer(stream, indent, context, conn)
        count = writer.top(node, path_expr(steps), progress)
        writer.write("\n")
        writer.flush()
    return count


@contextlib.contextmanager
def _snapshot(db):
    """``(data root, connection)`` of one read transaction on a private connection.

    ZODB's MVCC gives a transaction the state as of its start, so the whole walk
    reads one snapshot; the transaction is aborted (never committed) at the end.
    """
    past = getattr(db._executor, "snapshot", None)
    if past is not None:  # db.at(when): the past state (timetravel.Past), on a connection of its own
        with past() as pair:
            yield pair
        return
    session = db._session
    tm, conn = session.open_private()
    storage = conn.db().storage
    try:
        tm.begin()
        try:
            yield session_module.data_root(conn), conn
        finally:
            tm.abort()
    except translate_module.TRANSLATED as exc:
        raise translate_module.translate(exc, session.name, storage) from None
    finally:
        conn.close()


class _Writer:
    """Writes stored nodes as JSON while walking them: the output of ``json.dump``.

    Output is buffered up to :data:`FLUSH_BYTES` and written in pieces: an
    export that fails (NaN, a file over the inline limit) before the first
    piece writes nothing, one that fails later has written a prefix of the
    document (see docs/usage.md).  Every :data:`GC_EVERY` items the
    objects loaded so far are turned back into ghosts (they reload, from the
    same snapshot, if needed again), so what was written does not accumulate.
    """

    def __init__(self, stream, indent, context, conn):
        self.stream, self.context, self.conn = stream, context, conn
        if isinstance(indent, int):
            indent = " " * indent
        self.indent = indent
        self.item_sep = ", " if indent is None else ","
        self.chunks, self.parts, self.size, self.items = [], [], 0, 0
        self.bar = Progress(False, "export", "item")  # top() replaces it

    def write(self, text):
        parts = self.parts
        parts.append(text)
        if len(parts) >= 1024:  # many small strings cost more than one joined string
            joined = "".join(parts)
            self.chunks.append(joined)
            self.parts = []
            self.size += len(joined)
            if self.size >= FLUSH_BYTES:
                self.flush()

    def flush(self):
        self.chunks.append("".join(self.parts))
        for chunk in self.chunks:
            self.stream.write(chunk)
        self.chunks, self.parts, self.size = [], [], 0

    def _tick(self):
        self.items += 1
        self.bar.update()
        if self.items % GC_EVERY == 0:
            self.conn.cacheMinimize()  # a read transaction: every object can be a ghost again

    def _newline(self, level):
        return "" if self.indent is None else "\n" + self.indent * level

    def top(self, node, where, progress):
        """Write the value at the export's path; the count export reports (its items).

        The progress bar counts every item written, at any depth (a root with a
        few large keys shows progress too), without a total.
        """
        with Progress(progress, "export", "item") as self.bar:
            if nodes.is_dict_node(node) or nodes.is_list_node(node):
                count = itertools.count()
                self.value(node, where, 0, lambda _: next(count))
                return next(count)
            value = nodes.to_plain(node)
            self.value(node, where, 0)
        return len(value) if isinstance(value, (dict, list, tuple, str, bytes)) else 1

    def value(self, node, where, level, done=None):
        kind = type(node)
        if kind is str:
            self.write(_encode_str(node))
        elif kind is int and not _too_long_for_decimal(node) or kind is bool or node is None:
            self.write(_SCALARS[node] if kind is bool or node is None else int.__repr__(node))
        elif kind is float:
            _check_float(node, where)
            self.write(float.__repr__(node))
        elif nodes.is_dict_node(node):
            self._dict(node, where, level, done)
        elif nodes.is_list_node(node):
            self._list(node, where, level, done)
        else:  # a tuple, bytes, a huge int, a file, a counter: small, converted whole
            value = nodes.to_plain(node)
            check_json_safe(value, where)
            text = json.dumps(encode(value, self.context), indent=self.indent, allow_nan=False)
            if self.indent is not None and level:
                text = text.replace("\n", "\n" + self.indent * level)  # strings hold no \n
            self.write(text)

    def _open(self, bracket, level, first):
        self.write((bracket if first else self.item_sep) + self._newline(level + 1))

    def _close(self, bracket, level, empty):
        self.write(bracket if empty else self._newline(level) + bracket)

    def _list(self, node, where, level, done=None):
        index = -1
        for index, item in enumerate(node):
            self._open("[", level, not index)
            self.value(item, f"{where}[{index}]", level + 1)
            self._tick()
            if done is not None:
                done(1)
        self._close("[]" if index < 0 else "]", level, index < 0)

    def _dict(self, node, where, level, done=None):
        key_sep = ": "
        if _plain_keys(node):
            first = True
            for key, item in node.items():
                self._open("{", level, first)
                first = False
                self.write(_encode_str(key) + key_sep)
                self.value(item, f"{where}[{key!r}]", level + 1)
                self._tick()
                if done is not None:
                    done(1)
            self._close("{}" if first else "}", level, first)
            return
        # {"$dict": [[key, value], ...]}, written the way json.dump writes it
        self._open("{", level, True)
        self.write('"$dict"' + key_sep)
        first = True
        for key, item in node.items():
            self._open("[", level + 1, first)
            first = False
            self._open("[", level + 2, True)
            if isinstance(key, (float, tuple)):
                check_json_safe(key, f"a key of {where} ({key!r})")
            self.value(key, where, level + 3)
            self._open("", level + 2, False)
            self.value(item, f"{where}[{key!r}]", level + 3)
            self._close("]", level + 2, False)
            self._tick()
            if done is not None:
                done(1)
        self._close("]", level + 1, False)
        self._close("}", level, False)


class Progress:
    """A tqdm bar on stderr, shown once PROGRESS_MIN_ITEMS items are done (or the total is
    known to reach it); ``done`` counts the items either way."""

    def __init__(self, enabled, desc, unit, total=None):
        self.enabled, self.desc, self.unit, self.total = enabled, desc, unit, total
        self.done, self.bar = 0, None

    def __enter__(self):
        if self.enabled and self.total is not None and self.total >= PROGRESS_MIN_ITEMS:
            self._show()
        return self

    def _show(self):
        self.bar = tqdm(desc=self.desc, unit=self.unit, total=self.total, initial=self.done,
                        file=sys.stderr)

    def update(self, number=1):
        self.done += number
        if self.bar is not None:
            self.bar.update(number)
        elif self.enabled and self.done >= PROGRESS_MIN_ITEMS:
            self._show()

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def _plain_keys(node):
    """Are all keys str (and the dict not a one-key ``$`` dict that reads as a tag)?

    A BTree's keys (OOBTree, BigDict) are mutually ordered, and str orders
    against nothing else, so its smallest and largest keys tell (no pass over
    the keys).
    """
    if isinstance(node, (OOBTree, BigDict)):
        if not node:
            return True
        low, high = node.minKey(), node.maxKey()
        if not (isinstance(low, str) and isinstance(high, str)):
            return False
    elif not all(isinstance(key, str) for key in node.keys()):
        return False
    first_two = list(itertools.islice(iter(node.keys()), 2))
    return not (len(first_two) == 1 and first_two[0].startswith("$"))


_SCALARS = {True: "true", False: "false", None: "null"}
_encode_str = json.encoder.encode_basestring_ascii
#: Export output is written to the stream in pieces of about this many characters.
FLUSH_BYTES = 1 << 20
#: Export trims the connection's object cache every this many items.
GC_EVERY = 5000


def _check_float(number, where):
    if number != number or number in (float("inf"), float("-inf")):
        raise Error(f"{where}: {number!r} cannot be exported: JSON has no NaN or "
                    f"Infinity (store it as None or a string, or export another path)")


def path_expr(steps):
    """``('a', 0, slice(1, 3))`` -> ``"db['a'][0][1:3]"`` (for messages)."""
    parts = ["db"]
    for step in steps:
        if isinstance(step, slice):
            bounds = ["" if b is None else repr(b) for b in (step.start, step.stop, step.step)]
            parts.append("[" + ":".join(bounds if step.step is not None else bounds[:2]) + "]")
        else:
            parts.append(f"[{step!r}]")
    return "".join(parts)


def check_json_safe(value, expr="db"):
    """Refuse values JSON cannot represent, naming the first one's path.

    JSON has no NaN or Infinity: Python's ``json`` writes ``NaN``/``Infinity``
    by default, which other JSON parsers (and ``json.loads`` with a strict
    ``parse_constant``) reject, so an export containing them is refused
    instead of producing an invalid file.
    """
    stack = [(value, expr)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float):
            _check_float(item, where)
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if isinstance(key, (float, tuple)):
                    stack.append((key, f"a key of {where} ({key!r})"))
                stack.append((child, f"{where}[{key!r}]"))
        elif isinstance(item, (list, tuple)):
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], f"{where}[{index}]"))


def import_json(db, stream, steps=(), progress=True, context=None):
    """Read JSON from ``stream`` and store it at ``steps``: see :mod:`zpydb.json_import`."""
    from . import json_import  # it builds on this module's tags
    return json_import.import_json(db, stream, steps, progress, context)


def parse_json(text, outcome="nothing was imported"):
    """Strict JSON (no NaN, Infinity or 1e400) read whole; Error says what is wrong.

    The same rules and messages as import's streaming reader (zpydb/json_events.py),
    for a document small enough to hold.  ``text``: a str (callers decode bytes
    themselves: JSON is UTF-8).
    ``outcome`` ends every message (what the caller did not do).  The web
    server (zpydb/rest.py) reads request bodies with it, so both accept the
    same documents.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise Error(f"the input is not valid JSON: {exc}; {outcome}") from None
    except _NotStrictJSON as exc:
        raise Error(f"the input is not strict JSON: {exc}; {outcome}") from None
    except RecursionError:
        raise Error(f"the input nests arrays/objects deeper than zpydb stores "
                    f"({MAX_DEPTH} levels); {outcome}") from None
    except ValueError as exc:  # an integer literal past sys.get_int_max_str_digits()
        raise Error(f"the input holds a number JSON cannot read here ({exc}); write it "
                    f'as {{"$int": "0x..."}} (zpydb export does); {outcome}') from None


class _NotStrictJSON(Exception):
    pass


def _refuse_constant(name):
    """``NaN``/``Infinity`` are not JSON (Python's json reads them by default)."""
    raise _NotStrictJSON(f"{name} is not a JSON value (export refuses it too)")


def _finite_float(text):
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise _NotStrictJSON(f"the number {text[:40]} is too large for a float")
    return number


def decode_document(document, context, outcome="nothing was imported"):
    """:func:`decode` with errors that name the input's problem; nothing stored yet."""
    try:
        return decode(document, context)
    except RecursionError:
        raise Error(f"the input nests arrays/objects deeper than zpydb stores "
                    f"({MAX_DEPTH} levels); {outcome}") from None
    except (ValueError, TypeError) as exc:
        raise Error(f"a tagged value ($bytes, $int, $tuple, $dict...) is malformed: "
                    f"{exc}; {outcome}") from None
