"""Prepaid credits end to end on a real gateway (in-process ledger) with the openai SDK: spent
exactly, refused with insufficient_quota / credits_exhausted and no SDK retry once used up,
a warning below the threshold, served again at once after a top-up; combined with a monthly
budget (both must allow); per-key metrics labels."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import openai
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier, write_config
from tiergate_contract import Credits, GatewayConfig, KeyName, Tier, hash_client_key
from tiergate_gateway.budget import nano_cost

MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}
BODY = {"model": "m", "messages": MSG, "max_tokens": 10}
# The mock upstream reports 10 prompt and 5 completion tokens; prices are 1 and 2 USD per
# million: 20,000 nano-USD a call.
CALL_NANO = nano_cost(10**9, 2 * 10**9, 10, 5)


def with_credits(t: Tier, granted: str, warn: str = "0") -> Tier:
    return t.model_copy(
        update={"credits": Credits(granted_usd=Decimal(granted), warn_below_usd=Decimal(warn))}
    )


def credit_config(
    upstream_url: str, granted: str, warn: str = "0", budget: tuple[str, str] | None = None
) -> GatewayConfig:
    return config(
        [route("m", target("a", upstream_url))],
        [with_credits(tier("t", STARTUP_KEY, ["m"], budget=budget), granted, warn)],
    )


def post(gw: object) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=BODY, headers=AUTH)  # type: ignore[attr-defined]


def reservation() -> int:
    """What one call of ``BODY`` reserves: the estimated prompt (body bytes / 4) at the
    input price plus max_tokens at the output price."""
    size = len(httpx.Request("POST", "http://x", json=BODY).content)
    return nano_cost(10**9, 2 * 10**9, size // 4, 10)


def served_generation(gw: object, generation: str) -> None:
    deadline = time.monotonic() + 5
    while httpx.get(gw.url + "/readyz").json().get("generation") != generation:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the new config did not serve"
        time.sleep(0.02)


def test_credits_are_spent_exactly_refused_when_used_up_and_topped_up(
    upstreams, start_gateway, tmp_path
):
    granted_nano = 100_000
    cfg = credit_config(upstreams["a"].base_url, "0.0001", warn="0.00005")
    gw = start_gateway(cfg)
    served, warned = 0, []
    while True:
        reply = post(gw)
        if reply.status_code != 200:
            break
        served += 1
        warned.append("x-tiergate-credits-warning" in reply.headers)
    # Every call was admitted while spend + its reservation fit the grant, and not one more.
    assert served * CALL_NANO <= granted_nano < served * CALL_NANO + reservation()
    assert (served - 1) * CALL_NANO + reservation() <= granted_nano
    left_after = [granted_nano - i * CALL_NANO - reservation() for i in range(served)]
    assert warned == [left < 50_000 for left in left_after]
    assert reply.status_code == 429
    assert reply.headers["x-should-retry"] == "false"
    error = reply.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "credits_exhausted")
    assert "prepaid credits" in error["message"] and "0.0001 USD granted" in error["message"]
    # The SDK raises at once: x-should-retry false stops its retries.
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=STARTUP_KEY, max_retries=3)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="m", messages=MSG, max_tokens=10)
    assert raised.value.code == "credits_exhausted"
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tiergate_gateway_credits_rejected_total{tier="t"} 2.0' in metrics
    assert len(upstreams["a"].received) == served
    # A top-up (a new config with a larger grant) serves at once.
    topped = credit_config(upstreams["a"].base_url, "0.0002", warn="0.00005")
    write_config(tmp_path / "config.json", topped)
    served_generation(gw, topped.generation)
    answer = client.chat.completions.create(model="m", messages=MSG, max_tokens=10)
    assert answer.choices[0].message.content
    assert len(upstreams["a"].received) == served + 1


def test_credits_and_a_monthly_budget_both_must_allow(upstreams, start_gateway):
    # Plenty of credits, a budget for a few calls: the budget refuses, as budget_exceeded.
    gw = start_gateway(credit_config(upstreams["a"].base_url, "100", budget=("0.00004", "0.0001")))
    codes = [post(gw).status_code for _ in range(8)]
    served = codes.count(200)
    assert codes == [200] * served + [429] * (8 - served)
    assert served * CALL_NANO <= 100_000 < served * CALL_NANO + reservation()
    refused = post(gw)
    assert refused.json()["error"]["code"] == "budget_exceeded"
    # A budget with room and credits used up: the credits refuse.
    gw2 = start_gateway(credit_config(upstreams["b"].base_url, "0.00001", budget=("50", "100")))
    assert post(gw2).json()["error"]["code"] == "credits_exhausted"
    assert len(upstreams["b"].received) == 0


def test_per_key_metrics_label_tokens_and_cost_with_the_key_name(upstreams, start_gateway):
    second = "sk-startup-second-key-987"
    plain = tier("plain", "sk-plain-key-0001", ["m"])
    keyed = tier("t", STARTUP_KEY, ["m"]).model_copy(
        update={
            "key_sha256": tuple(sorted((hash_client_key(STARTUP_KEY), hash_client_key(second)))),
            "key_names": (KeyName(sha256=hash_client_key(STARTUP_KEY), name="team-a/key"),),
            "per_key_metrics": True,
        }
    )
    gw = start_gateway(config([route("m", target("a", upstreams["a"].base_url))], [plain, keyed]))
    for key in (STARTUP_KEY, STARTUP_KEY, second, "sk-plain-key-0001"):
        reply = httpx.post(
            gw.url + "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
        )
        assert reply.status_code == 200
    lines = httpx.get(gw.url + "/metrics").text.splitlines()
    cost = sorted(line for line in lines if line.startswith("tiergate_gateway_cost_usd_total"))
    assert cost == [
        'tiergate_gateway_cost_usd_total{key="(other keys)",route="m",target="a",tier="t"} 2e-05',
        'tiergate_gateway_cost_usd_total{key="team-a/key",route="m",target="a",tier="t"} 4e-05',
        'tiergate_gateway_cost_usd_total{route="m",target="a",tier="plain"} 2e-05',
    ]
    prompt = [
        line
        for line in lines
        if line.startswith("tiergate_gateway_tokens_total") and 'kind="prompt"' in line
    ]
    assert sorted(prompt) == [
        'tiergate_gateway_tokens_total{key="(other keys)",kind="prompt",route="m",target="a",tier="t"} 10.0',
        'tiergate_gateway_tokens_total{key="team-a/key",kind="prompt",route="m",target="a",tier="t"} 20.0',
        'tiergate_gateway_tokens_total{kind="prompt",route="m",target="a",tier="plain"} 10.0',
    ]
