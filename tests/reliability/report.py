"""The figures of a reliability run as markdown (for docs/reliability.md).

    python -m tests.reliability.report RESULTS.jsonl [JUNIT.xml]

The first table sums the loop attacks (writers whose history is checked); the
second, from pytest's JUnit XML, lists every test of the run with its outcome and
the first line of its failure.
"""

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter

COLUMNS = ("trials", "acknowledged", "lost", "duplicated", "untruthful_errors",
           "half_applied_blocks", "corrupted", "raw_errors")


def short(name):
    return name.rsplit(".", 1)[-1]


def label(row):
    extra = [str(row[k]) for k in ("backend",) if k in row]
    return row["attack"] + (f" ({', '.join(extra)})" if extra else "")


def figures_table(rows):
    out = ["| attack | " + " | ".join(c.replace("_", " ") for c in COLUMNS)
           + " | errors by type | fstest |",
           "|" + "---|" * (len(COLUMNS) + 3)]
    merged = {}
    for row in rows:
        if "acknowledged" not in row:
            continue                      # a single case: see the second table
        entry = merged.setdefault(label(row), {"errors": Counter(), "fstest": set()})
        for column in COLUMNS:
            entry[column] = entry.get(column, 0) + int(row.get(column, 0) or 0)
        for name, count in (row.get("errors") or {}).items():
            entry["errors"][short(name)] += count
        if row.get("hung"):
            entry["errors"]["HUNG (writer stuck)"] += row["hung"]
        if "fstest_clean" in row:
            entry["fstest"].add("clean" if row["fstest_clean"] else "DAMAGED")
    for key, entry in merged.items():
        errors = ", ".join(f"{name} {count}" for name, count in entry["errors"].most_common())
        fs = "/".join(sorted(entry["fstest"])) or "-"
        out.append(f"| {key} | " + " | ".join(str(entry[c]) for c in COLUMNS)
                   + f" | {errors or '-'} | {fs} |")
    return "\n".join(out)


def cases_table(junit_path):
    root = ET.parse(junit_path).getroot()
    out = ["| test | outcome | seconds | first line of the failure |", "|---|---|---|---|"]
    for case in root.iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            outcome = "FAILED"
            text = (failure.get("message") or failure.text or "").strip().splitlines()
            detail = text[0][:160].replace("|", "/") if text else ""
        elif skipped is not None:
            outcome, detail = "skipped", (skipped.get("message") or "")[:160]
        else:
            outcome, detail = "passed", ""
        out.append(f"| `{case.get('name')}` | {outcome} | "
                   f"{float(case.get('time', 0)):.1f} | {detail} |")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as lines:
        print(figures_table([json.loads(line) for line in lines if line.strip()]))
    if len(sys.argv) > 2:
        print()
        print(cases_table(sys.argv[2]))
