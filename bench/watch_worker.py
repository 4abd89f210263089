"""Worker processes for the change-feed measurements (bench/watch.py).

    python -m bench.watch_worker write URL STATEMENTS
        STATEMENTS statements alternating db['loss'] = i and db['noise'] = i (a
        change a watcher of db['loss'] must not deliver); one JSON line each:
        {"i", "key", "ok": true, "us"} or {"i", "key", "ok": false, "applied", "error"},
        then {"done": true}.
    python -m bench.watch_worker watchers URL KEY COUNT
        COUNT watcher threads on db[KEY]; prints {"ready": true} once every watcher
        has fixed its starting point, then {"w": number, "v": value, "t": time.time()}
        for every change a watcher receives, until stdin closes.

Every line is flushed at once: the driver reads them while the worker runs.
"""

import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import zpydb  # noqa: E402


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def write(url, statements):
    """The loss check's writer: every statement's outcome, as zpydb reports it."""
    db = zpydb.connect(url, wait_timeout=30, retry_timeout=120)
    try:
        for number in range(statements):
            i, key = number // 2, ("loss", "noise")[number % 2]
            started = time.perf_counter()
            try:
                db[key] = i
            except zpydb.Error as exc:
                say({"i": i, "key": key, "ok": False, "applied": getattr(exc, "applied", None),
                     "error": f"{type(exc).__name__}: {exc}"[:300]})
            else:
                say({"i": i, "key": key, "ok": True,
                     "us": round((time.perf_counter() - started) * 1e6)})
        say({"done": True})
    finally:
        db.close()


_say_lock = threading.Lock()


def watchers(url, key, count):
    """``count`` watchers of db[key] in threads, each change reported as it arrives."""
    db = zpydb.connect(url, wait_timeout=30)
    watches = [db[key].watch() for _ in range(count)]

    def run(number):
        for change in watches[number]:
            received = time.time()
            with _say_lock:
                say({"w": number, "v": change["value"], "t": received})

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    say({"ready": True})
    sys.stdin.read()  # the driver closes stdin when the run is over
    for watch in watches:
        watch.close()
    for thread in threads:
        thread.join(30)
    db.close()


def main(argv):
    command = argv[0]
    if command == "write":
        write(argv[1], int(argv[2]))
    elif command == "watchers":
        watchers(argv[1], argv[2], int(argv[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
