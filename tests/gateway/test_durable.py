"""Durable floors from reports and ledgers (pure): others' spend and live reservations without
Redis, everyone's spend with it; a process's own earlier reports are not counted twice."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tiergate_gateway.durable import DurableSpend, Floors

NOW = 1_796_000_000.0
MONTH = "2026-12"


def report(
    name: str,
    tiers: dict[str, tuple[int, int, int]],
    *,
    reported: float = NOW,
    final: bool = False,
    terminating: bool = False,
) -> dict[str, Any]:
    """``tiers``: tier -> (this month's spend, last month's spend, reserved)."""
    metadata: dict[str, Any] = {"name": name, "resourceVersion": "1"}
    if terminating:
        metadata["deletionTimestamp"] = "2026-12-02T10:00:00Z"
    moment = datetime.fromtimestamp(reported, UTC).isoformat()
    return {
        "metadata": metadata,
        "spec": {
            "gateway": "g",
            "pod": "p",
            "startedAt": moment,
            "reportedAt": moment,
            "final": final,
            "tiers": [
                {
                    "tier": tier,
                    "reservedNano": held,
                    "months": [
                        {"month": MONTH, "spentNano": now, "calls": 1},
                        {"month": "2026-11", "spentNano": before, "calls": 1},
                    ],
                }
                for tier, (now, before, held) in tiers.items()
            ],
        },
    }


def ledger(name: str, lifetime: int, month: int, folded: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "ledger": {
                "lifetimeNano": lifetime,
                "lifetimeCalls": 3,
                "months": [{"month": MONTH, "spentNano": month, "calls": 2}],
                "folded": folded,
            }
        },
    }


def durable(
    exclude_own: bool, own: str | None = None, base: tuple[int, int] = (0, 0)
) -> DurableSpend:
    return DurableSpend(
        lambda: MONTH,
        exclude_own=exclude_own,
        own_report=lambda: own,
        own_base=lambda tier, month: base,
        clock=lambda: NOW,
    )


def test_without_redis_others_spend_and_live_reservations_count_not_our_own() -> None:
    spend = durable(exclude_own=True, own="mine")
    spend.reports_listed(
        [
            report("mine", {"t": (1000, 0, 50)}),
            report("other", {"t": (200, 30, 7)}),
            report("stale", {"t": (10, 0, 900)}, reported=NOW - 300),  # its holds have lapsed
            report("ending", {"t": (5, 0, 800)}, final=True),
        ]
    )
    spend.tiers_listed([ledger("t", 5000, 400, folded=["old"])])
    assert spend.floors("t", MONTH) == Floors(400 + 200 + 10 + 5 + 7, 5000 + 230 + 10 + 5 + 7)
    assert spend.floors("unknown", MONTH) == Floors()


def test_a_folded_report_counts_once_and_a_deleted_one_not_at_all() -> None:
    spend = durable(exclude_own=True)
    spend.reports_listed([report("r1", {"t": (100, 0, 0)})])
    spend.tiers_listed([ledger("t", 0, 0, folded=[])])
    assert spend.floors("t", MONTH).month == 100
    # The operator folds r1 into the ledger; the report object lingers (finalizer) a moment.
    spend.tier_changed("MODIFIED", ledger("t", 100, 100, folded=["r1"]))
    spend.report_changed("MODIFIED", report("r1", {"t": (100, 0, 0)}, terminating=True))
    assert spend.floors("t", MONTH).month == 100
    spend.report_changed("DELETED", report("r1", {"t": (100, 0, 0)}))
    assert spend.floors("t", MONTH) == Floors(100, 100)


def test_our_own_earlier_reports_are_taken_off_without_redis() -> None:
    # This process's first report froze at 300 (terminating); it reports in "new" now.
    spend = durable(exclude_own=True, own="new", base=(300, 300))
    spend.reports_listed(
        [report("first", {"t": (300, 0, 0)}, terminating=True), report("new", {"t": (20, 0, 0)})]
    )
    assert spend.floors("t", MONTH) == Floors(0, 0)


def test_with_redis_the_floor_is_everyone_s_durable_spend() -> None:
    spend = durable(exclude_own=False, own="mine")
    spend.reports_listed(
        [report("mine", {"t": (1000, 1, 50)}), report("other", {"t": (200, 30, 7)})]
    )
    assert spend.floors("t", MONTH) == Floors(1200, 1231)


def test_an_invalid_report_is_left_out() -> None:
    spend = durable(exclude_own=True)
    bad = report("bad", {"t": (100, 0, 0)})
    bad["spec"]["tiers"][0]["months"][0]["spentNano"] = -5
    spend.reports_listed([bad, report("good", {"t": (1, 0, 0)})])
    assert spend.floors("t", MONTH).month == 1
