"""``tiergate``: render, cost, run and inspect tiergate from a laptop.

One module per command; each adds its parser and runs from the parsed arguments,
returning the exit code (0 fine, 1 problems reported, 2 bad input or a failed step).
Other installed packages add commands through the ``tiergate.commands`` entry point
group (the dev kit adds ``dev`` and ``demo``), so this package never imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType

from tiergate_cli import catalog, cost, gateway, keys, render, status
from tiergate_cli.manifests import ManifestError
from tiergate_cli.output import CommandError
from tiergate_operator.settings import SettingsError

__all__ = ["COMMANDS_ENTRY_POINTS", "build_parser", "main"]

COMMANDS_ENTRY_POINTS = "tiergate.commands"


def _command_modules() -> list[ModuleType]:
    """The built-in commands, then those installed packages add (by entry point name)."""
    added = sorted(entry_points(group=COMMANDS_ENTRY_POINTS), key=lambda point: point.name)
    return [render, cost, catalog, gateway, status, keys, *(point.load() for point in added)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiergate",
        description="Tiered LLM access on Kubernetes: tiergate's command line.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for command in _command_modules():
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (ManifestError, CommandError, SettingsError) as error:
        print(f"tiergate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
