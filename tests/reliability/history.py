"""Check a writer's log (tests/reliability/writer.py) against the data it wrote.

Per tag: how often it was acknowledged, how often an error claimed "nothing was
applied", how many attempts ended with an unknown outcome (an error that says so,
a raw exception, a Ctrl-C, a write in flight when the writer was killed), and how
many times it is in the data.  Then:

* lost        - acknowledged but not in the data;
* duplicated  - in the data more than once (a statement applied twice);
* untruthful  - in the data more often than acknowledgements plus unknown outcomes
                allow: an error said "nothing was applied" and it was;
* half        - a block whose 10 items are not all there the same number of times;
* raw         - errors that are not zpydb errors (a bare ValueError, OSError...).
"""

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .writer import BLOCK_SIZE

_BLOCK_ITEM = re.compile(r"^(.*)/(\d+)$")


def read_log(path):
    events = []
    try:
        with open(path) as lines:
            for line in lines:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass  # cannot happen with single os.write lines; tolerated anyway
    except FileNotFoundError:
        pass
    return events


class LogTail:
    """Incremental reader of a growing log: counts acks, errors, interrupts."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.buffer = b""
        self.events = []
        self.acks = 0

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self
        self.offset += len(chunk)
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("ev") == "ack":
                self.acks += 1
        return self

    def count(self, ev):
        return sum(1 for e in self.events if e.get("ev") == ev)


def tags_in(items):
    """Stored items -> Counter of statement tags and {block tag: Counter of indexes}."""
    plain, blocks = Counter(), defaultdict(Counter)
    for item in items:
        if isinstance(item, dict):
            item = item.get("t")
        if not isinstance(item, str):
            plain[repr(item)] += 1
            continue
        match = _BLOCK_ITEM.match(item)
        if match:
            blocks[match.group(1)][int(match.group(2))] += 1
        else:
            plain[item] += 1
    return plain, blocks


@dataclass
class Verdict:
    attempts: int = 0
    acknowledged: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    untruthful: list = field(default_factory=list)
    half: list = field(default_factory=list)
    unknown_items: list = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)   # "type" -> count
    raw: list = field(default_factory=list)            # (type, message) of non-zpydb errors
    interrupts: int = 0
    samples: dict = field(default_factory=dict)        # "type" -> one message

    @property
    def ok(self):
        return not (self.lost or self.duplicated or self.untruthful or self.half or self.raw
                    or self.unknown_items)

    def figures(self):
        return {"attempts": self.attempts, "acknowledged": self.acknowledged,
                "lost": len(self.lost), "duplicated": len(self.duplicated),
                "untruthful_errors": len(self.untruthful), "half_applied_blocks": len(self.half),
                "corrupted": len(self.unknown_items),
                "raw_errors": len(self.raw), "interrupts": self.interrupts,
                "errors": dict(self.errors)}

    def problems(self):
        out = []
        for name in ("lost", "duplicated", "untruthful", "half", "raw", "unknown_items"):
            value = getattr(self, name)
            if value:
                out.append(f"{name} ({len(value)}): {value[:8]}")
        if self.samples:
            out.append("error samples: " + "; ".join(f"{t}: {m}" for t, m in self.samples.items()))
        return "\n".join(out)


def check(events, items):
    """The verdict of one or more writers' logs (``events``) against ``items``."""
    plain, blocks = tags_in(items)
    per_tag = defaultdict(lambda: {"kind": None, "ack": 0, "none": 0, "unknown": 0, "tries": 0})
    verdict = Verdict()
    for event in events:
        ev = event.get("ev")
        tag = event.get("tag")
        if ev == "try":
            entry = per_tag[tag]
            entry["kind"] = event["kind"]
            entry["tries"] += 1
            verdict.attempts += 1
        elif ev == "ack":
            per_tag[tag]["ack"] += 1
            verdict.acknowledged += 1
        elif ev == "err":
            verdict.errors[event["type"]] += 1
            verdict.samples.setdefault(event["type"], event["msg"][:300])
            if not event["zpydb"]:
                verdict.raw.append((event["type"], event["msg"][:200]))
            per_tag[tag]["none" if event["claim"] == "none" and event["zpydb"]
                         else "unknown"] += 1
        elif ev == "int":
            verdict.interrupts += 1
            verdict.errors["KeyboardInterrupt"] += 1
            if tag is not None:
                per_tag[tag]["unknown"] += 1
    for tag, entry in per_tag.items():
        # a try with no ack/err/int after it: the write in flight at a kill
        in_flight = entry["tries"] - entry["ack"] - entry["none"] - entry["unknown"]
        unknown = entry["unknown"] + max(0, in_flight)
        if entry["kind"] in ("block", "atomic", "lock"):
            counts = blocks.pop(tag, Counter())
            values = {counts.get(j, 0) for j in range(BLOCK_SIZE)}
            if len(values) > 1:
                verdict.half.append((tag, dict(counts)))
            stored = max(values)
        else:
            stored = plain.pop(tag, 0)
        if entry["ack"] and stored == 0:
            verdict.lost.append(tag)
        if stored > 1:
            verdict.duplicated.append((tag, stored))
        if stored > entry["ack"] + unknown:
            verdict.untruthful.append((tag, {"stored": stored, **entry}))
    # items nobody tried: corruption (or a foreign write)
    verdict.unknown_items = list(plain) + list(blocks)
    return verdict
