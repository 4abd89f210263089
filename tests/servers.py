"""The ZEO server and port helpers for tests: a re-export of devservers (see its docstring)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `devservers` and `zpydb` live at the repository root
    sys.path.insert(0, str(REPO))

from devservers.ports import (HOST, START_TIMEOUT, STOP_TIMEOUT, free_port,  # noqa: E402,F401
                              port_open, stop_process, wait_for_port, wait_for_port_closed)
from devservers.zeo import KINDS, ZeoServer, ZeoServerError  # noqa: E402,F401
