"""``tiergate demo`` (``make demo``): the whole story on this machine, in about a minute.

``dev up``, then with the official ``openai`` SDK: a Shared and a Dedicated tier
answering (plain and streamed), the traffic split across targets, a failover while
the primary upstream fails, and a 429 once the startup tier is over its limit.
Everything is torn down at the end unless ``--keep`` (or ``KEEP=1``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tiergate_cli.commands import Commands
from tiergate_cli.devstate import DEFAULT_DEV_DIR
from tiergate_devkit import demo_story

__all__ = ["add_parser", "run"]


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="bring everything up, show it working, tear it down",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        default=os.environ.get("KEEP", "") not in ("", "0"),
        help="leave everything running afterwards (also KEEP=1)",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DEV_DIR)
    parser.add_argument("--split-requests", type=int, default=50)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return demo_story.run(args)
