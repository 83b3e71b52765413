"""The durable floors and credits in the Redis admission script, against a real redis-server:
``max(Redis's count, floor)`` is counted and stored, credits are checked against the lifetime
spend, and a Redis that lost its data starts again from the floor, in one round trip."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tiergate_contract import Budget, Credits, Limits
from tiergate_gateway.budget import to_nano

pytestmark = pytest.mark.redis
MONTH = "2026-12"
LONG = 60.0
BUDGET = Budget(soft_usd=Decimal("0.5"), hard_usd=Decimal("1"))
USD_01 = to_nano(Decimal("0.1"))


async def test_the_month_floor_is_counted_and_stored_when_above_redis_count(leases):
    floor = to_nano(Decimal("0.85"))
    # Redis knows nothing (restarted without persistence); the durable spend is 0.85 USD.
    grant = await leases.admit("t", Limits(), BUDGET, MONTH, 1, USD_01, LONG, month_floor=floor)
    assert grant.allowed and grant.warn
    assert await leases.spent("t", MONTH) == floor
    refused = await leases.admit("t", Limits(), BUDGET, MONTH, 1, USD_01, LONG, month_floor=floor)
    assert not refused.allowed and refused.limit == "budget"  # 0.85 + 0.1 held + 0.1 > 1
    assert await leases.settle("t", Limits(), MONTH, grant.lease, 0, USD_01) == 1
    assert await leases.spent("t", MONTH) == floor + USD_01
    # A floor below Redis's own count changes nothing.
    low = await leases.admit("t", Limits(), BUDGET, MONTH, 1, 0, LONG, month_floor=5)
    assert low.allowed and await leases.spent("t", MONTH) == floor + USD_01


async def test_credits_are_checked_against_the_lifetime_spend(leases):
    credits = Credits(granted_usd=Decimal("0.3"), warn_below_usd=Decimal("0.15"))
    first = await leases.admit("t", Limits(), None, MONTH, 1, USD_01, LONG, credits)
    assert (
        first.allowed and not first.credits_warn and first.credits_left == to_nano(Decimal("0.2"))
    )
    second = await leases.admit("t", Limits(), None, MONTH, 1, USD_01, LONG, credits)
    assert second.allowed and second.credits_warn  # 0.1 left
    await leases.settle("t", Limits(), MONTH, first.lease, 0, USD_01)
    await leases.settle("t", Limits(), MONTH, second.lease, 0, USD_01)
    assert await leases.lifetime("t") == 2 * USD_01
    third = await leases.admit("t", Limits(), None, MONTH, 1, USD_01, LONG, credits)
    assert third.allowed and third.credits_left == 0
    refused = await leases.admit("t", Limits(), None, MONTH, 1, 1, LONG, credits)
    assert not refused.allowed and refused.limit == "credits"
    await leases.settle("t", Limits(), MONTH, third.lease, 0, USD_01 // 2)
    # The lifetime floor (everything the API holds) wins over a smaller Redis count.
    floor = to_nano(Decimal("0.29"))
    assert not (
        await leases.admit("t", Limits(), None, MONTH, 1, USD_01, LONG, credits, 0, floor)
    ).allowed
    assert await leases.lifetime("t") == floor
    # A top-up: a larger grant admits again at once.
    topped = Credits(granted_usd=Decimal("1.3"))
    assert (await leases.admit("t", Limits(), None, MONTH, 1, USD_01, LONG, topped)).allowed


async def test_a_redis_that_lost_its_data_starts_again_from_the_floors(leases, redis):
    credits = Credits(granted_usd=Decimal("1"))
    grant = await leases.admit("t", Limits(), BUDGET, MONTH, 1, USD_01, LONG, credits)
    await leases.settle("t", Limits(), MONTH, grant.lease, 0, to_nano(Decimal("0.95")))
    await redis.execute("FLUSHDB")  # as a restart without persistence leaves it
    assert (await leases.admit("t", Limits(), BUDGET, MONTH, 1, USD_01, LONG, credits)).allowed
    durable = to_nano(Decimal("0.95"))
    refused = await leases.admit(
        "t", Limits(), BUDGET, MONTH, 1, USD_01, LONG, credits, durable, durable
    )
    assert not refused.allowed and refused.limit == "budget"
    refused = await leases.admit("t", Limits(), None, MONTH, 1, USD_01, LONG, credits, 0, durable)
    assert not refused.allowed and refused.limit == "credits"
