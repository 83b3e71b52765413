"""``python -m tiergate_cli``: the same as the ``tiergate`` command."""

import sys

from tiergate_cli import main

sys.exit(main())
