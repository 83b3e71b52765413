"""Admission: limits, concurrency and budget held for a call and settled however it ends.

The pure part runs the context manager against the in-process stores; the end-to-end
part runs a real gateway on 127.0.0.1 in front of the mock upstream, where a slot
that leaked would refuse the next call of a tier allowed one call at a time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from tests.support.gateway import (
    STARTUP_KEY,
    config,
    free_port,
    raw_completion_request,
    route,
    target,
    tier,
)
from tiergate_contract import Limits, RequestClass
from tiergate_gateway.admission import Admission, Admissions, call_seconds
from tiergate_gateway.budget import BudgetMonth, LocalLedger, to_nano
from tiergate_gateway.calls import Call
from tiergate_gateway.config import compile_config
from tiergate_gateway.errors import GatewayError
from tiergate_gateway.handover import Handover
from tiergate_gateway.limits import LimitDecision, LocalLimiter
from tiergate_gateway.metrics import Metrics
from tiergate_gateway.usage import Usage

MONTH = "2025-01"
MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}
# One call at a time, 100 tokens a minute, 1 USD a month; 1000 USD per million tokens.
LIMITS = Limits(concurrent_requests=1, tokens_per_minute=100)


def _call(*, prompt_tokens: int = 50, max_tokens: int = 10, budget: bool = True) -> Call:
    cfg = config(
        [route("m", target("a", "http://127.0.0.1:1/v1", price=("1000", "1000")))],
        [tier("t", STARTUP_KEY, ["m"], limits=LIMITS, budget=("1", "1") if budget else None)],
    )
    compiled = compile_config(cfg)
    return Call(
        "/v1/chat/completions",
        {"model": "m"},
        False,
        cfg.tiers[0],
        compiled.routes["m"],
        RequestClass.STANDARD,
        prompt_tokens,
        max_tokens,
    )


def _admissions(limiter: LocalLimiter | None = None) -> tuple[Admissions, LocalLedger]:
    ledger = LocalLedger()
    month = BudgetMonth(lambda: datetime(2025, 1, 15, tzinfo=UTC))
    limiter = limiter or LocalLimiter(clock=lambda: 0.0)
    return Admissions(limiter, ledger, Metrics(), month, (OSError,)), ledger


async def _admitted_again(admissions: Admissions, call: Call) -> bool:
    """Would the next call of the tier be admitted? (The concurrency cap is one.)"""
    try:
        async with Admission(admissions, call):
            return True
    except GatewayError as refused:
        if refused.code != "rate_limit_exceeded":
            raise
        return False


async def test_exit_after_an_answer_settles_to_the_reported_usage():
    admissions, ledger = _admissions()
    call = _call()
    async with Admission(admissions, call) as admission:
        assert isinstance(admission, Admission)
        assert dict(admission.headers)["x-ratelimit-remaining-tokens"] == "50"
        assert not await _admitted_again(admissions, call)  # the slot is held
        # Reserved: (50 estimated + 10 max) tokens x 1000 USD/M = 0.06 USD.
        assert await ledger.spent("t", MONTH) == to_nano(Decimal("0.06"))
        admission.target = call.route.route.targets[0]
        admission.usage = Usage(10, 5, True)
    assert await ledger.spent("t", MONTH) == to_nano(Decimal("0.015"))  # 15 tokens used
    # 100 - 15 tokens left (the estimate of 50 was settled to 15), and the slot is free.
    decision = admissions.limiter.acquire_now("t", LIMITS, 85)  # type: ignore[attr-defined]
    assert decision.allowed


async def test_a_popped_admission_is_held_past_its_block_until_its_new_owner_exits_it():
    # What a streamed answer does: the relay takes the admission's exit with it.
    admissions, ledger = _admissions()
    call = _call()
    held = Handover(Admission(admissions, call))
    async with held as admission:
        admission.target = call.route.route.targets[0]
        popped = held.pop()
    assert popped is admission
    assert not await _admitted_again(admissions, call)  # the block left, the slot is still held
    admission.usage = Usage(10, 5, True)
    await popped.__aexit__(None, None, None)
    assert await ledger.spent("t", MONTH) == to_nano(Decimal("0.015"))
    assert await _admitted_again(admissions, call)


async def test_exit_on_an_exception_gives_everything_back():
    admissions, ledger = _admissions()
    call = _call()
    with pytest.raises(RuntimeError, match="boom"):
        async with Admission(admissions, call):
            raise RuntimeError("boom")
    assert await ledger.spent("t", MONTH) == 0
    assert await _admitted_again(admissions, call)
    assert admissions.limiter.acquire_now("t", LIMITS, 100).allowed  # type: ignore[attr-defined]


async def test_exit_on_cancellation_mid_call_gives_everything_back():
    admissions, ledger = _admissions()
    call = _call()
    inside = asyncio.Event()

    async def waits_for_an_upstream() -> None:
        async with Admission(admissions, call):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits_for_an_upstream())
    await inside.wait()
    assert await ledger.spent("t", MONTH) > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ledger.spent("t", MONTH) == 0
    assert await _admitted_again(admissions, call)


class _SlowFinish(LocalLimiter):
    """A remote-like limiter: settling takes a round trip the test controls."""

    def __init__(self) -> None:
        super().__init__(clock=lambda: 0.0)
        self.round_trip = asyncio.Event()
        self.finishing = asyncio.Event()
        self.finished = 0

    async def finish(self, tier: str, limits: Limits, estimated: int, actual: int) -> None:
        self.finishing.set()
        await self.round_trip.wait()
        await super().finish(tier, limits, estimated, actual)
        self.finished += 1


async def test_a_second_cancellation_during_the_settle_does_not_lose_it():
    limiter = _SlowFinish()
    admissions, _ = _admissions(limiter)
    call = _call(budget=False)
    inside = asyncio.Event()

    async def waits_for_an_upstream() -> None:
        async with Admission(admissions, call):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits_for_an_upstream())
    await inside.wait()
    task.cancel()  # the client's EOF ...
    await limiter.finishing.wait()
    task.cancel()  # ... then its connection closing, while the settle is on its way
    with pytest.raises(asyncio.CancelledError):
        await task
    limiter.round_trip.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert limiter.finished == 1
    assert await _admitted_again(admissions, call)


async def test_a_refusal_raises_before_the_block_and_holds_nothing():
    admissions, ledger = _admissions()
    call = _call(prompt_tokens=101)  # more tokens than a minute holds
    with pytest.raises(GatewayError) as refused:
        async with Admission(admissions, call):
            pytest.fail("a refused call must not run")
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded")
    # It can never fit: no Retry-After, and the SDKs are told not to retry it.
    assert dict(refused.value.headers) == {"x-should-retry": "false"}
    assert "tokens per minute limit is 100" in refused.value.message
    assert await ledger.spent("t", MONTH) == 0
    assert await _admitted_again(admissions, _call())


async def test_a_budget_refusal_gives_the_concurrency_slot_back():
    admissions, ledger = _admissions()
    big = _call(max_tokens=1000)  # reserves 1.05 USD of a 1 USD budget
    with pytest.raises(GatewayError) as refused:
        async with Admission(admissions, big):
            pytest.fail("a refused call must not run")
    assert (refused.value.status, refused.value.code) == (429, "budget_exceeded")
    assert await ledger.spent("t", MONTH) == 0
    assert await _admitted_again(admissions, _call())


class _DownLimiter(LocalLimiter):
    async def acquire(self, tier: str, limits: Limits, tokens: int) -> LimitDecision:
        raise ConnectionRefusedError("redis is down")


async def test_an_unreachable_store_fails_closed():
    admissions, _ = _admissions(_DownLimiter())
    with pytest.raises(GatewayError) as refused:
        async with Admission(admissions, _call()):
            pytest.fail("an unaccounted call must not run")
    assert (refused.value.status, refused.value.code) == (503, "limits_unavailable")


# -- end to end: a real gateway and upstream on 127.0.0.1 ------------------------------------


def _one_at_a_time(upstream_url: str, budget: tuple[str, str] | None = None):
    return config(
        [route("m", target("a", upstream_url, price=("1000", "1000")))],
        [tier("t", STARTUP_KEY, ["m"], limits=Limits(concurrent_requests=1), budget=budget)],
    )


def _post(gw, **body) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "m", "messages": MSG, **body},
        headers=AUTH,
        timeout=10,
    )


def _eventually_admitted(gw, **body) -> None:
    """The slot of an abandoned call is freed once the gateway sees the client go."""
    deadline = time.monotonic() + 5
    while (status := _post(gw, **body).status_code) == 429:
        assert time.monotonic() < deadline, "the abandoned call's slot was never released"
        time.sleep(0.02)
    assert status == 200


def test_plain_and_streamed_calls_release_their_slot(upstreams, start_gateway):
    gw = start_gateway(_one_at_a_time(upstreams["a"].base_url))
    for _ in range(3):
        assert _post(gw).status_code == 200
        with httpx.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            json={"model": "m", "messages": MSG, "stream": True},
            headers=AUTH,
        ) as streamed:
            assert streamed.status_code == 200
            assert b"[DONE]" in streamed.read()


def test_a_failed_call_releases_its_slot_and_its_reservation(start_gateway):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    # Each call reserves ~0.028 USD of 0.05: a reservation kept would refuse the second call.
    gw = start_gateway(_one_at_a_time(dead, budget=("0.05", "0.05")))
    assert [_post(gw, max_tokens=10).status_code for _ in range(3)] == [502, 502, 502]


def test_a_client_that_leaves_mid_call_releases_its_slot(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("slow", delay=1.0)
    gw = start_gateway(_one_at_a_time(a.base_url))
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", gw.port)) as client:
        client.sendall(raw_completion_request(body))
        assert a.received_event.wait(5)
    # The client is gone while the upstream still thinks: the call is cancelled.
    a.reset("ok")
    _eventually_admitted(gw)


def test_a_stream_closed_early_by_the_client_releases_its_slot(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("hang_stream")
    gw = start_gateway(_one_at_a_time(a.base_url))
    with (
        httpx.Client(base_url=gw.url, headers=AUTH) as client,
        client.stream(
            "POST", "/v1/chat/completions", json={"model": "m", "messages": MSG, "stream": True}
        ) as streamed,
    ):
        assert streamed.status_code == 200
        chunks = streamed.iter_raw()  # kept: a dropped iterator would close the stream
        assert b"a:" in next(chunks)
        assert _post(gw).status_code == 429  # the stream holds the slot while it runs
    assert a.disconnected.wait(5), "the upstream stream was not closed"
    a.reset("ok")
    _eventually_admitted(gw)


def test_a_calls_lease_lasts_its_request_deadline_or_every_attempts_total():
    plain = route("m", target("a", "http://127.0.0.1:1/v1"), total=30.0, max_attempts=3)
    assert call_seconds(plain) == 90.0  # three attempts of at most 30 s each
    for request_seconds, expected in ((20.0, 20.0), (500.0, 90.0)):
        timeouts = plain.timeouts.model_copy(update={"request_seconds": request_seconds})
        assert call_seconds(plain.model_copy(update={"timeouts": timeouts})) == expected
