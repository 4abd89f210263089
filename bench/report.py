"""Results: the JSON file, a Markdown table and PNG plots."""

import json
import os


def fmt(value):
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value) if value is not None else ""


def write_json(results, path):
    with open(path, "w") as stream:
        json.dump(results, stream, indent=1, default=str)


def markdown(results):
    meta = results["meta"]
    lines = [f"# zpydb benchmark, {meta['date']} ({meta['mode']} mode)", "",
             f"{meta['machine']}. Rounds alternate zpydb and baselines; numbers are medians "
             f"over rounds. ratio = zpydb throughput / baseline throughput (>1: zpydb faster).",
             ""]
    for note in meta.get("notes", []):
        lines.append(f"* note: {note}")
    lines.append("")
    for key, wl in results["workloads"].items():
        lines.append(f"## {key}: {wl.get('title', '')}")
        lines.append("")
        if wl.get("skipped"):
            lines += [f"skipped: {wl['skipped']}", ""]
            continue
        if wl.get("error"):
            lines += [f"error: `{wl['error']}`", ""]
            continue
        rows = wl.get("rows", [])
        if rows:
            cols = ["name"] + [c for c in ("size", "items", "clients", "writers", "watchers",
                                           "keys", "mb")
                               if any(c in r for r in rows)]
            cols += ["ops_per_s", "median_us", "p99_us"]
            cols += [c for c in ("bytes_per_write", "items_per_s", "maxrss_mb", "connect_s",
                                 "server_peak_rss_mb", "wall_us", "client_cpu_us",
                                 "server_cpu_us", "fsync_us", "ping_rtt_us", "other_wait_us",
                                 "distance_from_fsync_floor_x", "missed_after_2s", "acked",
                                 "failed", "lost", "extra", "dup", "reordered", "raw_retries",
                                 "missed")
                     if any(r.get(c) is not None for r in rows)]
            cols = [c for c in cols if any(c in r for r in rows)]
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + " --- |" * len(cols))
            for r in rows:
                lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
            lines.append("")
        ratios = wl.get("ratios", [])
        if ratios:
            lines.append("| comparison | ratio | target | pass |")
            lines.append("| --- | --- | --- | --- |")
            for r in ratios:
                ratio = fmt(r["ratio"]) if r["ratio"] is not None else f"none ({r.get('error')})"
                lines.append(f"| {r['name']} | {ratio} | {fmt(r.get('target', ''))} "
                             f"| {fmt(r.get('pass', ''))} |")
            lines.append("")
        for prof in wl.get("profiles", {}).items():
            name, tables = prof
            table = [t for t in tables if t["by"] == "tottime_s"][0]
            lines.append(f"cProfile of {name}, top functions by own time "
                         f"(total {table['total_s']} s):")
            lines.append("")
            lines.append("| function | calls | tottime s | cumtime s |")
            lines.append("| --- | --- | --- | --- |")
            for e in table["top"][:10]:
                lines.append(f"| `{e['function']}` | {e['calls']} | {e['tottime_s']} | "
                             f"{e['cumtime_s']} |")
            lines.append("")
            modules = [t for t in tables if t["by"] == "module_us_per_unit"]
            if modules:
                shown = ", ".join(f"{m} {us}" for m, us in list(modules[0]["modules"].items())[:8])
                lines += [f"Own time by module under cProfile, µs per statement or item: "
                          f"{shown}.", ""]
    return "\n".join(lines) + "\n"


def plots(results, directory, stem):
    """PNG plots (Agg); returns the written paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    wls = results["workloads"]

    def growth_plot(key, fname, title, names_filter):
        wl = wls.get(key)
        if not wl or not wl.get("rows"):
            return
        fig, ax = plt.subplots(figsize=(7, 4.2))
        names = sorted({r["name"] for r in wl["rows"] if names_filter(r["name"])})
        for name in names:
            pts = sorted((r["size"], r["median_us"] / 1000) for r in wl["rows"]
                         if r["name"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("size before the write (keys / items)")
        ax.set_ylabel("median ms per durable write")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(directory, f"{stem}-{fname}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    growth_plot("W2", "w2-dict-growth", "W2: one write into a growing dict",
                lambda n: "/dict" in n or "PersistentMapping" in n or "redis-always" in n
                or n in ("tinydb", "shelve"))
    growth_plot("W3", "w3-list-append", "W3: one append to a growing list", lambda n: True)

    def ratio_plot(keys, fname, title):
        labels, values, colors = [], [], []
        for key in keys:
            for r in wls.get(key, {}).get("ratios", []):
                if "vs raw" in r["name"] and isinstance(r.get("ratio"), (int, float)):
                    labels.append(f"{key} {r['name']}")
                    values.append(r["ratio"])
                    colors.append("tab:green" if r.get("pass", True) else "tab:red")
        if not labels:
            return
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.2))
        ax.barh(range(len(labels)), values, color=colors)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("zpydb throughput / raw ZODB throughput (red: below target)")
        ax.set_title(title)
        ax.invert_yaxis()
        fig.tight_layout()
        path = os.path.join(directory, f"{stem}-{fname}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    ratio_plot(["W1", "R1", "I1", "R2", "C1"], "ratios", "zpydb vs raw ZODB, same storage")

    wl = wls.get("C1")
    if wl and wl.get("rows"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name in sorted({r["name"] for r in wl["rows"]}):
            pts = sorted((r["clients"], r["ops_per_s"]) for r in wl["rows"] if r["name"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("client processes")
        ax.set_ylabel("aggregate durable writes/s")
        ax.set_title("C1: concurrent writers, distinct keys")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(directory, f"{stem}-c1-clients.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    wl = wls.get("C2")
    if wl and wl.get("rows"):
        path = os.path.join(directory, f"{stem}-c2-one-key.png")
        c2_plot(plt, wl["rows"], path)
        written.append(path)

    wl = wls.get("W1")
    if wl and wl.get("rows"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        rows = sorted(wl["rows"], key=lambda r: r["ops_per_s"])
        ax.barh([r["name"] for r in rows], [r["ops_per_s"] for r in rows], color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("single-statement writes/s (median of rounds)")
        ax.set_title("W1: one write per transaction (redis-default, tinydb, shelve: no fsync)")
        fig.tight_layout()
        path = os.path.join(directory, f"{stem}-w1-writes.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


C2_STYLE = {"zpydb": ("tab:blue", "o"), "raw": ("tab:orange", "s"),
            "redis-always": ("tab:green", "^")}


def c2_plot(plt, rows, path):
    """C2: throughput (top) and p99 latency (bottom) vs writers, one column per op x backend.

    A red label beside a point: statements that failed there ('Nf'), updates lost ('lost N').
    """
    backends = [b for b in ("zeo", "pg") if any(r["system"].endswith("/" + b) for r in rows)]
    panels = [(op, b) for op in ("incr", "append") for b in backends]
    writers = sorted({r["writers"] for r in rows})
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 6.6), squeeze=False)
    for col, (op, backend) in enumerate(panels):
        for system in (f"zpydb/{backend}", f"raw/{backend}", "redis-always"):
            pts = sorted(((r["writers"], r) for r in rows
                          if r["system"] == system and r["op"] == op), key=lambda p: p[0])
            if not pts:
                continue
            color, marker = C2_STYLE[system.split("/")[0]]
            xs = [p[0] for p in pts]
            top, bottom = axes[0][col], axes[1][col]
            label = {"zpydb": "zpydb", "raw": "raw ZODB"}.get(system.split("/")[0], system)
            top.plot(xs, [r["ops_per_s"] for _, r in pts], marker=marker, color=color,
                     label=label)
            bottom.plot(xs, [r["p99_us"] / 1000 for _, r in pts], marker=marker, color=color,
                        label=label)
            for x, r in pts:
                bad = []
                if r["failed"]:
                    bad.append(f"{r['failed']}f")
                damaged = r["lost"] + r["extra"] + r.get("dup", 0)
                if damaged:
                    bad.append(f"lost {damaged}")
                if bad:
                    top.annotate(" ".join(bad), (x, r["ops_per_s"]), fontsize=6, color="red",
                                 xytext=(3, 3), textcoords="offset points")
        label = "+= 1" if op == "incr" else "append"
        axes[0][col].set_title(f"{label}, {'ZEO' if backend == 'zeo' else 'PostgreSQL'}",
                               fontsize=9)
        for ax in (axes[0][col], axes[1][col]):
            if len(writers) > 1:
                ax.set_xscale("log", base=2)
            ax.set_xticks(writers)
            ax.set_xticklabels([str(w) for w in writers])
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=7)
        axes[0][col].set_yscale("log")
        axes[1][col].set_yscale("log")
        axes[1][col].set_xlabel("writer processes", fontsize=8)
    axes[0][0].set_ylabel("aggregate acknowledged statements/s", fontsize=8)
    axes[1][0].set_ylabel("p99 latency per statement, ms", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("C2: N processes on one key (red: failed statements 'Nf', lost updates)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
