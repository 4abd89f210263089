"""H1: ``zpydb web`` GET and PUT requests/s and p99, against the floor of its own stack.

Three servers side by side, on loopback: ``zpydb web`` on an embedded
Data.fs, ``zpydb web`` on the run's ZEO server, and bench/web_floor.py (the
same Starlette + uvicorn + httptools, answering a constant: no worker thread,
no database).  Load: 2 client processes (bench/web_client.py) x 4 keep-alive
connections, requests back to back, for the same time against each server in
alternating order every round.  GETs read one of 100 small dicts
(``/h1/k<i>.json``), PUTs replace one (a durable commit each).  The ratios
are zpydb's requests/s over the floor's: how much of the stack's own speed
the database work leaves.
"""

import json
import os
import subprocess
import sys

from devservers.ports import free_port, stop_process, wait_for_port
from devservers.web import WebServer

from .common import REPO, percentile

CLIENT_PROCESSES = 2
THREADS = 4
KEYS = 100
VALUE = {"name": "a user", "n": 12345, "tags": ["x", "y", "z"]}


def h1(env, mode, tick):
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return {"title": TITLE, "skipped": f"the web extra is not installed ({exc.name})",
                "rows": [], "ratios": []}
    seconds = max(0.5, mode.batch_seconds)
    rounds = max(2, mode.rounds - 2)
    servers = {}
    floor = None
    try:
        data = os.path.join(env.tmp, "h1", "Data.fs")
        os.makedirs(os.path.dirname(data), exist_ok=True)
        servers["web/file"] = WebServer(data, log_dir=os.path.join(env.tmp, "h1")).start()
        servers["web/zeo"] = WebServer(env.zeo.url, "--wait-timeout", "10",
                                       log_dir=os.path.join(env.tmp, "h1-zeo")).start()
        port = free_port()
        floor = subprocess.Popen([sys.executable, "-m", "bench.web_floor", str(port)],
                                 cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", port, 30, floor)
        ports = {"floor": port, **{name: web.port for name, web in servers.items()}}
        for web in servers.values():
            for i in range(KEYS):
                status, _h, _b = web.request("PUT", f"/h1/k{i}.json", json.dumps(VALUE))
                assert status == 200, status
        measured = {(name, method): [] for name in ports for method in ("GET", "PUT")}
        for number in range(rounds):
            order = list(ports) if number % 2 == 0 else list(reversed(list(ports)))
            for method in ("GET", "PUT"):
                for name in order:
                    measured[(name, method)].append(_load(ports[name], method, seconds, mode))
            tick()
    finally:
        for web in servers.values():
            web.stop()
        stop_process(floor)
    rows = [_row(name, method, runs) for (name, method), runs in measured.items()]
    ratios = []
    for method in ("GET", "PUT"):
        base = next(r for r in rows if r["name"] == f"floor {method}")
        for name in servers:
            mine = next(r for r in rows if r["name"] == f"{name} {method}")
            ratios.append({"name": f"{name} {method} vs the stack's floor",
                           "ratio": round(mine["ops_per_s"] / base["ops_per_s"], 3)
                           if base["ops_per_s"] else None})
    return {"title": TITLE, "rows": rows, "ratios": ratios}


TITLE = ("zpydb web over HTTP: GET and PUT requests/s and p99 (8 keep-alive clients) "
         "vs a constant endpoint of the same stack")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _load(port, method, seconds, mode):
    """Run the client processes against ``port``; (requests, wall seconds, latencies)."""
    spec = {"port": port, "method": method, "seconds": seconds, "threads": THREADS,
            "paths": [f"/h1/k{i}.json" for i in range(KEYS)],
            "body": json.dumps(VALUE) if method == "PUT" else None,
            "max_requests": 200_000 if mode.name != "smoke" else 400}
    processes = [subprocess.Popen([sys.executable, "-m", "bench.web_client", json.dumps(spec)],
                                  cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
                 for _ in range(CLIENT_PROCESSES)]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=seconds + 180)
        result = json.loads(out)
        if result["errors"]:
            raise RuntimeError(f"{method} on port {port}: {result['errors'][:3]}")
        results.append(result)
    count = sum(r["count"] for r in results)
    wall = max(r["seconds"] for r in results)
    return count, wall, [lat for r in results for lat in r["latencies"]]


def _row(name, method, runs):
    per_round = sorted(count / wall for count, wall, _ in runs if wall)
    latencies = sorted(lat for _, _, lats in runs for lat in lats)
    median_round = per_round[len(per_round) // 2] if per_round else 0.0
    return {"name": f"{name} {method}", "clients": CLIENT_PROCESSES * THREADS,
            "ops_per_s": round(median_round, 1),
            "ops_per_s_rounds": [round(x, 1) for x in per_round],
            "median_us": percentile(latencies, 50) * 1e6,
            "p99_us": percentile(latencies, 99) * 1e6, "calls": len(latencies)}


# -- H2: commit to browser event ------------------------------------------------------------

H2_SUBSCRIBERS = (1, 100)
H2_TITLE = ("zpydb web streams: from a PUT's start to the event at every SSE subscriber "
            "(1 and 100 subscribers, embedded Data.fs)")


def h2(env, mode, tick):
    """Median and p99 delay from sending a PUT to its event arriving at each of N
    Server-Sent Events clients (threads of this process, each its own HTTP
    connection); one write at a time, the next once every client has the last."""
    try:
        import starlette  # noqa: F401
    except ImportError as exc:
        return {"title": H2_TITLE, "skipped": f"the web extra is not installed ({exc.name})",
                "rows": [], "ratios": []}
    import threading
    import time
    writes = 5 if mode.name == "smoke" else 50
    rows = []
    data = os.path.join(env.tmp, "h2", "Data.fs")
    os.makedirs(os.path.dirname(data), exist_ok=True)
    with WebServer(data, "--max-streams", "200", log_dir=os.path.join(env.tmp, "h2")) as web:
        for count in H2_SUBSCRIBERS:
            path = f"/h2/n{count}.json"
            web.request("PUT", path, "-1")
            streams = [web.events(path) for _ in range(count)]
            arrived = [dict() for _ in range(count)]
            errors = []

            def listen(stream, seen):
                try:
                    stream.next()  # the first put
                    ready.release()
                    while len(seen) < writes:
                        event = stream.next(timeout=120)
                        if event is None:
                            raise RuntimeError("the stream ended")
                        seen[event[2]["data"]] = time.perf_counter()
                        got.release()
                except Exception as exc:  # reported below, not hidden
                    errors.append(exc)
                    got.release()

            ready, got = threading.Semaphore(0), threading.Semaphore(0)
            threads = [threading.Thread(target=listen, args=(s, a), daemon=True)
                       for s, a in zip(streams, arrived)]
            for thread in threads:
                thread.start()
            for _ in threads:
                if not ready.acquire(timeout=120):
                    raise RuntimeError("a subscriber got no first event")
            sent = {}
            for number in range(writes):
                sent[number] = time.perf_counter()
                status, _h, _b = web.request("PUT", path, str(number))
                assert status == 200, status
                for _ in threads:
                    if not got.acquire(timeout=120):
                        raise RuntimeError(f"write {number}: not every subscriber got it")
                if errors:
                    raise RuntimeError(f"a subscriber failed: {errors[0]!r}")
            for thread in threads:
                thread.join(60)
            for stream in streams:
                stream.close()
            delays = sorted(seen[n] - sent[n] for seen in arrived for n in seen)
            rows.append({"name": f"{count} subscriber{'s' if count > 1 else ''}",
                         "clients": count, "calls": len(delays),
                         "median_us": percentile(delays, 50) * 1e6,
                         "p99_us": percentile(delays, 99) * 1e6})
            tick()
    ratios = [{"name": "median delay, 100 subscribers / 1",
               "ratio": round(rows[1]["median_us"] / rows[0]["median_us"], 2)
               if rows[0]["median_us"] else None}]
    return {"title": H2_TITLE, "rows": rows, "ratios": ratios}
