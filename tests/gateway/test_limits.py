"""The in-process limiter (limits.py): token buckets and concurrency."""

from __future__ import annotations

import pytest

from tiergate_contract import (
    Limits,
)
from tiergate_gateway.limits import LocalLimiter


def test_token_bucket_math():
    now = [0.0]
    limiter = LocalLimiter(clock=lambda: now[0])
    limits = Limits(tokens_per_minute=60)
    assert limiter.acquire_now("t", limits, 60).allowed
    now[0] = 2.0
    refused = limiter.acquire_now("t", limits, 10)  # refilled 2 tokens at 1/s
    assert (refused.allowed, refused.limit) == (False, "tokens")
    assert refused.retry_after == pytest.approx(8.0)
    now[0] = 10.0
    assert limiter.acquire_now("t", limits, 10).allowed
    now[0] = 1000.0
    never = limiter.acquire_now("t", limits, 61)  # more than the bucket holds: never fits
    assert (never.allowed, never.retry_after) == (False, 60.0)


def test_local_limiter_requests_tokens_concurrency():
    now = [0.0]
    limiter = LocalLimiter(clock=lambda: now[0])
    limits = Limits(requests_per_minute=2, tokens_per_minute=100, concurrent_requests=3)
    first = limiter.acquire_now("t", limits, 40)
    assert first.allowed
    assert dict(first.headers) == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30.000s",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "60",
        "x-ratelimit-reset-tokens": "24.000s",
    }
    assert limiter.acquire_now("t", limits, 40).allowed
    third = limiter.acquire_now("t", limits, 1)
    assert (third.allowed, third.limit) == (False, "requests")
    assert third.retry_after == pytest.approx(30.0)
    now[0] = 30.0
    fourth = limiter.acquire_now("t", limits, 80)  # tokens: 20 left + 50 refilled = 70 < 80
    assert (fourth.allowed, fourth.limit) == (False, "tokens")
    assert limiter.acquire_now("other", limits, 1).allowed  # tiers are independent


async def test_local_limiter_concurrency_and_settle():
    limiter = LocalLimiter(clock=lambda: 0.0)
    limits = Limits(concurrent_requests=1, tokens_per_minute=100)
    assert limiter.acquire_now("t", limits, 90).allowed
    assert limiter.acquire_now("t", limits, 1).limit == "concurrency"
    await limiter.finish("t", limits, 90, 10)  # the slot and 80 tokens given back
    assert limiter.acquire_now("t", limits, 85).allowed
    await limiter.release("t", limits)  # a call refused later (e.g. by its budget)
    assert limiter.acquire_now("t", limits, 5).allowed
