"""Pure cost arithmetic for ``tiergate cost``: prices per million tokens -> monthly USD.

Assumptions (printed with every table):
- A token costs ``input * (1 - s) + output * s`` per million, ``s`` being the output share.
- Standard traffic is split among the Standard targets of the lowest priority by weight
  (the gateway's own rule); fallback and Premium targets are priced as if they served it all.
- A tier's traffic is spread evenly over the routes it may use.
- A catalog's traffic follows ``--mix`` (model=percent), else is spread evenly over its listed
  models; a model a pattern passes is priced as the pattern.
Money is ``Decimal`` throughout and rounded half-up to cents only when printed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from tiergate_operator.models import ApiKeyTierSpec, Catalog, ModelRouteSpec, Pricing

__all__ = [
    "MILLION",
    "Comparison",
    "TargetRow",
    "blend",
    "catalog_rows",
    "compact_tokens",
    "money",
    "monthly_cost",
    "parse_comparison",
    "parse_mix",
    "parse_tokens",
    "per_million",
    "price_text",
    "route_rows",
    "saving",
    "tier_price",
]

MILLION = Decimal(1_000_000)
_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_TOKENS = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


def parse_tokens(text: str) -> Decimal:
    """``5M`` -> 5,000,000; suffixes K, M, B (or G), T; plain numbers are tokens."""
    match = _TOKENS.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a token count like 5M, 50M, 500M or 5B")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2).upper()]


def compact_tokens(tokens: Decimal) -> str:
    for suffix in ("T", "B", "M", "K"):
        scale = Decimal(_SUFFIXES[suffix])
        if tokens >= scale:
            return (
                f"{(tokens / scale).quantize(Decimal('0.1'), ROUND_HALF_UP).normalize():f}{suffix}"
            )
    return f"{tokens.quantize(Decimal(1), ROUND_HALF_UP):f}"


def money(amount: Decimal) -> str:
    """``$1,250.00``."""
    return f"${amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"


def lasts(balance: Decimal, monthly: Decimal) -> str:
    """How long ``balance`` USD lasts at ``monthly`` USD a month (30-day months):
    ``"7.5 months"``, ``"12 days"``, ``"5 hours"``; ``"forever"`` at no cost."""
    if balance <= 0:
        return "used up"
    if monthly <= 0:
        return "forever"
    months = balance / monthly
    for unit, size in (("years", Decimal(12)), ("months", Decimal(1)), ("days", Decimal(1) / 30)):
        if months >= size * (2 if unit != "days" else 1):
            return f"{_one_decimal(months / size)} {unit}"
    hours = months * 30 * 24
    return f"{_one_decimal(hours)} hours" if hours >= 1 else "under an hour"


def _one_decimal(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.1'), ROUND_HALF_UP).normalize():f}"


def price_text(price: Decimal) -> str:
    """A price per million: at least two decimals, more only when they matter (0.254)."""
    exact = price.normalize()
    return f"{price:.2f}" if exact == price.quantize(Decimal("0.01")) else f"{exact:f}"


@dataclass(frozen=True)
class Comparison:
    model: str
    per_million: Decimal


def parse_comparison(text: str, output_share: Decimal) -> Comparison:
    """``gpt-4o=10`` (one price) or ``gpt-4o=2.5/10`` (input/output, blended with the share)."""
    model, sep, price = text.partition("=")
    if not sep or not model.strip():
        raise ValueError(f"--compare {text!r}: expected MODEL=PRICE, e.g. gpt-4o=10")
    try:
        parts = [Decimal(part) for part in price.split("/")]
    except InvalidOperation:
        raise ValueError(
            f"--compare {text!r}: {price!r} is not a price in USD per million tokens"
        ) from None
    if len(parts) not in (1, 2) or any(part < 0 for part in parts):
        raise ValueError(
            f"--compare {text!r}: expected PRICE or INPUT/OUTPUT, in USD per million tokens"
        )
    input_price, output_price = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return Comparison(model.strip(), input_price * (1 - output_share) + output_price * output_share)


def per_million(pricing: Pricing | None, output_share: Decimal) -> Decimal:
    if pricing is None:
        return Decimal(0)
    return (
        Decimal(pricing.input_per_million) * (1 - output_share)
        + Decimal(pricing.output_per_million) * output_share
    )


def monthly_cost(price_per_million: Decimal, tokens: Decimal) -> Decimal:
    return price_per_million * tokens / MILLION


def saving(cost: Decimal, against: Decimal) -> str:
    """``97.5%`` saved against a comparison (negative when it costs more)."""
    if against == 0:
        return "-"
    percent = ((1 - cost / against) * 100).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return f"{percent}%"


@dataclass(frozen=True)
class TargetRow:
    label: str
    role: str
    share: Decimal | None  # of Standard traffic; None for targets that serve none normally
    per_million: Decimal


def route_rows(spec: ModelRouteSpec, output_share: Decimal) -> list[TargetRow]:
    """Each target at its own price, then the weighted blend that Standard traffic pays."""
    standard = [t for t in spec.targets if t.request_class == "Standard"]
    lowest = min(t.priority for t in standard)
    serving = [t for t in standard if t.priority == lowest and t.weight > 0]
    total_weight = Decimal(sum(t.weight for t in serving))
    rows = []
    for target in spec.targets:
        if target in serving:
            share: Decimal | None = Decimal(target.weight) / total_weight
            role = f"priority {target.priority}, weight {target.weight}"
        elif target.request_class == "Premium":
            share, role = None, "Premium requests only"
        else:
            share, role = None, f"failover (priority {target.priority})"
        rows.append(TargetRow(target.name, role, share, per_million(target.pricing, output_share)))
    rows.append(TargetRow("= blend", "what Standard traffic pays", Decimal(1), blend(rows)))
    return rows


def blend(rows: Sequence[TargetRow]) -> Decimal:
    return sum((row.per_million * row.share for row in rows if row.share is not None), Decimal(0))


def tier_price(spec: ApiKeyTierSpec, route_prices: dict[str, Decimal]) -> tuple[list[str], Decimal]:
    """The routes a tier may use and the mean of their blended prices (even traffic split)."""
    allowed = (
        sorted(route_prices)
        if spec.models is None
        else sorted(m for m in spec.models if m in route_prices)
    )
    if not allowed:
        return [], Decimal(0)
    return allowed, sum((route_prices[name] for name in allowed), Decimal(0)) / len(allowed)


def parse_mix(texts: Sequence[str]) -> dict[str, Decimal]:
    """``--mix a=60,b=40`` (repeatable) -> model -> share of traffic (the shares sum to 1)."""
    weights: dict[str, Decimal] = {}
    for text in (part for option in texts for part in option.split(",") if part.strip()):
        model, sep, percent = text.partition("=")
        try:
            weight = Decimal(percent)
        except InvalidOperation:
            weight = Decimal(-1)
        if not sep or not model.strip() or weight <= 0:
            raise ValueError(
                f"--mix {text!r}: expected MODEL=PERCENT, e.g. deepseek-ai/DeepSeek-V3=60"
            )
        weights[model.strip()] = weights.get(model.strip(), Decimal(0)) + weight
    total = sum(weights.values(), Decimal(0))
    return {model: weight / total for model, weight in weights.items()}


def catalog_price(catalog: Catalog, model: str) -> tuple[Pricing | None, str] | None:
    """A model's price and what sets it (the catalog lists it, or a pattern passes it)."""
    for entry in catalog.models or ():
        if entry.model == model:
            return entry.pricing or catalog.default_pricing, "listed"
    patterns = sorted(catalog.patterns or (), key=lambda p: len(p.pattern), reverse=True)
    for pattern in patterns:
        if model.startswith(pattern.pattern[:-1]):
            return pattern.pricing or catalog.default_pricing, f"pattern {pattern.pattern}"
    return None


def catalog_rows(
    catalog: Catalog, output_share: Decimal, mix: dict[str, Decimal]
) -> list[TargetRow]:
    """Each listed model and pattern at its price, the mixed models a pattern passes, then the
    blend for the mix (or an even spread over the listed models)."""
    mine = {model: share for model, share in mix.items() if catalog_price(catalog, model)}
    total = sum(mine.values(), Decimal(0))
    listed = [m.model for m in catalog.models or ()]
    even = Decimal(1) / len(listed) if listed and not mine else None
    rows = []
    for entry in catalog.models or ():
        share = mine[entry.model] / total if entry.model in mine else even
        role = f"as {entry.upstream_model}" if entry.upstream_model else "listed"
        price = entry.pricing or catalog.default_pricing
        rows.append(TargetRow(entry.model, role, share, per_million(price, output_share)))
    for model in sorted(set(mine) - set(listed)):
        found = catalog_price(catalog, model)
        assert found is not None
        price, role = found
        rows.append(TargetRow(model, role, mine[model] / total, per_million(price, output_share)))
    for pattern in catalog.patterns or ():
        price = pattern.pricing or catalog.default_pricing
        rows.append(TargetRow(pattern.pattern, "pattern", None, per_million(price, output_share)))
    if mine:
        role = "the --mix"
    elif listed:
        role = f"even over the {len(listed)} listed models"
    else:
        role = "no listed model: give --mix"
    rows.append(TargetRow("= blend", role, Decimal(1), blend(rows)))
    return rows
