"""The ledger's counting rule: every report's money counted exactly once, folded or live."""

from __future__ import annotations

from datetime import UTC, datetime

from tiergate_contract.ledger import (
    KEY_NAME_OTHER,
    MAX_KEYS_PER_MONTH,
    KeySpend,
    MonthSpend,
    SpendReportSpec,
    TierLedger,
    TierReport,
    fold,
    tier_totals,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def report(tier: str, *months: MonthSpend, reserved: int = 0) -> SpendReportSpec:
    return SpendReportSpec(
        gateway="g",
        pod="p",
        started_at=T0,
        reported_at=T0,
        tiers=(TierReport(tier=tier, months=months, reserved_nano=reserved),),
    )


def month(name: str, nano: int, calls: int, *keys: KeySpend) -> MonthSpend:
    return MonthSpend(month=name, spent_nano=nano, calls=calls, keys=keys)


def test_live_reports_and_folded_ledger_add_up_once() -> None:
    a = report("t", month("2026-11", 5, 1), month("2026-12", 7, 2), reserved=3)
    b = report("t", month("2026-12", 11, 1))
    live = tier_totals("t", "2026-12", TierLedger(), [("a", a), ("b", b)])
    assert (live.month_nano, live.month_calls, live.lifetime_nano, live.reserved_nano) == (
        18,
        3,
        23,
        3,
    )

    ledger = fold(TierLedger(), "t", "a", a)
    assert fold(ledger, "t", "a", a) == ledger  # idempotent
    # Folded but the object not yet gone: still counted once.
    after = tier_totals("t", "2026-12", ledger, [("a", a), ("b", b)])
    assert (after.month_nano, after.lifetime_nano) == (18, 23)
    assert after.reserved_nano == 0  # a folded process holds nothing
    gone = tier_totals("t", "2026-12", ledger, [("b", b)])
    assert (gone.month_nano, gone.lifetime_nano) == (18, 23)


def test_exclude_leaves_out_own_report_and_other_tiers_do_not_count() -> None:
    mine = report("t", month("2026-12", 7, 1))
    other_tier = report("u", month("2026-12", 100, 1))
    totals = tier_totals(
        "t", "2026-12", TierLedger(), [("me", mine), ("x", other_tier)], exclude="me"
    )
    assert totals.month_nano == 0


def test_keys_ranked_with_last_use_kept_after_the_month_is_gone() -> None:
    used = datetime(2026, 10, 3, tzinfo=UTC)
    old = report(
        "t", month("2026-10", 9, 1, KeySpend(key="s/a", spent_nano=9, calls=1, last_used_at=used))
    )
    ledger = fold(TierLedger(), "t", "old", old)
    for name in ("2026-11", "2026-12", "2027-01"):
        ledger = fold(ledger, "t", name, report("t", month(name, 1, 1)))
    assert [m.month for m in ledger.months] == ["2026-11", "2026-12", "2027-01"]
    assert ledger.lifetime_nano == 12
    totals = tier_totals(
        "t",
        "2027-01",
        ledger,
        [("live", report("t", month("2027-01", 4, 1, KeySpend(key="s/b", spent_nano=4, calls=1))))],
    )
    assert [(k.key, k.month_nano) for k in totals.keys] == [("s/b", 4)]
    assert {k.key: k.last_used_at for k in ledger.last_used} == {"s/a": used}


def test_keys_beyond_the_bound_are_summed_not_dropped() -> None:
    many = tuple(
        KeySpend(key=f"s/k{i:04d}", spent_nano=i + 1, calls=1) for i in range(MAX_KEYS_PER_MONTH)
    )
    ledger = fold(TierLedger(), "t", "r1", report("t", month("2026-12", 0, 0, *many)))
    ledger = fold(
        ledger,
        "t",
        "r2",
        report("t", month("2026-12", 0, 0, KeySpend(key="s/new", spent_nano=1, calls=1))),
    )
    keys = {k.key: k.spent_nano for k in ledger.months[0].keys}
    assert len(keys) == MAX_KEYS_PER_MONTH + 1
    assert KEY_NAME_OTHER in keys
    assert sum(keys.values()) == sum(k.spent_nano for k in many) + 1


def test_camel_case_round_trip() -> None:
    spec = report("t", month("2026-12", 1, 1))
    wire = spec.model_dump(mode="json", by_alias=True)
    assert wire["startedAt"] and wire["tiers"][0]["months"][0]["spentNano"] == 1
    assert SpendReportSpec.model_validate(wire) == spec
