"""A write over ZEO never lands in a container another client has replaced.

Client A has ``db['l']`` (or ``db['d']``) cached.  Client B replaces it with a
new list (dict), and B's commit is acknowledged.  The invalidation the server
then pushes to A is held back by a proxy (a slow network: tests/reliability/
proxy.py ``HoldProxy``), so when A's next statement begins, A's view still has
the old container under that key.  A's statement must act on the NEW container
(or be retried until it does), never on the old one that nothing points to any
more: there, its change would be acknowledged and lost.

zpydb protects a write in one of two ways (session.py, "Writes without the
ping"): a statement that decides from what its target holds (``del``) begins
with a round trip to the server (the ping waits for the held invalidation); a
blind write (``=``, ``append``, ``extend``, ``update``, ``+=``) skips the round
trip and registers the containers on its path with ``readCurrent``, so its
commit fails and it is retried on fresh data.  With neither, every case here
fails.  Real runzeo, servers on 127.0.0.1, every wait bounded.
"""

import threading
import time

import pytest

import zpydb
from tests.reliability.proxy import HoldProxy


def _wait(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


CASES = {
    # name: (key, old value, new value B stores, A's statement, expected final value)
    "list append": ("l", [0], [10, 11], lambda db: db["l"].append(1), [10, 11, 1]),
    "list extend": ("l", [0], [10, 11], lambda db: db["l"].extend([1, 2]), [10, 11, 1, 2]),
    "list set": ("l", [0, 1], [10, 11], lambda db: db["l"].__setitem__(0, 5), [5, 11]),
    "dict set": ("d", {"k": 1}, {"k": 2, "new": 3},
                 lambda db: db["d"].__setitem__("x", 5), {"k": 2, "new": 3, "x": 5}),
    "dict update": ("d", {"k": 1}, {"k": 2, "new": 3},
                    lambda db: db["d"].update(x=5), {"k": 2, "new": 3, "x": 5}),
    "dict del": ("d", {"k": 1, "old": 0}, {"k": 2, "new": 3},
                 lambda db: db["d"].__delitem__("k"), {"new": 3}),
    "nested set": ("d", {"sub": {"a": 1}}, {"sub": {"b": 2}},
                   lambda db: db["d"]["sub"].__setitem__("x", 5), {"sub": {"b": 2, "x": 5}}),
    "increment": ("d", {"n": 1}, {"n": 100}, lambda db: _increment(db), {"n": 101}),
}


def _increment(db):
    db["d"]["n"] += 1


@pytest.fixture
def clients(zeo_server):
    proxy = HoldProxy(zeo_server.address).start()
    a = b = None
    try:
        b = zpydb.connect(zeo_server.url, wait_timeout=10)
        a = zpydb.connect(proxy.url, wait_timeout=10)
        yield a, b, proxy
    finally:
        proxy.release()
        for db in (a, b):
            if db is not None:
                db.close()
        proxy.close()


@pytest.mark.parametrize("case", list(CASES))
def test_a_write_after_another_client_replaced_its_container(clients, case):
    a, b, proxy = clients
    key, old, new, statement, expected = CASES[case]
    b[key] = old
    _wait(lambda: a[key].value() == old, "A to see the old container")  # A caches it
    proxy.hold()
    b[key] = new                                     # acknowledged to B
    _wait(lambda: proxy.held > 0, "the server's invalidation for A")
    sent = proxy.sent
    outcome = {}

    def run():
        try:
            statement(a)
            outcome["done"] = True
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    _wait(lambda: proxy.sent > sent or not thread.is_alive(), "A's statement on the wire")
    proxy.release()
    thread.join(60)
    assert not thread.is_alive(), "A's statement did not end"
    assert "error" not in outcome, f"A's statement failed: {outcome.get('error')!r}"
    assert b[key].value() == expected, (
        f"A's change went to the container B had replaced: db[{key!r}] is "
        f"{b[key].value()!r}, expected {expected!r}")
    assert a[key].value() == expected
