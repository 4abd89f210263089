"""The throw-away PostgreSQL server for tests: a re-export of devservers.pg."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `devservers` lives at the repository root
    sys.path.insert(0, str(REPO))

from devservers.pg import (DEFAULT_USER, FAST_SETTINGS, PostgresCluster,  # noqa: E402,F401
                           PostgresError, find_pg_bin)
