"""What a command module gets to add its parser to: ``argparse``'s subparsers, by shape.

``argparse`` keeps the type of ``add_subparsers()``'s result private; commands depend on
this protocol instead of naming it.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

__all__ = ["Commands"]


class Commands(Protocol):
    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...
