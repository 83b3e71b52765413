"""Metering no client can lower: usage is always asked of the upstream for streamed calls;
a client that did not ask for it does not get the usage chunk, and is billed all the same.

Before: with ``stream_options: {"include_usage": false}`` the gateway did not ask for usage
and settled on the prompt estimate (4 streams reported at 4,000 tokens each were charged
$0.000164 instead of $0.024, and a fifth passed a spent budget)."""

from __future__ import annotations

import re
import time

import httpx
import openai
import orjson
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import Limits

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "options",
    [None, {"include_usage": False}, {"include_usage": None}, {}, "absent"],
    ids=["null", "false", "include-null", "empty", "absent"],
)
def test_a_stream_is_billed_on_the_upstreams_usage_whatever_the_client_sends(
    upstreams, start_gateway, options
):
    upstreams["a"].reset("ok", prompt_tokens=2000, completion_tokens=2000, chunks=3)
    gateway = start_gateway(
        config(
            [route("m", target("a", upstreams["a"].base_url, price=("1", "2")))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits())],
        )
    )
    extra = {} if options == "absent" else {"stream_options": options}
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(model="m", messages=MESSAGES, stream=True, extra_body=extra)
    )
    # The upstream was asked for usage...
    assert upstreams["a"].received[-1].body["stream_options"]["include_usage"] is True
    # ...and the client, which did not ask, got no usage-only chunk (every chunk has choices).
    assert chunks and all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    text = httpx.get(gateway.url + "/metrics").text
    cost = re.search(
        r'tiergate_gateway_cost_usd_total\{route="m",target="a",tier="t"\} (\S+)', text
    )
    assert cost is not None
    assert float(cost.group(1)) == pytest.approx((2000 * 1 + 2000 * 2) / 1e6)
    assert "tiergate_gateway_usage_missing_total{" not in text


def test_a_client_that_asks_for_usage_still_gets_it(upstreams, start_gateway):
    gateway = start_gateway(
        config(
            [route("m", target("a", upstreams["a"].base_url))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits())],
        )
    )
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_a_budget_is_not_passed_by_turning_usage_off(upstreams, start_gateway):
    """Each stream costs 0.006 USD by the upstream's count; a 0.01 budget serves one, then two
    exhaust it (the second is admitted on its reservation), and the third is refused."""
    upstreams["a"].reset("ok", prompt_tokens=2000, completion_tokens=2000)
    gateway = start_gateway(
        config(
            [route("m", target("a", upstreams["a"].base_url, price=("1", "2")))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits(), budget=("0.005", "0.01"))],
        )
    )
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    refusals: list[str | None] = []
    for _ in range(4):
        try:
            list(
                client.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    stream=True,
                    max_tokens=10,
                    stream_options={"include_usage": False},
                )
            )
        except openai.RateLimitError as error:
            refusals.append(error.code)
    # 0.012 of 0.01 spent after two: the rest are refused, for the budget.
    assert refusals == ["budget_exceeded"] * 2


def test_a_client_that_leaves_before_the_answer_is_charged_what_the_upstream_read(
    upstreams, start_gateway
):
    """The upstream read the prompt (and bills it) even though the client hung up before the
    first byte came back: the call is charged the prompt estimated from the body it was sent,
    never 0."""
    upstreams["a"].reset("slow", delay=3.0)
    gateway = start_gateway(
        config(
            [route("m", target("a", upstreams["a"].base_url, price=("1000", "1000")))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits())],
        )
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {STARTUP_KEY}"},
            json=body,
            timeout=httpx.Timeout(5, read=0.5),
        )
    assert upstreams["a"].received_event.wait(2)

    def charged() -> float | None:
        text = httpx.get(gateway.url + "/metrics").text
        cost = re.search(
            r'tiergate_gateway_cost_usd_total\{route="m",target="a",tier="t"\} (\S+)', text
        )
        return float(cost.group(1)) if cost else None

    deadline = time.monotonic() + 5
    while charged() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = len(orjson.dumps({**body, "model": "up"})) // 4  # what the gateway sent, about
    assert charged() == pytest.approx(sent * 1000 / 1e6, rel=0.1)
