"""The guard a zpydb ZEO server runs: ``%import zpydb.zeo_guard`` in its config.

ZConfig's ``%import PACKAGE`` imports the package and reads its
``component.xml`` (which declares nothing).  Importing this package is the
point: it patches the running ``runzeo`` so that

* clients must speak msgpack: a pickle-protocol handshake is refused, so no
  client message is ever unpickled (ZEO's own ``msgpack true`` only chooses
  what the server *announces*; a client may still answer with pickles);
* a message must be one of the methods ZEO allows a client to call, and no
  larger than :data:`~zpydb.zeo_guard.protocol.DEFAULT_MAX_MESSAGE_SIZE`
  (``ZPYDB_MAX_MESSAGE_SIZE`` in the environment changes it);
* conflict resolution and transaction metadata load only the classes zpydb
  stores (:mod:`zpydb.safety`).

Every bundled config in ``zeo_configs/`` starts with the ``%import`` line, and
``zpydb serve`` refuses a config without it.  See docs/security.md.
"""

from .. import safety
from . import protocol

#: The line a runzeo config needs (zpydb serve checks for it).
IMPORT_LINE = "%import zpydb.zeo_guard"


def install():
    """Install every server-side restriction in this process (idempotent)."""
    safety.install()
    protocol.install()


install()
