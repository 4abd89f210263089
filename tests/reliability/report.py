"""The figures of a reliability run as markdown (for docs/reliability.md).

    python -m tests.reliability.report RESULTS.jsonl
"""

import json
import sys
from collections import Counter

COLUMNS = ("trials", "acknowledged", "lost", "duplicated", "untruthful_errors",
           "half_applied_blocks", "corrupted", "raw_errors")


def short(name):
    return name.rsplit(".", 1)[-1]


def label(row):
    extra = [str(row[k]) for k in ("backend", "trigger", "phase", "kind") if k in row]
    return row["attack"] + (f" ({', '.join(extra)})" if extra else "")


def render(rows):
    out = ["| attack | " + " | ".join(c.replace("_", " ") for c in COLUMNS)
           + " | errors by type | fstest |",
           "|" + "---|" * (len(COLUMNS) + 3)]
    merged = {}
    for row in rows:                     # the injected/proxy cases: one line per attack
        key = label(row) if row["attack"] not in ("ctrl-c injected in commit",
                                                  "connection cut mid-commit") else row["attack"]
        entry = merged.setdefault(key, {"errors": Counter(), "fstest": set(), "failed": 0})
        for column in COLUMNS:
            entry[column] = entry.get(column, 0) + int(row.get(column, 0) or 0)
        for name, count in (row.get("errors") or {}).items():
            entry["errors"][short(name)] += count
        if "outcome" in row and row["outcome"] != "returned":
            entry["errors"][row["outcome"] + (f" [{row['claim']}]" if row.get("claim") else "")] += 1
        if "fstest_clean" in row:
            entry["fstest"].add("clean" if row["fstest_clean"] else "DAMAGED")
        if row.get("ok") is False:
            entry["failed"] += 1
    for key, entry in merged.items():
        errors = ", ".join(f"{name} {count}" for name, count in entry["errors"].most_common())
        fs = "/".join(sorted(entry["fstest"])) or "-"
        out.append(f"| {key} | " + " | ".join(str(entry[c]) for c in COLUMNS)
                   + f" | {errors or '-'} | {fs} |")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as lines:
        print(render([json.loads(line) for line in lines if line.strip()]))
