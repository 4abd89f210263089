"""A Ctrl-C during a read, then a write: does the write ever return?

    python -m tests.reliability.read_probe PATH

Found by the random Ctrl-C attack (an embedded writer stuck for good after a
Ctrl-C that landed at the start of a statement).  FileStorage's ``FilePool.get()``
puts the file it hands out on ``_out`` and only then enters the ``try`` that takes
it off again; a KeyboardInterrupt in between leaves it there, and every later
commit waits in ``FilePool.write_lock()`` for ``_out`` to empty: forever, and with
Ctrl-C held during the commit, not even Ctrl-C gets the user out.  Here the Ctrl-C
is delivered exactly there (``_out.append`` sends SIGINT to the process once, after
appending; a fix that holds Ctrl-C during the whole statement passes).

Prints one line per step; after ``HANG_AFTER`` seconds faulthandler prints every
thread's stack ("Timeout (0:00:15)!") and exits.
"""

import faulthandler
import os
import signal
import sys

import zpydb

HANG_AFTER = 15


class OnceInterrupting(list):
    fired = False

    def append(self, item):
        list.append(self, item)
        if not OnceInterrupting.fired:
            OnceInterrupting.fired = True
            os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C right after the file was taken


def main(path):
    db = zpydb.connect(path)
    db["log"] = ["x"]
    pool = db._session.db.storage._files
    pool._out = OnceInterrupting(pool._out)
    db._session.db.cacheMinimize()                 # the next read goes to the file
    try:
        db["log"]._run()
        print("read returned", flush=True)
    except KeyboardInterrupt:
        print("read interrupted", flush=True)
    faulthandler.dump_traceback_later(HANG_AFTER, exit=True)
    db["log"].append("after")
    print("write returned", flush=True)
    faulthandler.cancel_dump_traceback_later()
    db.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
