"""Real servers for development: tests/ and bench/ both start them from here.

Not part of the installed package (setup.cfg ships ``zpydb*`` only) and not the
test suite: plain helpers with no pytest in them, importable from the
repository root (tests/conftest.py and bench/common.py put it on sys.path).

- ``devservers.ports``: ``free_port``, ``port_open``, ``wait_for_port``,
  ``wait_for_port_closed``, ``stop_process``
- ``devservers.zeo``: ``ZeoServer``, a runzeo process with a bundled config
- ``devservers.pg``: ``PostgresCluster``, a throw-away PostgreSQL server

``tests/servers.py`` and ``tests/pg.py`` re-export these names for the tests.
"""
