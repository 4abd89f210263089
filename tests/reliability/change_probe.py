"""Ctrl-C right after a list changed in memory, before ``_p_changed`` registers it.

    python -m tests.reliability.change_probe PATH KIND      (KIND: stmt or block)

Found by the random Ctrl-C attack (a ``lock()`` block stored with 1 of its 10
items).  ``PersistentList.append`` changes the list, then sets ``_p_changed``; a
KeyboardInterrupt in between leaves a change the abort does not see, in the cache
of a connection that goes back to the pool, and the next commit on it writes it.
The items list is swapped through ``__dict__`` (no ``_p_changed``) for one whose
``append`` sends SIGINT to the process right after appending, so the Ctrl-C lands
there whatever order ``AppendList.append`` uses; a fix that sets ``_p_changed``
first, drops the cache after an interrupted statement, or holds Ctrl-C during the
statement passes.  Prints a JSON report.
"""

import json
import os
import signal
import sys

import zpydb
from zpydb import merging

FIRED = []


class Interrupting(list):
    def append(self, item):
        list.append(self, item)               # the list changes in memory...
        FIRED.append(item)
        os.kill(os.getpid(), signal.SIGINT)   # ...and Ctrl-C lands right after


def main(path, kind):
    real = merging.AppendList.append

    def interrupted(self, item):
        self.__dict__["data"] = Interrupting(self.__dict__["data"])
        try:
            return real(self, item)
        finally:
            if type(self.__dict__.get("data")) is Interrupting:
                self.__dict__["data"] = list(self.__dict__["data"])

    report = {"kind": kind}
    db = zpydb.connect(path)
    db["log"] = []
    merging.AppendList.append = interrupted
    try:
        if kind == "stmt":
            db["log"].append("ghost")
        else:
            with db.transaction() as t:
                t["log"].append("ghost")
        report["probe"] = "returned"
    except KeyboardInterrupt:
        report["probe"] = "KeyboardInterrupt"
    finally:
        merging.AppendList.append = real
    if kind == "stmt":
        db["log"].append("next")
    else:
        with db.transaction() as t:
            t["log"].append("next")
    db.close()
    with zpydb.connect(path) as fresh:
        report["items"] = fresh["log"]._run()
    report["fired"] = FIRED
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:3])
