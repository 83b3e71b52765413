"""Rate limits and budgets end to end: 429s with OpenAI-style headers, budget reservations."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import Limits

MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}


def post(gw, **body):
    return httpx.post(
        gw.url + "/v1/chat/completions", json={"model": "m", "messages": MSG, **body}, headers=AUTH
    )


def test_requests_per_minute(upstreams, start_gateway):
    gw = start_gateway(
        config(
            [route("m", target("a", upstreams["a"].base_url))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits(requests_per_minute=3))],
        )
    )
    first = post(gw)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert [post(gw).status_code for _ in range(2)] == [200, 200]
    refused = post(gw)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 21
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert len(upstreams["a"].received) == 3
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(
            base_url=gw.url + "/v1", api_key=STARTUP_KEY, max_retries=0
        ).chat.completions.create(model="m", messages=MSG)
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tiergate_gateway_rate_limited_total{limit="requests",tier="t"} 2.0' in metrics


def test_tokens_per_minute_settles_with_usage(upstreams, start_gateway):
    a = upstreams["a"]
    # The estimate (~body/4) is taken first, then settled to reported usage (10 + 5 = 15).
    a.reset("ok", prompt_tokens=10, completion_tokens=5)
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits(tokens_per_minute=100))],
        )
    )
    statuses = [post(gw).status_code for _ in range(8)]
    # 100 tokens / 15 per call settled = 6 calls, the next estimate (~20) no longer fits.
    assert statuses[:6] == [200] * 6
    assert statuses[-1] == 429
    refused = post(gw)
    assert refused.headers["x-ratelimit-limit-tokens"] == "100"
    huge = post(gw, messages=[{"role": "user", "content": "x" * 2000}])
    assert huge.status_code == 429
    assert huge.json()["error"]["type"] == "tokens"


async def test_concurrent_requests(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("slow", delay=0.5)
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits(concurrent_requests=1))],
        )
    )
    async with httpx.AsyncClient(base_url=gw.url, headers=AUTH) as client:
        body = {"model": "m", "messages": MSG}
        slow = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await asyncio.to_thread(a.received_event.wait, 5)
        second = await client.post("/v1/chat/completions", json=body)
        assert second.status_code == 429
        assert (await slow).status_code == 200
        a.reset("ok")
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200


def test_budget_warns_then_rejects_before_upstream(upstreams, start_gateway):
    a = upstreams["a"]
    # 1000 USD/M in and out; each call settles to 15 tokens = 0.015 USD.
    # Worst case reserved: (~18 prompt estimate + 10 max_tokens) * 1000/M ~ 0.028 USD.
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url, price=("1000", "1000")))],
            [tier("t", STARTUP_KEY, ["m"], budget=("0.035", "0.055"))],
        )
    )
    first = post(gw, max_tokens=10)
    assert first.status_code == 200
    assert "x-tiergate-budget-warning" not in first.headers
    second = post(gw, max_tokens=10)
    assert second.status_code == 200
    assert "x-tiergate-budget-warning" in second.headers
    third = post(gw, max_tokens=10)
    assert third.status_code == 429
    error = third.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert third.headers["x-should-retry"] == "false"
    assert len(a.received) == 2
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tiergate_gateway_budget_rejected_total{tier="t"} 1.0' in metrics
    assert 'tiergate_gateway_budget_warnings_total{tier="t"} 1.0' in metrics


def test_budget_reservation_blocks_a_burst(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("slow", delay=1.0)  # all five reserve while the first two are in flight
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url, price=("0", "1000")))],
            [tier("t", STARTUP_KEY, ["m"], budget=("1", "1"))],
        )
    )

    async def burst():
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=10) as client:
            body = {"model": "m", "messages": MSG, "max_tokens": 400}  # worst case 0.4 USD each
            return await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(5))
            )

    statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert statuses == [200, 200, 429, 429, 429]


def test_upstream_refusals_cost_nothing(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("status", status=400)
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url, price=("1000", "1000")))],
            [tier("t", STARTUP_KEY, ["m"], budget=("0.035", "0.055"))],
        )
    )
    # Each call reserves ~0.028 USD; refused calls release it, so ten in a row all reach the upstream.
    assert [post(gw, max_tokens=10).status_code for _ in range(10)] == [400] * 10
    metrics = httpx.get(gw.url + "/metrics").text
    assert "tiergate_gateway_cost_usd_total{" not in metrics
    a.reset("ok")
    assert post(gw, max_tokens=10).status_code == 200
