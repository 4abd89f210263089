"""C2 worker process: ``python -m bench.contention_worker``.

A long-lived process that serves C2 runs one after the other, so a run does not pay for
Python start-up and imports.  Protocol (one JSON object per line on stdin/stdout):

    parent -> {"system": "zpydb"|"raw"|"redis", "target": URL, "op": "incr"|"append",
               "key": KEY, "wid": N, "seconds": S, "max_ops": M}
    worker -> {"ready": true}            (connected, key read once: caches warm)
    parent -> "go"
    worker -> {"acked": ..., "failed": ..., "lat_us": [...], ...}   (connection closed)

EOF or ``{"quit": true}`` ends the process.  Every loop is bounded in count and time; the
client connection lives only for one run, so an idle worker has no connection open.
"""

import json
import logging
import random
import sys
import time

import transaction

MAX_COMMANDS = 100_000
# raw ZODB's own retry loop: transaction's attempts(), with a full-jitter back-off
RAW_ATTEMPTS = 100
RAW_BACKOFF_CAP = 0.05


def _raw_db(target):
    from .worker import _raw_any
    return _raw_any(target)


class ZpydbClient:
    """zpydb statements: ``db[key] += 1`` and ``db[key].append(item)``."""

    def __init__(self, target, key):
        import zpydb
        self.db = zpydb.connect(target, wait_timeout=30)
        self.key = key

    def warm(self):
        self.db[self.key]._run()

    def incr(self, item):
        self.db[self.key] += 1

    def append(self, item):
        self.db[self.key].append(item)

    def close(self):
        self.db.close()


class RawClient:
    """Raw ZODB: an int in a PersistentMapping, a PersistentList, ``root['c2raw'][key]``."""

    def __init__(self, target, key):
        self.zdb = _raw_db(target)
        self.tm = transaction.TransactionManager()
        self.conn = self.zdb.open(transaction_manager=self.tm)
        self.key = key
        self.retries = 0

    def _run(self, func):
        for number, attempt in enumerate(self.tm.attempts(RAW_ATTEMPTS)):
            if number:
                self.retries += 1
                time.sleep(random.uniform(0, min(RAW_BACKOFF_CAP, 0.001 * 2 ** number)))
            with attempt:
                func(self.conn.root()["c2raw"][self.key])

    def warm(self):
        self.tm.begin()
        try:
            obj = self.conn.root()["c2raw"][self.key]
            obj._p_activate()
        finally:
            self.tm.abort()

    def incr(self, item):
        def bump(mapping):
            mapping["n"] += 1
        self._run(bump)

    def append(self, item):
        self._run(lambda plist: plist.append(item))

    def close(self):
        try:
            self.tm.abort()
            self.conn.close()
        finally:
            self.zdb.close()


class RedisClient:
    """Redis INCR / RPUSH (one round trip each; the server fsyncs before replying)."""

    def __init__(self, target, key):
        import redis
        host, port = target.split("://", 1)[-1].rsplit(":", 1)
        self.client = redis.Redis(host=host, port=int(port), socket_timeout=30)
        self.key = key

    def warm(self):
        self.client.ping()

    def incr(self, item):
        self.client.incr(self.key)

    def append(self, item):
        self.client.rpush(self.key, item)

    def close(self):
        self.client.close()


CLIENTS = {"zpydb": ZpydbClient, "raw": RawClient, "redis": RedisClient}


def run(client, command, started_at):
    """Statements until `seconds` passed or `max_ops` were attempted (after "go")."""
    op = getattr(client, command["op"])
    wid = command["wid"]
    seconds = float(command["seconds"])
    max_ops = int(command["max_ops"])
    latencies, failed_ids, messages = [], [], []
    t0 = time.perf_counter()
    end = t0 + seconds
    attempted = 0
    while attempted < max_ops:
        item = f"{wid}:{attempted}"
        s = time.perf_counter()
        try:
            op(item)
            latencies.append(time.perf_counter() - s)
        except Exception as exc:  # a failed statement: count it, go on
            failed_ids.append(attempted)
            if len(messages) < 3:
                messages.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])
        attempted += 1
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - t0
    return {"wid": wid, "attempted": attempted, "acked": len(latencies),
            "failed": len(failed_ids), "failed_ids": failed_ids, "seconds": elapsed,
            "lat_us": [int(x * 1e6) for x in latencies], "errors": messages,
            "raw_retries": getattr(client, "retries", None),
            "connect_s": started_at}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    logging.basicConfig(level=logging.CRITICAL)
    reply({"hello": True})
    for _ in range(MAX_COMMANDS):
        line = sys.stdin.readline()
        if not line:
            return
        command = json.loads(line)
        if command.get("quit"):
            return
        client = None
        try:
            t0 = time.perf_counter()
            client = CLIENTS[command["system"]](command["target"], command["key"])
            client.warm()
            connect_s = time.perf_counter() - t0
        except Exception as exc:
            if client is not None:
                client.close()
            reply({"error": f"connect: {exc!r}"[:1000]})
            continue
        try:
            reply({"ready": True})
            go = sys.stdin.readline()
            if not go:
                return
            if go.strip() != "go":  # another writer could not connect: no run
                result = {"aborted": True}
            else:
                result = run(client, command, connect_s)
        except Exception as exc:
            result = {"error": repr(exc)[:1000]}
        finally:
            try:
                client.close()
            except Exception:
                pass
        reply(result)


if __name__ == "__main__":
    main()
