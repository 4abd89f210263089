"""Changes between two plain values as a JSON Patch (RFC 6902).

Time travel (``db.diff``), the change feed (``watch``) and the web console's
stream all describe a change the same way, so they share this module.  Values
are first written in zpydb's JSON form (zpydb/export.py: bytes, tuples, huge
ints and non-str-keyed dicts as ``$`` tags), then compared by the ``jsonpatch``
library, whose output any JSON Patch implementation applies.  Applying the
patch to ``encode(old)`` gives ``encode(new)``; ``export.decode`` turns that back
into the Python value.
"""

import jsonpatch
from jsonpointer import escape

from .export import encode


def json_patch(old, new):
    """The RFC 6902 operations that turn plain value ``old`` into ``new``."""
    return jsonpatch.make_patch(encode(old), encode(new)).patch


def json_pointer(steps):
    """Path steps (dict keys, list indexes) -> an RFC 6901 pointer such as ``/l/4``.

    Keys are written with ``str()``; ``~`` and ``/`` are escaped as the RFC says."""
    return "".join("/" + escape(str(step)) for step in steps)


def apply_patch(old, operations):
    """``old`` with the operations applied, in JSON form (for tests and clients)."""
    return jsonpatch.apply_patch(encode(old), operations)
