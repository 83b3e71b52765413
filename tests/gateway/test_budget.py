"""Budget math, months and the in-process ledger (budget.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tiergate_contract import (
    Budget,
    Pricing,
)
from tiergate_gateway.budget import BudgetMonth, LocalLedger, month_of, nano_cost, to_nano


def test_budget_math():
    pricing = Pricing(input_per_million=Decimal("0.27"), output_per_million=Decimal("1.10"))
    prices = to_nano(pricing.input_per_million), to_nano(pricing.output_per_million)
    assert nano_cost(*prices, 1_000_000, 500_000) == to_nano(Decimal("0.82"))
    assert to_nano(Decimal("0.0000000011")) == 2  # rounds up: never under-reserve
    # The integer hot path agrees with the Decimal definition (rounded up to a nano-USD).
    for prompt, completion in ((1_000_000, 500_000), (7, 3), (0, 0), (123_457, 1)):
        exact = (
            pricing.input_per_million * prompt + pricing.output_per_million * completion
        ) / Decimal(1_000_000)
        assert nano_cost(*prices, prompt, completion) == to_nano(exact)
    assert (
        month_of(datetime(2025, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == "2025-02"
    )
    with pytest.raises(ValueError, match="aware"):
        month_of(datetime(2025, 1, 1))


def test_budget_month_follows_the_injected_clock_or_the_utc_calendar():
    clock = [datetime(2025, 1, 31, 23, 59, tzinfo=UTC)]
    month = BudgetMonth(lambda: clock[0])
    assert month() == "2025-01"
    clock[0] += timedelta(minutes=2)
    assert month() == "2025-02"
    assert BudgetMonth()() == datetime.now(UTC).strftime("%Y-%m")


async def test_local_ledger_reserve_settle_and_months():
    ledger = LocalLedger()
    budget = Budget(soft_usd=Decimal("1"), hard_usd=Decimal("2"))
    first = await ledger.reserve("t", budget, "2025-01", to_nano(Decimal("1.5")))
    assert (first.allowed, first.warn) == (True, True)
    assert not (await ledger.reserve("t", budget, "2025-01", to_nano(Decimal("0.6")))).allowed
    await ledger.settle("t", "2025-01", to_nano(Decimal("1.5")), to_nano(Decimal("0.4")))
    second = await ledger.reserve("t", budget, "2025-01", to_nano(Decimal("0.6")))
    assert (second.allowed, second.warn) == (True, False)
    assert (await ledger.reserve("t", budget, "2025-02", to_nano(Decimal("2")))).allowed
