"""``python -m tiergate_operator.cli``: the same as the ``tiergate`` command."""

import sys

from tiergate_operator.cli import main

sys.exit(main())
