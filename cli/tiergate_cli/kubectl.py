"""Which kubectl the CLI and the dev kit run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tiergate_cli.output import CommandError

__all__ = ["kubectl_binary"]


def kubectl_binary() -> str:
    """The kubectl installed beside this Python (the pinned one of the dev environment), else PATH's."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if not found:
        raise CommandError("kubectl not found: install it, or the dev environment (make setup)")
    return found
