"""``tiergate catalog import MODELS.json --prices PRICES.csv``: a catalog ModelRoute, offline.

MODELS.json is an OpenAI-style ``GET /v1/models`` answer the user saved (``{"object": "list",
"data": [{"id": ...}, ...]}``, or the bare list); nothing is fetched. PRICES.csv has a header
row with ``model``, ``input`` and ``output`` (USD per million tokens, decimal strings; also
spelled ``inputPerMillion`` / ``input_per_million``) and optionally ``upstreamModel``.
Every model of MODELS.json needs a price row, unless ``--default-price`` prices the rest;
price rows for models the upstream does not list are left out, with a note. ``--target``
(repeatable; the first serves, each next one is the failover of the one before) names the
upstreams; ``--pattern`` adds a pass-through pattern such as ``deepseek-ai/*``. The manifest
goes to stdout or ``-o FILE``, ready for ``kubectl apply -f``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiergate_cli.commands import Commands
from tiergate_cli.output import CommandError, dump, note
from tiergate_operator.models import ModelRoute
from tiergate_operator.registry import CRD_API_VERSION, MODEL_ROUTE

__all__ = ["PriceRow", "add_parser", "catalog_manifest", "read_models", "read_prices", "run"]

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
_DECIMAL = re.compile(r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$")
_TARGET = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)=(https?://[^\s@]+)(@([^/\s]+)/(\S+))?$")
_COLUMNS = {
    "model": ("model", "id"),
    "input": ("input", "inputpermillion", "input_per_million"),
    "output": ("output", "outputpermillion", "output_per_million"),
    "upstream": ("upstreammodel", "upstream_model"),
}
_LISTED = 10  # names an error message lists; the rest are counted


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "catalog",
        help="make a catalog ModelRoute from a saved /v1/models answer and a price CSV",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(title="actions", required=True, metavar="ACTION")
    imported = actions.add_parser("import", help="a catalog manifest from MODELS.json + CSV")
    imported.add_argument("models", type=Path, metavar="MODELS.json")
    imported.add_argument("--prices", type=Path, required=True, metavar="CSV")
    imported.add_argument("--name", required=True, help="the ModelRoute's name")
    imported.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="NAME=BASE_URL[@SECRET/KEY]",
        help="an upstream and its credential (a key of a Secret); repeat for failover targets",
    )
    imported.add_argument(
        "--default-price",
        metavar="INPUT/OUTPUT",
        help="the price of models without a row, and of patterns (USD per million tokens)",
    )
    imported.add_argument(
        "--pattern", action="append", default=[], help="a pass-through pattern, e.g. Qwen/*"
    )
    imported.add_argument("-n", "--namespace", help="the manifest's namespace (default: none)")
    imported.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    imported.set_defaults(run=run)


@dataclass(frozen=True)
class PriceRow:
    model: str
    input: str
    output: str
    upstream_model: str | None = None


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def read_models(path: Path) -> list[str]:
    """The model ids of a saved ``/v1/models`` answer, in its order."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"{path}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise CommandError(f"{path}:{error.lineno}: not JSON: {error.msg}") from None
    entries = document.get("data") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise CommandError(f'{path}: expected a /v1/models answer: {{"data": [{{"id": ...}}]}}')
    ids: list[str] = []
    for index, entry in enumerate(entries):
        model = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(model, str):
            raise CommandError(f"{path}: data[{index}] has no string 'id'")
        ids.append(model)
    bad = [m for m in ids if not _MODEL.match(m) or len(m) > 253]
    if bad:
        raise CommandError(f"{path}: not a model name a client can send: {_listed(bad)}")
    twice = sorted({m for m in ids if ids.count(m) > 1})
    if twice:
        raise CommandError(f"{path}: listed more than once: {_listed(twice)}")
    if not ids:
        raise CommandError(f"{path}: lists no model")
    return ids


def _price(text: str, where: str, what: str) -> str:
    if not _DECIMAL.match(text):
        raise CommandError(f"{where}: {what} {text!r} is not a decimal such as 0.25")
    return text


def _columns(header: list[str], path: Path) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    found = {
        column: next((names.index(a) for a in aliases if a in names), -1)
        for column, aliases in _COLUMNS.items()
    }
    missing = [column for column in ("model", "input", "output") if found[column] < 0]
    if missing:
        raise CommandError(
            f"{path}:1: the header row needs columns model, input and output "
            f"(missing {', '.join(missing)})"
        )
    return found


def read_prices(path: Path) -> dict[str, PriceRow]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"{path}: cannot read: {error}") from None
    if not rows:
        raise CommandError(f"{path}: empty (expected a header row: model,input,output)")
    columns = _columns(rows[0], path)
    prices: dict[str, PriceRow] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) <= max(columns.values()):
            raise CommandError(f"{where}: expected {len(rows[0])} columns, got {len(row)}")
        model = row[columns["model"]].strip()
        if model in prices:
            raise CommandError(f"{where}: model {model!r} is priced twice")
        upstream = row[columns["upstream"]].strip() if columns["upstream"] >= 0 else ""
        prices[model] = PriceRow(
            model,
            _price(row[columns["input"]].strip(), where, "input price"),
            _price(row[columns["output"]].strip(), where, "output price"),
            upstream or None,
        )
    return prices


def _pricing(text: str, what: str) -> dict[str, str]:
    parts = text.split("/")
    if len(parts) != 2:
        raise CommandError(f"{what} {text!r}: expected INPUT/OUTPUT, e.g. 0.25/1.10")
    return {
        "inputPerMillion": _price(parts[0], what, "input price"),
        "outputPerMillion": _price(parts[1], what, "output price"),
    }


def _targets(specs: list[str]) -> list[dict[str, Any]]:
    targets = []
    for priority, spec in enumerate(specs):
        match = _TARGET.match(spec)
        if not match:
            raise CommandError(
                f"--target {spec!r}: expected NAME=BASE_URL[@SECRET/KEY], "
                "e.g. aggregator=https://api.example.com/v1@upstream-credentials/api-key"
            )
        target: dict[str, Any] = {"name": match.group(1), "baseURL": match.group(3)}
        if match.group(4):
            target["credentialsSecretRef"] = {"name": match.group(5), "key": match.group(6)}
        target["priority"] = priority
        targets.append(target)
    return targets


def catalog_manifest(
    name: str,
    models: list[str],
    prices: dict[str, PriceRow],
    targets: list[str],
    default_price: str | None = None,
    patterns: list[str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The ModelRoute, checked against the CRD's model (the API server would refuse the rest)."""
    unpriced = [m for m in models if m not in prices]
    if unpriced and default_price is None:
        raise CommandError(
            f"no price for {len(unpriced)} models: {_listed(unpriced)} "
            "(add rows to the CSV, or price them all with --default-price INPUT/OUTPUT)"
        )
    entries: list[dict[str, Any]] = []
    for model in sorted(models):
        entry: dict[str, Any] = {"model": model}
        row = prices.get(model)
        if row is not None:
            if row.upstream_model:
                entry["upstreamModel"] = row.upstream_model
            entry["pricing"] = {"inputPerMillion": row.input, "outputPerMillion": row.output}
        entries.append(entry)
    catalog: dict[str, Any] = {"models": entries}
    if patterns:
        catalog["patterns"] = [{"pattern": pattern} for pattern in patterns]
    if default_price is not None:
        catalog["defaultPricing"] = _pricing(default_price, "--default-price")
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    manifest = {
        "apiVersion": CRD_API_VERSION,
        "kind": MODEL_ROUTE.kind,
        "metadata": metadata,
        "spec": {"catalog": catalog, "targets": _targets(targets)},
    }
    try:
        ModelRoute.model_validate(manifest)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CommandError(f"the catalog would be refused: {where}: {first['msg']}") from None
    return manifest


def run(args: argparse.Namespace) -> int:
    models = read_models(args.models)
    prices = read_prices(args.prices)
    extra = sorted(set(prices) - set(models))
    if extra:
        note(
            f"{len(extra)} priced models are not in {args.models} and are left out: "
            f"{_listed(extra)}",
            "catalog",
        )
    manifest = catalog_manifest(
        args.name,
        models,
        prices,
        args.target,
        args.default_price,
        args.pattern,
        args.namespace,
    )
    text = (
        f"# Generated by tiergate catalog import from {args.models.name} and "
        f"{args.prices.name}: {len(models)} models.\n" + dump([manifest], "yaml")
    )
    if args.output is None:
        print(text, end="")
    else:
        args.output.write_text(text)
        note(f"wrote {args.output} ({len(models)} models)", "catalog")
    return 0
