"""Leases through real gateway processes and a real redis-server: a gateway SIGKILLed with calls
in flight gives its slots and reservations back within their deadline, under continuous
traffic; a burst of 500 concurrent calls on a healthy Redis never gets 503."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis as sync_redis

from tests.support.gateway import (
    ACME_KEY,
    STARTUP_KEY,
    GatewayProcess,
    config,
    route,
    target,
    tier,
    write_config,
)
from tiergate_contract import Limits, Route
from tiergate_gateway.budget import nano_cost, to_nano

pytestmark = pytest.mark.redis
MSG = [{"role": "user", "content": "hi"}]
TOTAL_SECONDS = 2.0  # each call's own deadline (the route's timeouts.requestSeconds)
MARGIN_SECONDS = 1.0  # --lease-margin-seconds
PRICE = ("1000", "1000")  # USD per million tokens, so a call's reservation is visible


def _with_request_deadline(plain: Route) -> Route:
    timeouts = plain.timeouts.model_copy(update={"request_seconds": TOTAL_SECONDS})
    return plain.model_copy(update={"timeouts": timeouts})


def _gateway(path: Path, credentials_dir: Path, redis_url: str, *extra: str) -> GatewayProcess:
    return GatewayProcess(
        "--config-file",
        str(path),
        "--credentials-dir",
        str(credentials_dir),
        "--redis-url",
        redis_url,
        *extra,
    )


def _held(redis: sync_redis.Redis, tier_name: str) -> tuple[int, int]:
    base = f"tiergate:limits:{{{tier_name}}}"
    return int(redis.zcard(f"{base}:leases")), int(redis.get(f"{base}:reserved") or 0)


def _post(url: str, key: str, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": "m", "messages": MSG, "max_tokens": 200},
        headers={"authorization": f"Bearer {key}"},
        timeout=timeout,
    )


def test_a_killed_gateways_slots_and_reservations_come_back_within_their_deadline(
    redis_url, upstreams, tmp_path, credentials_dir
):
    redis = sync_redis.Redis.from_url(redis_url)
    redis.flushdb()
    a = upstreams["a"]
    path = tmp_path / "config.json"
    # 'slots' may run 3 calls at once; 'money' has 0.5 USD and each call reserves ~0.22.
    write_config(
        path,
        config(
            [_with_request_deadline(route("m", target("a", a.base_url, price=PRICE)))],
            [
                tier("slots", STARTUP_KEY, ["m"], limits=Limits(concurrent_requests=3)),
                tier("money", ACME_KEY, ["m"], budget=("0.5", "0.5")),
            ],
        ),
    )
    margin = ("--lease-margin-seconds", str(MARGIN_SECONDS))
    doomed = _gateway(path, credentials_dir, redis_url, *margin).start()
    survivor = _gateway(path, credentials_dir, redis_url, *margin).start()
    try:
        a.reset("slow", delay=30.0)  # the doomed gateway's calls stay in flight
        in_flight = [(STARTUP_KEY, doomed.url)] * 3 + [(ACME_KEY, doomed.url)] * 2
        for key, url in in_flight:
            threading.Thread(
                target=lambda k=key, u=url: _swallow(lambda: _post(u, k)), daemon=True
            ).start()
        deadline = time.monotonic() + 10
        while len(a.received) < len(in_flight):
            assert time.monotonic() < deadline, f"only {len(a.received)} calls went upstream"
            time.sleep(0.01)
        assert _held(redis, "slots")[0] == 3
        money_held = _held(redis, "money")
        assert money_held[0] == 2 and money_held[1] > to_nano(Decimal("0.4"))
        assert doomed.proc is not None
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        killed = time.monotonic()
        a.reset("ok")

        # Continuous traffic on the survivor: refused while the dead gateway's leases last,
        # served once their deadline (admission + 2 s + 1 s margin) has passed.
        recovered: dict[str, float] = {}
        refusals: dict[str, set[str]] = {"slots": set(), "money": set()}
        while len(recovered) < 2:
            elapsed = time.monotonic() - killed
            assert elapsed < TOTAL_SECONDS + MARGIN_SECONDS + 2.0, (recovered, refusals)
            for name, key in (("slots", STARTUP_KEY), ("money", ACME_KEY)):
                if name in recovered:
                    continue
                answer = _post(survivor.url, key)
                if answer.status_code == 200:
                    recovered[name] = elapsed
                else:
                    assert answer.status_code == 429, answer.text
                    refusals[name].add(answer.json()["error"]["code"])
            time.sleep(0.05)
        assert refusals == {"slots": {"rate_limit_exceeded"}, "money": {"budget_exceeded"}}
        for name in ("slots", "money"):
            # The lease deadline counts from admission, before the kill: slack for a busy host.
            assert 0 < recovered[name] <= TOTAL_SECONDS + MARGIN_SECONDS + 1.0, recovered
        # The dead gateway's leases were admitted a moment apart, so they expire a moment apart,
        # and an expired lease is reclaimed by the next admission: traffic goes on until none
        # is held (each call settles its own lease before it answers).
        served = 1
        while _held(redis, "slots") != (0, 0) or _held(redis, "money") != (0, 0):
            assert time.monotonic() - killed < TOTAL_SECONDS + MARGIN_SECONDS + 3.0
            for key in (STARTUP_KEY, ACME_KEY):
                if _post(survivor.url, key).status_code == 200 and key == ACME_KEY:
                    served += 1
            time.sleep(0.05)
        # The dead gateway's calls never settled: the month holds the survivor's calls only.
        month = time.strftime("%Y-%m", time.gmtime())
        spent = int(redis.get(f"tiergate:budget:{{money}}:{month}") or 0)
        one_call = nano_cost(to_nano(Decimal("1000")), to_nano(Decimal("1000")), 10, 5)
        assert spent == served * one_call
    finally:
        doomed.stop()
        survivor.stop()


def _swallow(call) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(httpx.HTTPError):  # the gateway was killed under it
        call()


def test_500_concurrent_calls_on_a_healthy_redis_get_no_503(
    redis_url, upstreams, tmp_path, credentials_dir
):
    redis = sync_redis.Redis.from_url(redis_url)
    redis.flushdb()
    a = upstreams["a"]
    a.reset("slow", delay=0.3)  # the calls overlap at the gateway
    path = tmp_path / "config.json"
    limits = Limits(
        requests_per_minute=100_000, tokens_per_minute=10_000_000, concurrent_requests=1000
    )
    write_config(
        path,
        config(
            [route("m", target("a", a.base_url, price=PRICE))],
            [tier("burst", STARTUP_KEY, ["m"], limits=limits, budget=("900", "1000"))],
        ),
    )
    # Fewer connections than calls in flight, on purpose: the rest wait for one.
    gw = _gateway(path, credentials_dir, redis_url, "--redis-max-connections", "20").start()
    try:

        async def burst() -> list[int]:
            transport = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=500, max_keepalive_connections=500)
            )
            async with httpx.AsyncClient(transport=transport, timeout=60) as client:
                gate = asyncio.Event()

                async def one() -> int:
                    await gate.wait()
                    answer = await client.post(
                        gw.url + "/v1/chat/completions",
                        json={"model": "m", "messages": MSG, "max_tokens": 10},
                        headers={"authorization": f"Bearer {STARTUP_KEY}"},
                    )
                    return answer.status_code

                tasks = [asyncio.create_task(one()) for _ in range(500)]
                await asyncio.sleep(0.1)
                gate.set()
                return list(await asyncio.gather(*tasks))

        statuses = asyncio.run(burst())
        assert statuses.count(200) == 500, {s: statuses.count(s) for s in set(statuses)}
        assert _held(redis, "burst") == (0, 0)
        month = time.strftime("%Y-%m", time.gmtime())
        spent = int(redis.get(f"tiergate:budget:{{burst}}:{month}") or 0)
        one_call = nano_cost(to_nano(Decimal("1000")), to_nano(Decimal("1000")), 10, 5)
        assert spent == 500 * one_call
    finally:
        output = gw.stop()
    assert "limits_unavailable" not in output and "unavailable" not in output, output[-2000:]
