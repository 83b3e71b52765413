"""status.spend across the turn of months (pure, with an injected clock): the ledger loop wakes
just past every month's end (any day of any month), shows the new month from 0 with the
lifetime spend and the credits unchanged, and the budget's events fire again in the new
month, once per crossing (docs/ledger.md)."""

from __future__ import annotations

import asyncio
import calendar
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tiergate_contract.ledger import (
    LEDGER_FINALIZER,
    MonthSpend,
    SpendReportSpec,
    TierLedger,
    TierReport,
)
from tiergate_operator.ledger_keeper import (
    LedgerKeeper,
    month_clock_for_tests,
    seconds_to_month_end,
)
from tiergate_operator.models import ApiKeyTierSpec
from tiergate_operator.refs import ObjectRef
from tiergate_operator.spend_status import spend_status, spend_warnings
from tiergate_operator.store import Store

USD = 1_000_000_000
NS = "ns"
TIER_SPEC = {
    "isolation": "Shared",
    "keys": [{"secretRef": {"name": "k"}}],
    "budget": {"monthlyUSD": "1"},
    "credits": {"grants": [{"id": "g", "amountUSD": "10", "reason": "r"}]},
}


def days_of(year: int) -> list[datetime]:
    return [
        datetime(year, month, day, hour, 30, tzinfo=UTC)
        for month in range(1, 13)
        for day in range(1, calendar.monthrange(year, month)[1] + 1)
        for hour in (0, 23)
    ]


@pytest.mark.parametrize("year", [2027, 2028])  # 2028 is a leap year
def test_the_loop_sleeps_until_just_past_the_month_s_end_on_every_day(year: int) -> None:
    for now in days_of(year):
        month_end = (
            datetime(now.year + 1, 1, 1, tzinfo=UTC)
            if now.month == 12
            else datetime(now.year, now.month + 1, 1, tzinfo=UTC)
        )
        expected = max(1.0, min(3600.0, (month_end - now).total_seconds() + 1))
        assert seconds_to_month_end(now) == expected, now
    last = datetime(year, 1, 31, 23, 59, 59, 500_000, tzinfo=UTC)
    assert seconds_to_month_end(last) == 1.5


def test_the_test_clock_is_an_offset_and_unset_by_default() -> None:
    assert month_clock_for_tests({}) is None
    assert month_clock_for_tests({"TIERGATE_TEST_CLOCK_OFFSET_SECONDS": " "}) is None
    clock = month_clock_for_tests({"TIERGATE_TEST_CLOCK_OFFSET_SECONDS": "86400"})
    assert clock is not None
    ahead = clock() - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < ahead <= timedelta(days=1)
    with pytest.raises(ValueError, match="TIERGATE_TEST_CLOCK_OFFSET_SECONDS='soon'"):
        month_clock_for_tests({"TIERGATE_TEST_CLOCK_OFFSET_SECONDS": "soon"})


def spec_of(**extra: Any) -> ApiKeyTierSpec:
    return ApiKeyTierSpec.model_validate({**TIER_SPEC, **extra})


def report(*months: tuple[str, int], reported: datetime | None = None) -> SpendReportSpec:
    moment = reported or datetime.now(UTC)
    return SpendReportSpec(
        gateway="g",
        pod="p",
        started_at=moment,
        reported_at=moment,
        tiers=(
            TierReport(
                tier="web",
                months=tuple(MonthSpend(month=m, spent_nano=n, calls=1) for m, n in months),
            ),
        ),
    )


def test_status_spend_shows_the_new_month_from_zero_and_keeps_the_lifetime() -> None:
    ledger = TierLedger(
        lifetime_nano=3 * USD,
        lifetime_calls=3,
        months=(MonthSpend(month="2026-12", spent_nano=USD // 2, calls=1),),
    )
    live = [("r", report(("2026-12", USD // 2)))]
    december = spend_status("web", spec_of(), ledger, live, datetime(2026, 12, 31, 23, tzinfo=UTC))
    january = spend_status("web", spec_of(), ledger, live, datetime(2027, 1, 1, 0, tzinfo=UTC))
    assert (december["month"], december["monthUSD"]) == ("2026-12", "1")
    assert (january["month"], january["monthUSD"], january["monthCalls"]) == ("2027-01", "0", 0)
    for field in ("lifetimeUSD", "creditsUsedUSD", "creditsRemainingUSD", "budgetUSD"):
        assert january[field] == december[field], field
    assert (january["lifetimeUSD"], january["creditsRemainingUSD"]) == ("3.5", "6.5")


def test_budget_events_are_armed_again_by_a_new_month() -> None:
    spec = spec_of()
    ledger = TierLedger()

    def status(month: str, nano: int) -> dict[str, Any]:
        now = datetime.strptime(month + "-15", "%Y-%m-%d").replace(tzinfo=UTC)
        return spend_status("web", spec, ledger, [("r", report((month, nano)))], now)

    def reasons(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
        return [w.reason for w in spend_warnings("web", spec, before, after)]

    exhausted = status("2026-12", USD)
    assert reasons(status("2026-12", USD // 2), exhausted) == ["BudgetExhausted"]
    fresh = status("2027-01", 0)
    assert reasons(exhausted, fresh) == []  # the turn itself says nothing
    soft = status("2027-01", 8 * USD // 10)
    assert reasons(fresh, soft) == ["BudgetSoftThreshold"]
    again = status("2027-01", USD)
    assert reasons(soft, again) == ["BudgetExhausted"]
    assert reasons(again, status("2027-01", 2 * USD)) == []
    # A tier exhausted in December with December's status still shown when January's spend
    # already crosses the budget: one event for January.
    assert reasons(exhausted, again) == ["BudgetExhausted"]


class FakeKube:
    """The writes the keeper makes, answered as the API server would (status patches only)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.patches: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.version = 100
        self.patched = asyncio.Event()

    async def merge_patch(
        self,
        ref: ObjectRef,
        patch: dict[str, Any],
        resource_version: str | None = None,
        subresource: str = "",
    ) -> dict[str, Any]:
        assert subresource == "status" and ref.name == "web"
        body = self.store.namespace(NS).tiers["web"]
        self.patches.append(patch)
        self.patched.set()
        self.version += 1
        status = {**body.get("status", {}), **patch["status"]}
        return {
            **body,
            "status": status,
            "metadata": {**body["metadata"], "resourceVersion": str(self.version)},
        }

    async def event(self, involved: dict[str, Any], *, type_: str, reason: str, **_: Any) -> None:
        self.events.append(reason)


def report_body(name: str, spec: SpendReportSpec) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": "u-" + name,
            "resourceVersion": "1",
            "labels": {"app.kubernetes.io/managed-by": "tiergate", "tiergate.dev/gateway": "g"},
            "finalizers": [LEDGER_FINALIZER],
        },
        "spec": spec.model_dump(mode="json", by_alias=True),
    }


async def test_the_keeper_shows_the_new_month_when_it_turns_and_warns_again() -> None:
    # The calendar turns 1.5 s from now (the system clock for reports' ages stays real).
    turn = datetime(2027, 1, 1, tzinfo=UTC)
    offset = turn - (datetime.now(UTC) + timedelta(seconds=1.5))
    store = Store()
    store.put_tier(
        {
            "apiVersion": "tiergate.dev/v1alpha1",
            "kind": "ApiKeyTier",
            "metadata": {"name": "web", "namespace": NS, "resourceVersion": "1"},
            "spec": TIER_SPEC,
        }
    )
    kube = FakeKube(store)
    keeper = LedgerKeeper(
        store,
        kube,
        month_clock=lambda: datetime.now(UTC) + offset,  # type: ignore[arg-type]
    )
    keeper.put_report(report_body("dec", report(("2026-12", USD))))
    await keeper.work(NS)
    [first] = kube.patches
    assert (first["status"]["spend"]["month"], first["status"]["spend"]["monthUSD"]) == (
        "2026-12",
        "1",
    )
    assert kube.events == ["BudgetExhausted"]
    loop = asyncio.create_task(keeper.run())
    try:
        # No event wakes it: the loop's own timer at the month's end does.
        async with asyncio.timeout(10):
            while len(kube.patches) < 2:
                kube.patched.clear()
                await kube.patched.wait()
        spend = kube.patches[1]["status"]["spend"]
        assert (spend["month"], spend["monthUSD"], spend["monthCalls"]) == ("2027-01", "0", 0)
        assert (spend["lifetimeUSD"], spend["creditsRemainingUSD"]) == ("1", "9")
        assert kube.events == ["BudgetExhausted"]  # nothing new at the turn
        # January's spend crosses the budget again: the event fires again.
        keeper.put_report(report_body("jan", report(("2027-01", USD))))
        await keeper.work(NS)
        spend = kube.patches[-1]["status"]["spend"]
        assert (spend["month"], spend["monthUSD"], spend["lifetimeUSD"]) == ("2027-01", "1", "2")
        assert kube.events == ["BudgetExhausted", "BudgetExhausted"]
    finally:
        loop.cancel()
        keeper.close()
