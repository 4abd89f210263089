"""``python -m bench [--smoke | --full] [--out DIR] [--only W1,R1] [--no-pg] [--no-redis]
[--tag NAME]``

Starts what it needs (runzeo primary and replica on loopback, a throw-away
PostgreSQL, two redis-servers), runs the workloads with zpydb and its baselines
alternating, writes ``<out>/<date>.json`` and ``<out>/<date>.md`` and PNG plots
(``<date>-W1-R1[-NAME]`` with ``--only``/``--tag``), and stops every server by PID.
"""

import argparse
import datetime
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback

from tqdm import tqdm

from . import contention, core, hotpath, procs, report, stream, timetravel, watch, web
from .common import MODES, REPO, Env, peak_rss_mb

WORKLOADS = {
    "FS": procs.fs, "W1": core.w1, "R1": core.r1, "S1": procs.s1, "R2": procs.r2,
    "I1": core.i1, "W3": core.w3, "W2": core.w2, "B1": procs.b1, "C1": procs.c1,
    "F1": procs.f1, "P1": procs.p1, "C2": contention.c2, "H1": web.h1, "H2": web.h2,
    "L1": core.l1,
    "X1": stream.x1, "WA": watch.wa,
    "V1": timetravel.v1, "V2": timetravel.v2, "HP": hotpath.hp, "W4": core.w4,
}
# rough progress ticks per workload (rounds / sizes), for the bar only
TICKS = {"FS": 1, "W1": "rounds", "R1": "rounds", "S1": 1, "R2": 3, "I1": "rounds",
         "W3": "grow", "W2": "grow", "B1": "bulk", "C1": "clients", "F1": 4, "P1": 2,
         "C2": "c2", "H1": "h1", "H2": 2, "L1": "rounds", "X1": "stream", "WA": "wa",
         "V1": 4, "V2": "rounds", "HP": len(hotpath.PER_OP), "W4": "rounds"}


def ticks_for(key, mode, env):
    t = TICKS[key]
    if t == "rounds":
        return mode.rounds
    if t == "grow":
        return len(mode.grow_sizes) * max(3, mode.rounds - 2)
    if t == "bulk":
        return len(mode.bulk_sizes) * 5
    if t == "clients":
        return len(mode.clients) * (2 if env.pg_url else 1)
    if t == "stream":
        return len(env.backends) * len(mode.stream_shapes) * len(mode.stream_sizes)
    if t == "c2":
        return len(mode.c2_writers) * 2 * mode.c2_rounds
    if t == "h1":
        return max(2, mode.rounds - 2)
    if t == "wa":
        return watch.ticks(mode, env)
    return t


def machine():
    try:
        import psutil
        mem = f", {psutil.virtual_memory().total / 2**30:.1f} GiB RAM"
    except Exception:
        mem = ""
    return (f"{platform.machine()}, {os.cpu_count()} CPUs{mem}, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for CI")
    size.add_argument("--full", action="store_true", help="the large sizes (1M keys/items)")
    parser.add_argument("--out", help="output directory (default bench/results; plots go to "
                                      "docs/img unless --out is given)")
    parser.add_argument("--only", help="comma-separated workloads, e.g. W1,R1")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-redis", action="store_true", help="skip Redis")
    parser.add_argument("--pg", action="store_true", help="use PostgreSQL even with --smoke")
    parser.add_argument("--tag", help="added to the result file names (e.g. before)")
    args = parser.parse_args(argv)
    mode = MODES["smoke" if args.smoke else "full" if args.full else "quick"]
    logging.basicConfig(level=logging.ERROR)
    out = os.path.abspath(args.out) if args.out else str(REPO / "bench" / "results")
    img = out if args.out else str(REPO / "docs" / "img")
    os.makedirs(out, exist_ok=True)
    keys = [k.strip().upper() for k in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = set(keys) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    date = datetime.datetime.now().strftime("%Y-%m-%d")
    stem = date if mode.name == "quick" else f"{date}-{mode.name}"
    if args.only:  # a partial run does not overwrite the day's whole-suite results
        stem += "-" + "-".join(keys)
    if args.tag:
        stem += "-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in args.tag)
    use_pg = (mode.pg or args.pg) and not args.no_pg
    tmp = tempfile.mkdtemp(prefix="zpydb-bench-")
    env = Env(tmp, use_pg=use_pg, use_redis=not args.no_redis)
    results = {"meta": {"date": date, "mode": mode.name, "machine": machine(),
                        "started": datetime.datetime.now().isoformat(timespec="seconds"),
                        "mode_settings": vars(mode).copy(), "notes": []},
               "workloads": {}}
    started = time.perf_counter()
    # SIGTERM: unwind through the finally below so every server is stopped by PID
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print(f"bench: starting servers in {tmp}", file=sys.stderr)
        env.start()
        results["meta"]["backends"] = env.backends
        results["meta"]["redis"] = list(env.redis)
        total = sum(ticks_for(k, mode, env) for k in keys)
        with tqdm(total=total, desc="bench", unit="step", file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for key in keys:
                bar.set_description(f"bench {key}")
                t0 = time.perf_counter()
                # a fresh embedded Data.fs per workload (W2/W3 measure its growth)
                env.file_path = os.path.join(tmp, f"file-{key}", "Data.fs")
                try:
                    result = WORKLOADS[key](env, mode, lambda: bar.update(1))
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    result = {"error": repr(exc), "rows": [], "ratios": []}
                result["seconds"] = round(time.perf_counter() - t0, 2)
                result.setdefault("peak_rss_mb", peak_rss_mb())
                results["workloads"][key] = result
    finally:
        env.stop()
        results["meta"]["notes"] += env.notes
        shutil.rmtree(tmp, ignore_errors=True)
    results["meta"]["total_seconds"] = round(time.perf_counter() - started, 1)
    json_path = os.path.join(out, f"{stem}.json")
    md_path = os.path.join(out, f"{stem}.md")
    try:
        results["meta"]["plots"] = report.plots(results, img, f"bench-{stem}")
    except Exception as exc:
        results["meta"]["notes"].append(f"plots failed: {exc!r}")
    report.write_json(results, json_path)
    with open(md_path, "w") as stream:
        stream.write(report.markdown(results))
    print(f"bench: wrote {json_path}, {md_path} ({results['meta']['total_seconds']} s)",
          file=sys.stderr)
    failed = [k for k, v in results["workloads"].items() if v.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
