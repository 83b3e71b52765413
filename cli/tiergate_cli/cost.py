"""``tiergate cost -f DIR --tokens 5M,50M,500M,5B``: monthly cost per route and tier.

Prices come from each target's ``pricing`` (USD per million tokens). Every target is
shown at its own price, then the weighted blend Standard traffic pays; ``--compare``
adds a model to save against. Tiers with prepaid credits (or every tier, with
``--credits USD``) get how long the balance lasts at each volume. A catalog shows each model at its price, then the blend for
a mix of models (``--mix MODEL=PERCENT,...``; default: an even spread over its listed
models). See ``costing`` for the assumptions, printed with the tables.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiergate_cli import costing
from tiergate_cli.commands import Commands
from tiergate_cli.costing import Comparison, TargetRow, compact_tokens, money, monthly_cost
from tiergate_cli.manifests import Document, ManifestSet, load_manifests
from tiergate_cli.output import CommandError, table
from tiergate_operator.models import ApiKeyTier, ModelRoute
from tiergate_operator.registry import API_KEY_TIER, MODEL_ROUTE

__all__ = ["CostReport", "add_parser", "cost_report", "run"]

DEFAULT_TOKENS = "5M,50M,500M,5B"


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "cost",
        help="monthly cost per route and tier from the manifests' prices and weights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", "--filename", type=Path, required=True, metavar="DIR")
    parser.add_argument("-n", "--namespace", help="namespace for objects that set none")
    parser.add_argument(
        "--tokens",
        default=DEFAULT_TOKENS,
        help=f"monthly token volumes, comma-separated (default {DEFAULT_TOKENS})",
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="MODEL=PRICE",
        help="a model to compare with, USD per million tokens (PRICE or INPUT/OUTPUT); repeatable",
    )
    parser.add_argument(
        "--output-share",
        default="0",
        metavar="PERCENT",
        help="share of tokens that are output tokens, priced at outputPerMillion "
        "(default 0: every token at the input price)",
    )
    parser.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="MODEL=PERCENT",
        help="a catalog's traffic by model, comma-separated or repeated "
        "(default: even over its listed models)",
    )
    parser.add_argument(
        "--credits",
        metavar="USD",
        help="a credit balance to show how long it lasts, for every tier "
        "(default: each tier's granted credits, spec.credits.grants)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class RouteCost:
    namespace: str
    name: str
    model: str
    rows: list[TargetRow]

    @property
    def blend(self) -> Decimal:
        return self.rows[-1].per_million


@dataclass(frozen=True)
class TierCost:
    namespace: str
    name: str
    isolation: str
    routes: list[str]
    per_million: Decimal
    hard_budget: Decimal | None
    credits: Decimal | None = None  # the balance whose duration is shown


@dataclass(frozen=True)
class CostReport:
    volumes: list[tuple[str, Decimal]]
    output_share: Decimal
    comparisons: list[Comparison]
    routes: list[RouteCost]
    tiers: list[TierCost]


def _validated(doc: Document, model: type[ModelRoute] | type[ApiKeyTier]) -> Any:
    try:
        return model.model_validate(doc.body)
    except ValidationError as error:
        first = error.errors()[0]
        path = ".".join(str(part) for part in first["loc"])
        raise CommandError(f"{doc.where}: {doc.kind} {doc.name}: {path}: {first['msg']}") from None


def _tier_cost(
    namespace: str, tier: ApiKeyTier, prices: dict[str, Decimal], credits: Decimal | None
) -> TierCost:
    allowed, price = costing.tier_price(tier.spec, prices)
    budget = tier.spec.budget
    hard = (Decimal(budget.monthly_usd) * budget.hard_threshold_percent / 100) if budget else None
    granted = tier.spec.credits
    if credits is None and granted is not None:
        credits = sum((Decimal(g.amount_usd) for g in granted.grants or ()), Decimal(0))
    return TierCost(
        namespace, tier.metadata.name, tier.spec.isolation, allowed, price, hard, credits
    )


def _route_cost(
    namespace: str, name: str, route: ModelRoute, output_share: Decimal, mix: dict[str, Decimal]
) -> RouteCost:
    catalog = route.spec.catalog
    if catalog is None:
        model = str(route.spec.model)
        return RouteCost(namespace, name, model, costing.route_rows(route.spec, output_share))
    rows = costing.catalog_rows(catalog, output_share, mix)
    models, patterns = len(catalog.models or ()), len(catalog.patterns or ())
    counted = f"{models} model{'s' * (models != 1)}, {patterns} pattern{'s' * (patterns != 1)}"
    return RouteCost(namespace, name, f"catalog: {counted}", rows)


def cost_report(
    manifests: ManifestSet,
    volumes: list[tuple[str, Decimal]],
    output_share: Decimal,
    comparisons: list[Comparison],
    mix: dict[str, Decimal] | None = None,
    credits: Decimal | None = None,
) -> CostReport:
    routes: list[RouteCost] = []
    tiers: list[TierCost] = []
    for namespace in manifests.namespaces:
        prices: dict[str, Decimal] = {}
        for doc in manifests.of_kind(MODEL_ROUTE.kind, namespace):
            route: ModelRoute = _validated(doc, ModelRoute)
            routes.append(_route_cost(namespace, doc.name, route, output_share, mix or {}))
            prices[doc.name] = routes[-1].blend
        for doc in manifests.of_kind(API_KEY_TIER.kind, namespace):
            tiers.append(_tier_cost(namespace, _validated(doc, ApiKeyTier), prices, credits))
    return CostReport(volumes, output_share, comparisons, routes, tiers)


def _parse(
    args: argparse.Namespace,
) -> tuple[list[tuple[str, Decimal]], Decimal, list[Comparison], dict[str, Decimal]]:
    try:
        share = Decimal(args.output_share) / 100
    except InvalidOperation:
        raise CommandError(f"--output-share {args.output_share!r} is not a percentage") from None
    if not 0 <= share <= 1:
        raise CommandError("--output-share must be between 0 and 100")
    try:
        volumes = [
            (text.strip(), costing.parse_tokens(text))
            for text in args.tokens.split(",")
            if text.strip()
        ]
        comparisons = [
            costing.parse_comparison(text, share)
            for option in args.compare
            for text in option.split(",")
        ]
        mix = costing.parse_mix(args.mix)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if not volumes:
        raise CommandError("--tokens needs at least one volume, e.g. 5M,50M,500M,5B")
    return volumes, share, comparisons, mix


def _credits(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise CommandError(f"--credits {text!r} is not an amount of USD such as 100 or 12.50")
    return amount


def run(args: argparse.Namespace) -> int:
    volumes, share, comparisons, mix = _parse(args)
    credits = _credits(args.credits)
    manifests = load_manifests(args.filename, args.namespace)
    report = cost_report(manifests, volumes, share, comparisons, mix, credits)
    priced = {row.label for route in report.routes for row in route.rows if row.share}
    unknown = sorted(set(mix) - priced)
    if unknown:
        raise CommandError(f"--mix names models no catalog serves: {', '.join(unknown)}")
    print(json.dumps(as_json(report), indent=2) if args.output == "json" else as_text(report))
    return 0


def _costs(price: Decimal, report: CostReport) -> list[str]:
    return [money(monthly_cost(price, tokens)) for _, tokens in report.volumes]


def _savings(price: Decimal, report: CostReport) -> list[str]:
    return [costing.saving(price, c.per_million) for c in report.comparisons]


def _route_table(route: RouteCost, report: CostReport) -> str:
    header = [
        "model" if route.model.startswith("catalog:") else "target",
        "serves",
        "share",
        "$/1M tokens",
        *(label for label, _ in report.volumes),
        *(f"saves vs {c.model}" for c in report.comparisons),
    ]
    rows = [
        [
            row.label,
            row.role,
            f"{row.share * 100:.0f}%" if row.share is not None else "-",
            costing.price_text(row.per_million),
            *_costs(row.per_million, report),
            *_savings(row.per_million, report),
        ]
        for row in route.rows
    ]
    rows += [
        [
            c.model,
            "--compare",
            "-",
            costing.price_text(c.per_million),
            *_costs(c.per_million, report),
            *("-" for _ in report.comparisons),
        ]
        for c in report.comparisons
    ]
    numbers = range(2, len(header))
    return table(header, rows, right=numbers)


def _tier_table(report: CostReport) -> str:
    header = [
        "tier",
        "isolation",
        "routes",
        "$/1M tokens",
        *(label for label, _ in report.volumes),
        "hard budget",
        "budget buys",
    ]
    rows = []
    for tier in report.tiers:
        cells = []
        for _, tokens in report.volumes:
            amount = monthly_cost(tier.per_million, tokens)
            over = tier.hard_budget is not None and amount > tier.hard_budget
            cells.append(money(amount) + (" !" if over else ""))
        buys = "-"
        if tier.hard_budget is not None and tier.per_million > 0:
            buys = compact_tokens(tier.hard_budget / tier.per_million * costing.MILLION) + " tokens"
        rows.append(
            [
                tier.name,
                tier.isolation,
                ",".join(tier.routes) or "-",
                costing.price_text(tier.per_million),
                *cells,
                money(tier.hard_budget) if tier.hard_budget is not None else "-",
                buys,
            ]
        )
    return table(header, rows, right=range(3, len(header)))


def _credits_table(report: CostReport) -> str:
    header = ["tier", "credits", *(f"last at {label}" for label, _ in report.volumes)]
    rows = [
        [
            tier.name,
            money(tier.credits),
            *(
                costing.lasts(tier.credits, monthly_cost(tier.per_million, tokens))
                for _, tokens in report.volumes
            ),
        ]
        for tier in report.tiers
        if tier.credits is not None
    ]
    return table(header, rows, right=range(1, len(header)))


def as_text(report: CostReport) -> str:
    share = report.output_share * 100
    parts = [
        f"Monthly cost at {', '.join(label for label, _ in report.volumes)} tokens; "
        f"tokens priced {100 - share:.0f}% at the input and {share:.0f}% at the output price "
        "(--output-share)."
    ]
    for route in report.routes:
        parts.append(
            f"\nModelRoute {route.namespace}/{route.name} "
            f"({route.model if route.model.startswith('catalog:') else 'model ' + route.model}):\n"
            + _route_table(route, report).rstrip("\n")
        )
    if report.tiers:
        parts.append(
            "\nApiKeyTiers (each tier's traffic spread evenly over the routes it may use, "
            "at their blended price):\n" + _tier_table(report).rstrip("\n")
        )
        parts.append(
            "! over the tier's hard budget: the gateway refuses requests once it is spent."
        )
    if any(tier.credits is not None for tier in report.tiers):
        parts.append(
            "\nPrepaid credits (they never expire; once used up, calls are refused until a "
            "new grant):\n" + _credits_table(report).rstrip("\n")
        )
    return "\n".join(parts)


def as_json(report: CostReport) -> dict[str, Any]:
    def costs(price: Decimal) -> dict[str, str]:
        return {label: f"{monthly_cost(price, tokens):f}" for label, tokens in report.volumes}

    return {
        "tokens": {label: int(tokens) for label, tokens in report.volumes},
        "outputShare": f"{report.output_share:f}",
        "compare": [
            {"model": c.model, "perMillion": f"{c.per_million:f}", "monthly": costs(c.per_million)}
            for c in report.comparisons
        ],
        "routes": [
            {
                "namespace": r.namespace,
                "name": r.name,
                "model": r.model,
                "targets": [
                    {
                        "name": row.label,
                        "serves": row.role,
                        "share": None if row.share is None else f"{row.share:f}",
                        "perMillion": f"{row.per_million:f}",
                        "monthly": costs(row.per_million),
                    }
                    for row in r.rows
                ],
            }
            for r in report.routes
        ],
        "tiers": [
            {
                "namespace": t.namespace,
                "name": t.name,
                "isolation": t.isolation,
                "routes": t.routes,
                "perMillion": f"{t.per_million:f}",
                "monthly": costs(t.per_million),
                "hardBudget": None if t.hard_budget is None else f"{t.hard_budget:f}",
                "credits": None if t.credits is None else f"{t.credits:f}",
                "creditsLast": None
                if t.credits is None
                else {
                    label: costing.lasts(t.credits, monthly_cost(t.per_million, tokens))
                    for label, tokens in report.volumes
                },
            }
            for t in report.tiers
        ],
    }
