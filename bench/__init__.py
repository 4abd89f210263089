"""zpydb benchmarks: ``python -m bench`` (quick), ``--full``, ``--smoke``.

zpydb against raw ZODB on the same storage (FileStorage, ZEO, RelStorage/PostgreSQL)
and against peers (Redis, TinyDB, shelve), alternately in the same run; see
docs/benchmarks.md for the method and the results.
"""
