"""status.spend from the ledger and the reports, and the Warning events its changes call for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tiergate_contract.ledger import (
    LEDGER_FINALIZER,
    KeySpend,
    MonthSpend,
    SpendReportSpec,
    TierLedger,
    TierReport,
)
from tiergate_operator.models import ApiKeyTierSpec
from tiergate_operator.spend_reports import (
    ReportProblem,
    StoredReport,
    fold_due,
    next_fold_due,
    parse_report,
)
from tiergate_operator.spend_status import (
    MAX_STATUS_KEYS,
    LedgerUnreadable,
    spend_changed,
    spend_status,
    spend_warnings,
    tier_ledger,
    usd,
)

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
MONTH = "2026-12"
USD = 1_000_000_000


def spec(**extra: Any) -> ApiKeyTierSpec:
    return ApiKeyTierSpec.model_validate(
        {"isolation": "Shared", "keys": [{"secretRef": {"name": "k"}}], **extra}
    )


def report(
    tier: str, nano: int, calls: int = 1, keys: tuple[KeySpend, ...] = (), **extra: Any
) -> SpendReportSpec:
    return SpendReportSpec(
        gateway="tiergate-shared",
        pod="tiergate-shared-abc",
        started_at=NOW - timedelta(hours=1),
        reported_at=extra.pop("reported_at", NOW),
        tiers=(
            TierReport(
                tier=tier,
                months=(MonthSpend(month=MONTH, spent_nano=nano, calls=calls, keys=keys),),
            ),
        ),
        **extra,
    )


@pytest.mark.parametrize(
    ("nano", "text"),
    [(0, "0"), (13_200_000, "0.0132"), (100 * USD, "100"), (1, "0.000000001"), (-USD // 2, "-0.5")],
)
def test_usd_is_a_plain_decimal_string(nano: int, text: str) -> None:
    assert usd(nano) == text


def test_spend_adds_the_ledger_and_the_unfolded_reports() -> None:
    ledger = TierLedger(
        lifetime_nano=30 * USD,
        lifetime_calls=3,
        months=(MonthSpend(month=MONTH, spent_nano=10 * USD, calls=1),),
        folded=("gone",),
    )
    reports = [
        ("live", report("a", 5 * USD)),
        ("gone", report("a", 999 * USD)),  # folded already: counted once, in the ledger
        ("other-tier", report("b", 7 * USD)),
    ]
    credits = {"grants": [{"id": "welcome", "amountUSD": "100", "reason": "free"}]}
    status = spend_status(
        "a", spec(budget={"monthlyUSD": "50"}, credits=credits), ledger, reports, NOW
    )
    assert status == {
        "month": MONTH,
        "monthUSD": "15",
        "monthCalls": 2,
        "lifetimeUSD": "35",
        "budgetUSD": "50",
        "creditsGrantedUSD": "100",
        "creditsUsedUSD": "35",
        "creditsRemainingUSD": "65",
        "keys": [],
        "otherKeys": None,
    }


def test_without_budget_or_credits_those_fields_are_removed() -> None:
    status = spend_status("a", spec(), TierLedger(), [], NOW)
    assert status["budgetUSD"] is None and status["creditsRemainingUSD"] is None
    assert not spend_changed(
        {**{k: v for k, v in status.items() if v is not None}, "updatedAt": "x"}, status
    )
    assert spend_changed({"month": MONTH, "monthUSD": "0", "budgetUSD": "5"}, status)


def test_keys_are_the_top_twenty_by_month_spend_and_the_rest_summed() -> None:
    keys = tuple(
        KeySpend(key=f"team/k{i:02d}", spent_nano=(i + 1) * USD, calls=i + 1, last_used_at=NOW)
        for i in range(25)
    )
    status = spend_status(
        "a", spec(), TierLedger(), [("r", report("a", 325 * USD, 325, keys))], NOW
    )
    listed = status["keys"]
    assert len(listed) == MAX_STATUS_KEYS
    assert [k["key"] for k in listed[:2]] == ["team/k24", "team/k23"]
    assert listed[0] == {
        "key": "team/k24",
        "monthUSD": "25",
        "calls": 25,
        "lastUsedAt": "2026-12-02T10:00:00Z",
    }
    # k00..k04 spent 1+2+3+4+5 = 15 USD in 15 calls.
    assert status["otherKeys"] == {"count": 5, "monthUSD": "15", "calls": 15}


def _spend(month_usd: str, remaining: str | None = None, month: str = MONTH) -> dict[str, Any]:
    return {
        "month": month,
        "monthUSD": month_usd,
        "creditsGrantedUSD": "100" if remaining is not None else None,
        "creditsUsedUSD": "0" if remaining is not None else None,
        "creditsRemainingUSD": remaining,
    }


BUDGET = spec(budget={"monthlyUSD": "100", "softThresholdPercent": 80})
CREDITS = spec(
    credits={"grants": [{"id": "w", "amountUSD": "100", "reason": "r"}], "warnBelowUSD": "10"}
)


def reasons(
    tier: ApiKeyTierSpec, before: dict[str, Any] | None, after: dict[str, Any]
) -> list[str]:
    return [w.reason for w in spend_warnings("a", tier, before, after)]


def test_budget_events_fire_once_per_crossing() -> None:
    assert reasons(BUDGET, _spend("10"), _spend("79.99")) == []
    assert reasons(BUDGET, _spend("79.99"), _spend("80")) == ["BudgetSoftThreshold"]
    assert reasons(BUDGET, _spend("80"), _spend("90")) == []  # still above: no second event
    assert reasons(BUDGET, _spend("90"), _spend("100")) == ["BudgetExhausted"]
    assert reasons(BUDGET, _spend("100"), _spend("101")) == []
    # A new month starts below the thresholds again.
    assert reasons(BUDGET, _spend("101", month="2026-11"), _spend("85")) == ["BudgetSoftThreshold"]
    assert reasons(BUDGET, None, _spend("100")) == ["BudgetExhausted"]
    message = spend_warnings("a", BUDGET, _spend("0"), _spend("80"))[0].message
    assert "$80 spent in 2026-12 of $100" in message


def test_credit_events_fire_once_per_crossing_and_again_after_a_top_up() -> None:
    assert reasons(CREDITS, _spend("0", "50"), _spend("0", "10")) == []
    assert reasons(CREDITS, _spend("0", "10"), _spend("0", "9.99")) == ["CreditsLow"]
    assert reasons(CREDITS, _spend("0", "9.99"), _spend("0", "5")) == []
    assert reasons(CREDITS, _spend("0", "5"), _spend("0", "0")) == ["CreditsExhausted"]
    assert reasons(CREDITS, _spend("0", "0"), _spend("0", "-0.01")) == []
    # A top-up (a new grant) lifts the balance; spending it down warns again.
    assert reasons(CREDITS, _spend("0", "0"), _spend("0", "60")) == []
    assert reasons(CREDITS, _spend("0", "60"), _spend("0", "3")) == ["CreditsLow"]
    assert reasons(CREDITS, None, _spend("0", "100")) == []


def test_an_unreadable_ledger_is_refused_not_reset() -> None:
    body = {"metadata": {"name": "a"}, "status": {"ledger": {"lifetimeNano": -5}}}
    with pytest.raises(LedgerUnreadable, match=r"status\.ledger of ApiKeyTier a"):
        tier_ledger(body)
    assert tier_ledger({"metadata": {"name": "a"}}) == TierLedger()


LABELS = {"app.kubernetes.io/managed-by": "tiergate", "tiergate.dev/gateway": "tiergate-shared"}


def body(**metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "r1",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "7",
            "labels": LABELS,
            "finalizers": [LEDGER_FINALIZER],
            **metadata,
        },
        "spec": report("a", USD).model_dump(mode="json", by_alias=True),
    }


def test_only_reports_with_the_labels_and_the_finalizer_are_ours() -> None:
    parsed = parse_report(body())
    assert isinstance(parsed, StoredReport) and parsed.resource_version == "7"
    assert not parsed.terminating
    assert parse_report(body(finalizers=[])) is None
    assert parse_report(body(labels={"tiergate.dev/gateway": "g"})) is None
    other = {"app.kubernetes.io/managed-by": "someone", "tiergate.dev/gateway": "g"}
    assert parse_report(body(labels=other)) is None
    terminating = parse_report(body(deletionTimestamp="2026-12-02T10:00:00Z"))
    assert isinstance(terminating, StoredReport) and terminating.terminating
    broken = body()
    broken["spec"]["tiers"][0]["months"][0]["spentNano"] = -1
    problem = parse_report(broken)
    assert isinstance(problem, ReportProblem) and "spentNano" in problem.message


def test_a_report_is_due_when_final_or_stale() -> None:
    def stored(**extra: Any) -> StoredReport:
        parsed = parse_report(body())
        assert isinstance(parsed, StoredReport)
        return StoredReport(**{**parsed.__dict__, "spec": report("a", USD, **extra)})

    assert fold_due(stored(final=True), NOW, 600)
    assert not fold_due(stored(reported_at=NOW - timedelta(seconds=599)), NOW, 600)
    assert fold_due(stored(reported_at=NOW - timedelta(seconds=600)), NOW, 600)
    fresh = stored(reported_at=NOW - timedelta(seconds=100))
    assert next_fold_due([fresh, stored(final=True)], NOW, 600) == NOW + timedelta(seconds=500)
    assert next_fold_due([stored(final=True)], NOW, 600) is None
