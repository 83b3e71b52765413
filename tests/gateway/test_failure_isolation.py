"""One bad target never takes a route down: per-attempt deadlines, first-token timeouts,
invalid answers, breaker probes, the request deadline, and requests that can never fit.

Real gateways (in-process, uvloop) and real upstreams on 127.0.0.1 that misbehave on
purpose (``tests/support/upstream.py``), called through the openai SDK.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import openai
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tiergate_contract import Limits

MESSAGES = [{"role": "user", "content": "hi"}]


def sdk(gateway, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=retries, timeout=30
    )


def two_targets(upstreams, start_gateway, **route_options):
    """Route m: target a first (priority 0), then b (priority 1); tier t may use it."""
    cfg = config(
        [
            route(
                "m",
                target("a", upstreams["a"].base_url, priority=0),
                target("b", upstreams["b"].base_url, priority=1),
                **route_options,
            )
        ],
        [tier("t", STARTUP_KEY, ["m"], limits=Limits())],
    )
    return start_gateway(cfg)


def attempts(gateway) -> dict[tuple[str, str], float]:
    """upstream_attempts_total by (target, outcome)."""
    text = httpx.get(gateway.url + "/metrics").text
    found = re.findall(
        r'tiergate_gateway_upstream_attempts_total\{outcome="([^"]+)",route="m",target="([^"]+)"\} (\S+)',
        text,
    )
    return {(target, outcome): float(value) for outcome, target, value in found}


def circuit(gateway, name: str) -> float:
    text = httpx.get(gateway.url + "/metrics").text
    match = re.search(rf'tiergate_gateway_circuit_state\{{route="m",target="{name}"\}} (\S+)', text)
    assert match is not None, text
    return float(match.group(1))


def test_a_stalled_body_fails_over_and_the_healthy_target_serves_every_call(
    upstreams, start_gateway
):
    """Before: totalSeconds bounded the whole call, so after a stall every later attempt
    failed unsent and counted against its breaker (497 of 500 failed, all breakers open)."""
    upstreams["a"].reset("stall_body")
    gateway = two_targets(upstreams, start_gateway, total=1, failures=3, cooldown=60)
    client = sdk(gateway)
    started = time.monotonic()
    for _ in range(5):
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "hello from b"
    # Three calls waited for a's 1 s attempt deadline, then its breaker opened.
    assert time.monotonic() - started < 3 * 1.0 + 2 * 0.5 + 2
    counts = attempts(gateway)
    assert counts[("a", "timeout")] == 3
    assert counts[("b", "ok")] == 5
    assert ("b", "timeout") not in counts
    assert circuit(gateway, "a") == 1 and circuit(gateway, "b") == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_late_first_token_fails_over_before_anything_reaches_the_client(
    upstreams, start_gateway, stream
):
    """The head came at once, the first event 5 s later: firstTokenSeconds moves on at 1 s."""
    upstreams["a"].reset("late_first_event", delay=5)
    gateway = two_targets(upstreams, start_gateway, first_token=1)
    client = sdk(gateway)
    started = time.monotonic()
    if stream:
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            if chunk.choices
        )
        assert text.startswith("b:"), text
    else:
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "hello from b"
    assert 1 <= time.monotonic() - started < 3
    assert attempts(gateway)[("a", "timeout")] == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_200_that_is_not_an_answer_fails_over_and_costs_nothing(upstreams, start_gateway, stream):
    upstreams["a"].reset("invalid_200")
    gateway = two_targets(upstreams, start_gateway)
    client = sdk(gateway)
    if stream:
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
        assert chunks[0].choices[0].delta.content == "b:"
    else:
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "hello from b"
    counts = attempts(gateway)
    assert counts[("a", "invalid_answer")] == 1 and counts[("b", "ok")] == 1
    text = httpx.get(gateway.url + "/metrics").text
    assert 'target="a"' not in "".join(
        line for line in text.splitlines() if line.startswith("tiergate_gateway_cost_usd_total")
    )


def test_only_an_invalid_200_left_is_a_502_naming_it(upstreams, start_gateway):
    upstreams["a"].reset("invalid_200")
    upstreams["b"].reset("invalid_200")
    gateway = two_targets(upstreams, start_gateway)
    with pytest.raises(openai.APIStatusError) as refused:
        sdk(gateway).chat.completions.create(model="m", messages=MESSAGES)
    assert refused.value.status_code == 502
    assert refused.value.code == "upstream_invalid_answer"
    assert "upstream 'b' answered 200 with a body that is not JSON" in refused.value.message


def test_a_probe_abandoned_by_its_client_is_given_back(upstreams, start_gateway):
    """The half-open probe's client leaves before the answer: the next request probes."""
    upstreams["a"].reset("status", status=503)
    gateway = two_targets(upstreams, start_gateway, failures=1, cooldown=2)
    client = sdk(gateway)
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices  # a opens
    assert circuit(gateway, "a") == 1
    # Cooled down (2 s; the 503 without Retry-After kept it last for 1 s): the next call
    # goes to a, as its probe.
    time.sleep(2.1)
    upstreams["a"].reset("slow", delay=2)
    impatient = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0, timeout=0.3
    )
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="m", messages=MESSAGES)
    assert upstreams["a"].received_event.wait(2)  # the probe did go to a
    upstreams["a"].reset("ok")
    time.sleep(0.2)  # the gateway notices the disconnect and cancels the call
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "hello from a"  # probed, and closed again
    assert circuit(gateway, "a") == 0


def test_the_request_deadline_bounds_every_attempt_and_blames_no_target(upstreams, start_gateway):
    for name in ("a", "b"):
        upstreams[name].reset("slow", delay=5)
    gateway = two_targets(upstreams, start_gateway, total=10, request=1, failures=1)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as refused:
        sdk(gateway).chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started < 2
    assert refused.value.status_code == 504 and refused.value.code == "request_timeout"
    assert "timeouts.requestSeconds" in refused.value.message
    assert circuit(gateway, "a") == 0  # the request ran out of time, not the target
    assert len(upstreams["b"].received) == 0  # nothing was started after the deadline


def test_a_request_that_can_never_fit_is_not_retried_by_the_sdk(upstreams, start_gateway):
    cfg = config(
        [route("m", target("a", upstreams["a"].base_url))],
        [tier("t", STARTUP_KEY, ["m"], limits=Limits(tokens_per_minute=100))],
    )
    gateway = start_gateway(cfg)
    big = [{"role": "user", "content": "x" * 2000}]  # about 500 tokens by the estimate
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(gateway, retries=2).chat.completions.create(model="m", messages=big)
    assert time.monotonic() - started < 1  # the SDK's retries would wait seconds
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "tokens per minute limit is 100" in refused.value.message
    text = httpx.get(gateway.url + "/metrics").text
    assert re.search(r'tiergate_gateway_requests_total\{[^}]*status="429"[^}]*\} 1\.0', text)
    assert len(upstreams["a"].received) == 0


def test_concurrent_calls_with_one_stalled_target_never_fail(upstreams, start_gateway):
    """Many calls at once while a stalls: every one is answered, by b."""
    upstreams["a"].reset("stall_body")
    gateway = two_targets(upstreams, start_gateway, total=1, failures=5, cooldown=60)
    client = sdk(gateway)
    errors: list[BaseException] = []
    served: list[str] = []

    def call() -> None:
        try:
            reply = client.chat.completions.create(model="m", messages=MESSAGES)
            served.append(reply.choices[0].message.content or "")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors[:3]
    assert served == ["hello from b"] * 30
