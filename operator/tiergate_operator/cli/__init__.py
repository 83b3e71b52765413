"""``tiergate``: render, cost, run and inspect tiergate from a laptop.

One module per command; each adds its parser and runs from the parsed arguments,
returning the exit code (0 fine, 1 problems reported, 2 bad input or a failed step).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tiergate_operator.cli import cost, demo, dev, gateway, render, status
from tiergate_operator.cli.manifests import ManifestError
from tiergate_operator.cli.output import CommandError
from tiergate_operator.settings import SettingsError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiergate",
        description="Tiered LLM access on Kubernetes: tiergate's command line.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for command in (render, cost, gateway, dev, status, demo):
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
