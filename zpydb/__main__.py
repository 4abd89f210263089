"""``python -m zpydb`` is the ``zpydb`` command."""

import sys

from .cli import main

sys.exit(main())
