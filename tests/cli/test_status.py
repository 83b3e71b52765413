"""``tiergate status``'s pure parts: a tier's money, read from its status.spend (the API)."""

from __future__ import annotations

from tiergate_cli.status import tier_money


def test_money_comes_from_the_tier_status() -> None:
    body = {
        "spec": {"budget": {"monthlyUSD": "100"}},
        "status": {
            "spend": {
                "month": "2026-12",
                "monthUSD": "12.346",
                "lifetimeUSD": "40",
                "creditsRemainingUSD": "60",
                "updatedAt": "2026-12-02T10:00:00Z",
            }
        },
    }
    assert tier_money(body) == ("$12.35 / $100.00", "$60.00", "2026-12-02T10:00:00Z")


def test_small_and_negative_amounts_stay_readable() -> None:
    spend = {"monthUSD": "0.000281", "creditsRemainingUSD": "-0.002", "updatedAt": "t"}
    assert tier_money({"spec": {}, "status": {"spend": spend}}) == ("$0.000281", "-$0.002000", "t")


def test_a_tier_the_operator_has_not_reported_on_shows_dashes() -> None:
    assert tier_money({"spec": {"budget": {"monthlyUSD": "5"}}}) == ("- / $5.00", "-", "-")
