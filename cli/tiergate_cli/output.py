"""How the commands print: documents on stdout, progress and problems on stderr, aligned tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

__all__ = ["CommandError", "dump", "note", "table"]


class CommandError(Exception):
    """Bad input or a failed step: printed as ``tiergate: <message>``, exit code 2."""


def note(message: str, prefix: str = "tiergate") -> None:
    print(f"[{prefix}] {message}", file=sys.stderr, flush=True)


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(documents: Sequence[Any], output: str) -> str:
    """``yaml``: a multi-document stream; ``json``: a kubectl-style ``List`` (or the one object)."""
    if output == "json":
        payload: Any = (
            documents[0]
            if len(documents) == 1
            else {"apiVersion": "v1", "kind": "List", "items": list(documents)}
        )
        return json.dumps(payload, indent=2, sort_keys=False) + "\n"
    return yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, width=float("inf"), explicit_start=True
    )


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """A plain text table; columns in ``right`` are right-aligned (numbers, money)."""
    body = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    aligned = set(right)

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(w) if i in aligned else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in body) + "\n"
