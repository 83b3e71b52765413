"""Redis leases against a real redis-server: one script admits, one settles, expired leases
are reclaimed by later admissions, and every settle counts exactly once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import Budget, Hedge, Limits, RequestClass, TierRouting
from tiergate_gateway.admission import Admission, Admissions
from tiergate_gateway.budget import BudgetMonth, LocalLedger, to_nano
from tiergate_gateway.calls import Call, HedgeLoser
from tiergate_gateway.config import compile_config
from tiergate_gateway.errors import GatewayError
from tiergate_gateway.leases import RedisLeases
from tiergate_gateway.limits import LocalLimiter
from tiergate_gateway.metrics import Metrics
from tiergate_gateway.redis_client import RedisClient, RedisOptions, connect
from tiergate_gateway.usage import Usage

pytestmark = pytest.mark.redis
MONTH = "2025-01"
LONG = 60.0  # a lease that does not expire during a test
BUDGET = Budget(soft_usd=Decimal("0.5"), hard_usd=Decimal("1"))
USD_03 = to_nano(Decimal("0.3"))


async def test_admissions_are_atomic_under_concurrency(leases: RedisLeases):
    limits = Limits(requests_per_minute=10, concurrent_requests=50)
    grants = await asyncio.gather(
        *(leases.admit("t", limits, None, "-", 1, 0, LONG) for _ in range(40))
    )
    allowed = [g for g in grants if g.allowed]
    assert len(allowed) == 10
    refused = [g for g in grants if not g.allowed]
    assert {g.limit for g in refused} == {"requests"}
    assert all(0 < g.retry_after <= 6.1 for g in refused)
    assert all(g.lease == "" for g in refused)
    assert dict(allowed[0].headers)["x-ratelimit-limit-requests"] == "10"
    assert await leases.held("t") == (10, 0)
    for grant in allowed:
        assert await leases.settle("t", limits, "-", grant.lease, 0, 0) == 1
    assert await leases.held("t") == (0, 0)


async def test_tokens_and_concurrency_are_held_and_given_back(leases: RedisLeases):
    limits = Limits(tokens_per_minute=100, concurrent_requests=2)
    first = await leases.admit("t", limits, None, "-", 60, 0, LONG)
    second = await leases.admit("t", limits, None, "-", 30, 0, LONG)
    assert first.allowed and second.allowed
    third = await leases.admit("t", limits, None, "-", 1, 0, LONG)
    assert (third.allowed, third.limit) == (False, "concurrency")
    await leases.settle("t", limits, "-", first.lease, 60 - 20, 0)  # used 20 of 60 estimated
    fourth = await leases.admit("t", limits, None, "-", 45, 0, LONG)
    assert fourth.allowed, fourth
    too_big = await leases.admit("x", limits, None, "-", 101, 0, LONG)
    assert (too_big.allowed, too_big.limit, too_big.retry_after) == (False, "tokens", 60.0)


async def test_budget_reservations_are_atomic_and_settle_to_the_cost(leases: RedisLeases):
    grants = await asyncio.gather(
        *(leases.admit("t", Limits(), BUDGET, MONTH, 1, USD_03, LONG) for _ in range(6))
    )
    allowed = [g for g in grants if g.allowed]
    assert len(allowed) == 3
    assert [g.warn for g in allowed].count(True) == 2  # 0.6 and 0.9 are above the soft 0.5
    assert {g.limit for g in grants if not g.allowed} == {"budget"}
    assert await leases.held("t") == (3, 3 * USD_03)
    await leases.settle("t", Limits(), MONTH, allowed[0].lease, 0, to_nano(Decimal("0.1")))
    assert await leases.spent("t", MONTH) == to_nano(Decimal("0.1"))
    assert await leases.held("t") == (2, 2 * USD_03)
    assert await leases.spent("t", "2025-02") == 0
    for grant in allowed[1:]:
        await leases.settle("t", Limits(), MONTH, grant.lease, 0, 0)
    assert await leases.held("t") == (0, 0)


async def test_a_budget_refusal_takes_no_request_and_no_slot(leases: RedisLeases):
    limits = Limits(requests_per_minute=2, concurrent_requests=1)
    too_dear = await leases.admit("t", limits, BUDGET, MONTH, 1, to_nano(Decimal("2")), LONG)
    assert (too_dear.allowed, too_dear.limit) == (False, "budget")
    assert await leases.held("t") == (0, 0)
    one = await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, LONG)
    assert one.allowed
    await leases.settle("t", limits, MONTH, one.lease, 0, 0)
    assert (await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, LONG)).allowed


async def test_an_expired_lease_is_reclaimed_by_the_next_admission(leases: RedisLeases):
    limits = Limits(concurrent_requests=1)
    dead = await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, 1.0)  # never settled
    assert dead.allowed
    refused = await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, LONG)
    assert (refused.allowed, refused.limit) == (False, "concurrency")
    started = time.monotonic()
    while not (grant := await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, LONG)).allowed:
        assert time.monotonic() - started < 5, "the expired lease was never reclaimed"
        await asyncio.sleep(0.02)
    assert time.monotonic() - started >= 0.5
    assert await leases.held("t") == (1, USD_03)  # only the new lease
    await leases.settle("t", limits, MONTH, grant.lease, 0, 5)
    assert await leases.held("t") == (0, 0)
    assert await leases.spent("t", MONTH) == 5


async def test_a_settle_counts_exactly_once_even_after_its_lease_was_reclaimed(
    leases: RedisLeases,
):
    limits = Limits(concurrent_requests=5)
    slow = await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, 0.05)
    await asyncio.sleep(0.1)
    other = await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, LONG)  # reclaims ``slow``
    assert await leases.held("t") == (1, USD_03)
    assert await leases.settle("t", limits, MONTH, slow.lease, 0, 7) == 2  # late, still counted
    assert await leases.settle("t", limits, MONTH, slow.lease, 0, 7, retry=True) == 0
    assert await leases.settle("t", limits, MONTH, other.lease, 0, 3) == 1
    assert await leases.settle("t", limits, MONTH, other.lease, 0, 3, retry=True) == 0
    assert await leases.spent("t", MONTH) == 10
    assert await leases.held("t") == (0, 0)


async def test_a_settle_whose_lease_redis_lost_still_counts_its_spend(
    leases: RedisLeases, redis: RedisClient
):
    limits = Limits(concurrent_requests=5)
    grant = await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, LONG)
    await redis.execute("FLUSHDB")  # what a restart without persistence leaves
    assert await leases.settle("t", limits, MONTH, grant.lease, 0, 9) == 3
    assert await leases.settle("t", limits, MONTH, grant.lease, 0, 9, retry=True) == 0
    assert await leases.spent("t", MONTH) == 9
    assert await leases.held("t") == (0, 0)


async def test_reclaiming_is_bounded_per_admission_and_catches_up(
    leases: RedisLeases, redis: RedisClient
):
    limits = Limits(concurrent_requests=1000)
    # What a dead gateway leaves: 250 leases of 1000 nano-USD each, long past their deadline.
    keys = leases.keys("t", MONTH)
    dead = [item for index in range(250) for item in (1, f"dead/1/x:{index}:1000")]
    await redis.execute("ZADD", keys[2], *dead)
    await redis.execute("SET", keys[3], 250_000)
    assert await leases.held("t") == (250, 250_000)
    counts = []
    for _ in range(3):
        grant = await leases.admit("t", limits, BUDGET, MONTH, 1, 1000, LONG)
        await leases.settle("t", limits, MONTH, grant.lease, 0, 0)
        counts.append(await leases.held("t"))
    assert counts == [(150, 150_000), (50, 50_000), (0, 0)]


async def test_a_settle_that_times_out_is_retried_and_counted_once(redis_url: str):
    redis = connect(RedisOptions(redis_url, timeout_seconds=1.0))
    await redis.execute("FLUSHDB")
    leases = RedisLeases(redis, owner="retry")
    limits = Limits(concurrent_requests=1)
    grant = await leases.admit("t", limits, BUDGET, MONTH, 1, USD_03, LONG)
    await redis.execute("CLIENT", "PAUSE", "2500", "ALL")  # Redis stops answering for 2.5 s
    with pytest.raises(redis.errors):
        await leases.settle("t", limits, MONTH, grant.lease, 0, 11)
    leases.settle_later("t", limits, MONTH, grant.lease, 0, 11)
    deadline = time.monotonic() + 10
    while still_held := await _held_or_none(leases):
        assert time.monotonic() < deadline, f"never settled: {still_held}"
        await asyncio.sleep(0.05)
    assert await leases.spent("t", MONTH) == 11
    await leases.close()
    await redis.aclose()


async def _held_or_none(leases: RedisLeases) -> tuple[int, int] | None:
    """What the tier holds, or None once nothing; a paused Redis counts as still holding."""
    try:
        held = await leases.held("t")
    except leases.errors:
        return (-1, -1)
    return held if held != (0, 0) else None


# -- Admission over leases: whatever way a call ends, its lease is settled --------------------


def _admissions_over(leases: RedisLeases) -> Admissions:
    month = BudgetMonth(lambda: datetime(2025, 1, 15, tzinfo=UTC))
    return Admissions(LocalLimiter(), LocalLedger(), Metrics(), month, leases.errors, shared=leases)


def _call(max_tokens: int = 10, routing: TierRouting | None = None) -> Call:
    cfg = config(
        [
            route(
                "m",
                target("a", "http://127.0.0.1:1/v1", price=("1000", "1000")),
                target("b", "http://127.0.0.1:2/v1", price=("1000", "1000")),
            )
        ],
        [
            tier(
                "t",
                STARTUP_KEY,
                ["m"],
                limits=Limits(concurrent_requests=1, tokens_per_minute=200),
                budget=("1", "1"),
                routing=routing,
            )
        ],
    )
    compiled = compile_config(cfg)
    return Call(
        "/v1/chat/completions",
        {"model": "m"},
        False,
        cfg.tiers[0],
        compiled.routes["m"],
        RequestClass.STANDARD,
        50,
        max_tokens,
    )


async def test_an_admission_settles_its_lease_to_the_reported_usage(leases: RedisLeases):
    admissions, call = _admissions_over(leases), _call()
    async with Admission(admissions, call) as admission:
        assert dict(admission.headers)["x-ratelimit-remaining-tokens"] == "150"
        # (50 estimated + 10 max) tokens x 1000 USD per million = 0.06 USD reserved
        assert await leases.held("t") == (1, to_nano(Decimal("0.06")))
        with pytest.raises(GatewayError) as refused:
            async with Admission(admissions, call):
                pytest.fail("the tier's one slot is taken")
        assert refused.value.code == "rate_limit_exceeded"
        admission.target = call.route.route.targets[0]
        admission.usage = Usage(10, 5, True)
    assert await leases.held("t") == (0, 0)
    assert await leases.spent("t", MONTH) == to_nano(Decimal("0.015"))


async def test_an_admission_left_by_an_exception_or_a_cancellation_frees_its_lease(
    leases: RedisLeases,
):
    admissions, call = _admissions_over(leases), _call()
    with pytest.raises(RuntimeError, match="boom"):
        async with Admission(admissions, call):
            raise RuntimeError("boom")
    assert await leases.held("t") == (0, 0)
    inside = asyncio.Event()

    async def waits_for_an_upstream() -> None:
        async with Admission(admissions, call):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits_for_an_upstream())
    await inside.wait()
    assert (await leases.held("t"))[0] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leases.held("t") == (0, 0)
    assert await leases.spent("t", MONTH) == 0


async def test_an_admission_over_budget_is_refused_and_holds_nothing(leases: RedisLeases):
    admissions = _admissions_over(leases)
    with pytest.raises(GatewayError) as refused:
        async with Admission(admissions, _call(max_tokens=1000)):  # 1.05 USD of 1
            pytest.fail("a refused call must not run")
    assert (refused.value.status, refused.value.code) == (429, "budget_exceeded")
    assert dict(refused.value.headers)["x-should-retry"] == "false"
    assert await leases.held("t") == (0, 0)


async def test_a_hedged_admission_reserves_for_every_attempt_and_charges_the_loser(
    leases: RedisLeases,
):
    admissions = _admissions_over(leases)
    call = _call(routing=TierRouting(hedge=Hedge(after_ms=100)))
    async with Admission(admissions, call) as admission:
        # Two attempts may be in flight: 2 x (50 + 10) tokens x 1000 USD per million.
        assert await leases.held("t") == (1, to_nano(Decimal("0.12")))
        assert dict(admission.headers)["x-ratelimit-remaining-tokens"] == "100"
        admission.target = call.route.route.targets[0]
        admission.usage = Usage(10, 5, True)
        # The hedge to b lost: b read a 52-token prompt (its body is longer than the client's)
        # and streamed 3 tokens before the cut.
        call.hedge_losers = (HedgeLoser("b", 52, 3),)
    assert await leases.held("t") == (0, 0)
    # 15 tokens of the winner and 55 of the loser, at 1000 USD per million.
    assert await leases.spent("t", MONTH) == to_nano(Decimal("0.070"))
