"""The ledger across the turn of months (pure): a tier's month spend starts again from 0 while
its lifetime spend keeps counting, and the folded ledger keeps the last three months one by
one however late a report of an older month is folded (docs/ledger.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from tiergate_contract.ledger import (
    MAX_LEDGER_MONTHS,
    KeySpend,
    MonthSpend,
    SpendReportSpec,
    TierLedger,
    TierReport,
    fold,
    tier_totals,
)

MOMENT = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)


def report(*months: tuple[str, int], tier: str = "t") -> SpendReportSpec:
    return SpendReportSpec(
        gateway="g",
        pod="p",
        started_at=MOMENT,
        reported_at=MOMENT,
        tiers=(
            TierReport(
                tier=tier,
                months=tuple(
                    MonthSpend(
                        month=month,
                        spent_nano=nano,
                        calls=1,
                        keys=(KeySpend(key=f"s/{month}", spent_nano=nano, calls=1),),
                    )
                    for month, nano in months
                ),
            ),
        ),
    )


def test_a_new_month_starts_from_zero_and_the_lifetime_keeps_counting() -> None:
    # One live report spanning the turn, and a folded ledger holding December.
    ledger = fold(TierLedger(), "t", "old", report(("2026-12", 700)))
    live = [("live", report(("2026-12", 300), ("2027-01", 40)))]
    december = tier_totals("t", "2026-12", ledger, live)
    january = tier_totals("t", "2027-01", ledger, live)
    assert (december.month_nano, december.month_calls) == (1000, 2)
    assert (january.month_nano, january.month_calls) == (40, 1)
    assert december.lifetime_nano == january.lifetime_nano == 1040
    assert december.lifetime_calls == january.lifetime_calls == 3
    # The month's keys are the month's only.
    assert [k.key for k in january.keys] == ["s/2027-01"]
    # A month nobody spent in yet is 0, the lifetime unchanged.
    february = tier_totals("t", "2027-02", ledger, live)
    assert (february.month_nano, february.keys, february.lifetime_nano) == (0, (), 1040)


def test_the_ledger_keeps_the_last_three_months_and_every_nano_in_the_lifetime() -> None:
    ledger = TierLedger()
    months = ["2026-10", "2026-11", "2026-12", "2027-01", "2027-02"]
    for number, month in enumerate(months):
        ledger = fold(ledger, "t", f"r{number}", report((month, 10 ** (number + 1))))
    assert MAX_LEDGER_MONTHS == 3
    assert [m.month for m in ledger.months] == ["2026-12", "2027-01", "2027-02"]
    assert ledger.lifetime_nano == 111_110 and ledger.lifetime_calls == 5
    # A stale report of an old month folded late: counted in the lifetime, and the three
    # newest months stay (it does not push out January or February).
    late = fold(ledger, "t", "late", report(("2026-11", 5), ("2027-02", 7)))
    assert [m.month for m in late.months] == ["2026-12", "2027-01", "2027-02"]
    assert [m.spent_nano for m in late.months] == [1_000, 10_000, 100_007]
    assert late.lifetime_nano == 111_122 and late.lifetime_calls == 7
    assert tier_totals("t", "2026-11", late, []).month_nano == 0  # pruned: not shown any more
    assert tier_totals("t", "2027-02", late, []).month_nano == 100_007
    # Folding the same report again changes nothing.
    assert fold(late, "t", "late", report(("2026-11", 5))) is late


def test_a_year_turns_in_order() -> None:
    ledger = TierLedger()
    for number, month in enumerate(["2026-11", "2027-01", "2026-12"]):
        ledger = fold(ledger, "t", f"r{number}", report((month, 1)))
    ledger = fold(ledger, "t", "r3", report(("2027-02", 1)))
    assert [m.month for m in ledger.months] == ["2026-12", "2027-01", "2027-02"]
