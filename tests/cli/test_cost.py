"""``tiergate cost``: the seed's table from the example manifests, and the arithmetic behind it."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.support.kube import EXAMPLES
from tiergate_cli.costing import compact_tokens, lasts, money, parse_comparison, parse_tokens

from .conftest import Result

SEED = ("cost", "-f", str(EXAMPLES), "--tokens", "5M,50M,500M,5B", "--compare", "gpt-4o=10")


def test_the_seeds_table_holds_for_the_primary_target(tiergate: Callable[..., Result]) -> None:
    result = tiergate(*SEED, "-o", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    (route,) = report["routes"]
    primary = next(t for t in route["targets"] if t["name"] == "primary")
    assert primary["perMillion"] == "0.25"
    assert {k: Decimal(v) for k, v in primary["monthly"].items()} == {
        "5M": Decimal("1.25"),
        "50M": Decimal("12.5"),
        "500M": Decimal("125"),
        "5B": Decimal("1250"),
    }
    (gpt4o,) = report["compare"]
    assert Decimal(gpt4o["monthly"]["5M"]) == 50 and Decimal(gpt4o["monthly"]["5B"]) == 50_000


def test_the_table_prints_money_and_the_saving(tiergate: Callable[..., Result]) -> None:
    result = tiergate(*SEED)
    assert result.code == 0, result.err
    primary = next(line for line in result.out.splitlines() if line.startswith("primary"))
    assert primary.split() == [
        "primary",
        "priority",
        "0,",
        "weight",
        "80",
        "80%",
        "0.25",
        "$1.25",
        "$12.50",
        "$125.00",
        "$1,250.00",
        "97.5%",
    ]
    gpt4o = next(line for line in result.out.splitlines() if line.startswith("gpt-4o"))
    assert gpt4o.split()[-5:] == ["$50.00", "$500.00", "$5,000.00", "$50,000.00", "-"]


def test_the_blend_weights_the_lowest_priority_standard_targets(
    tiergate: Callable[..., Result],
) -> None:
    report = json.loads(tiergate(*SEED, "-o", "json").out)
    targets = {t["name"]: t for t in report["routes"][0]["targets"]}
    # 80% at 0.25 + 20% at 0.27; the fallback and the premium target serve no Standard traffic.
    assert Decimal(targets["= blend"]["perMillion"]) == Decimal("0.254")
    assert targets["fallback"]["share"] is None and targets["premium"]["share"] is None
    tiers = {t["name"]: t for t in report["tiers"]}
    assert Decimal(tiers["startup"]["monthly"]["5B"]) == Decimal("1270")
    assert tiers["startup"]["hardBudget"] == "100"


def test_output_share_prices_output_tokens_at_the_output_price(
    tiergate: Callable[..., Result],
) -> None:
    report = json.loads(tiergate(*SEED, "--output-share", "25", "-o", "json").out)
    targets = {t["name"]: t for t in report["routes"][0]["targets"]}
    assert (
        Decimal(targets["secondary"]["perMillion"])
        == Decimal("0.27") * Decimal("0.75") + Decimal("1.10") / 4
    )
    assert Decimal(targets["primary"]["perMillion"]) == Decimal("0.25")


def test_tiers_over_their_budget_are_marked(tiergate: Callable[..., Result]) -> None:
    startup = next(line for line in tiergate(*SEED).out.splitlines() if line.startswith("startup"))
    assert "$127.00 !" in startup and "$1.27 !" not in startup
    assert "393.7M tokens" in startup


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--tokens", "5X"), "'5X' is not a token count"),
        (("--compare", "gpt-4o"), "expected MODEL=PRICE"),
        (("--compare", "gpt-4o=ten"), "is not a price"),
        (("--output-share", "150"), "between 0 and 100"),
    ],
)
def test_bad_options_say_what_is_wrong(
    tiergate: Callable[..., Result], argv: tuple[str, ...], message: str
) -> None:
    result = tiergate("cost", "-f", str(EXAMPLES), *argv)
    assert result.code == 2
    assert message in result.err


def test_the_arithmetic_helpers() -> None:
    assert parse_tokens("5B") == 5_000_000_000 and parse_tokens("1.5k") == 1500
    assert money(Decimal("1250")) == "$1,250.00" and money(Decimal("0.005")) == "$0.01"
    assert compact_tokens(Decimal("393700787.4")) == "393.7M"
    assert parse_comparison("gpt-4o=2.5/10", Decimal("0.5")).per_million == Decimal("6.25")


def test_credits_show_how_long_they_last(tiergate: Callable[..., Result]) -> None:
    result = tiergate(*SEED)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("Prepaid credits")))
    header = lines[at + 1].split()
    assert header[:2] == ["tier", "credits"]
    assert " ".join(header[2:]) == "last at 5M last at 50M last at 500M last at 5B"
    # startup: the seed's 100 free credits at 0.254 $/1M tokens ($1.27 .. $1,270 a month).
    assert lines[at + 2].split() == [
        "startup",
        "$100.00",
        "6.6",
        "years",
        "7.9",
        "months",
        "23.6",
        "days",
        "2.4",
        "days",
    ]


def test_credits_option_sets_the_balance_for_every_tier(tiergate: Callable[..., Result]) -> None:
    result = tiergate(*SEED, "--credits", "5", "-o", "json")
    assert result.code == 0, result.err
    tiers = {t["name"]: t for t in json.loads(result.out)["tiers"]}
    assert tiers["enterprise-acme"]["credits"] == "5"
    assert tiers["enterprise-acme"]["creditsLast"] == {
        "5M": "3.9 months",
        "50M": "11.8 days",
        "500M": "1.2 days",
        "5B": "2.8 hours",
    }
    bad = tiergate(*SEED, "--credits", "lots")
    assert bad.code == 2 and "--credits 'lots' is not an amount of USD" in bad.err


def test_how_long_a_balance_lasts() -> None:
    assert lasts(Decimal(100), Decimal(0)) == "forever"
    assert lasts(Decimal(0), Decimal(10)) == "used up"
    assert lasts(Decimal(100), Decimal(50)) == "2 months"
    assert lasts(Decimal(100), Decimal(100)) == "30 days"
    assert lasts(Decimal(1), Decimal(100_000)) == "under an hour"
