"""One H1 load process: ``python -m bench.web_client SPEC_JSON`` -> JSON on stdout.

SPEC: {"port", "method", "paths": [...], "body", "seconds", "max_requests",
"threads"}.  Each thread keeps one HTTP/1.1 connection and sends requests
back to back (the next path of the list each time) until the time or the
count runs out; every status must be 200.  Prints {"count", "seconds",
"latencies"} (seconds per request).
"""

import http.client
import json
import sys
import threading
import time


def run(spec):
    deadline = time.perf_counter() + spec["seconds"]
    per_thread = max(1, spec["max_requests"] // spec["threads"])
    latencies, errors = [], []
    lock = threading.Lock()
    body = spec.get("body")
    body = body.encode() if body is not None else None

    def worker(offset):
        conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=60)
        mine = []
        try:
            paths = spec["paths"]
            for i in range(per_thread):
                path = paths[(offset + i * spec["threads"]) % len(paths)]
                t0 = time.perf_counter()
                conn.request(spec["method"], path, body=body)
                response = conn.getresponse()
                response.read()
                t1 = time.perf_counter()
                if response.status != 200:
                    raise RuntimeError(f"{spec['method']} {path}: HTTP {response.status}")
                mine.append(t1 - t0)
                if t1 > deadline:
                    break
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(spec["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(spec["seconds"] + 120)
    elapsed = time.perf_counter() - started
    return {"count": len(latencies), "seconds": elapsed, "latencies": latencies,
            "errors": errors}


if __name__ == "__main__":
    json.dump(run(json.loads(sys.argv[1])), sys.stdout)
