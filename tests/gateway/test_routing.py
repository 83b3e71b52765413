"""Traffic split, failover, circuit breakers and timeouts, through real servers."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.gateway import STARTUP_KEY, config, route, target, tier

MSG = [{"role": "user", "content": "hi"}]


def sdk(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)


def test_weighted_split(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url, weight=80), target("b", b.base_url, weight=20))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    with httpx.Client(
        base_url=gw.url, headers={"authorization": f"Bearer {STARTUP_KEY}"}
    ) as client:
        for _ in range(400):
            assert (
                client.post(
                    "/v1/chat/completions", json={"model": "m", "messages": MSG}
                ).status_code
                == 200
            )
    # Binomial(400, 0.8): mean 320, sd 8; +-5 sd.
    assert 280 <= len(a.received) <= 360
    assert len(a.received) + len(b.received) == 400


@pytest.mark.parametrize("status", [500, 429, 503])
def test_failover_on_retryable_status(upstreams, start_gateway, status):
    a, b, c = upstreams["a"], upstreams["b"], upstreams["c"]
    a.reset("status", status=status)
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    target("a", a.base_url),
                    target("b", b.base_url, priority=1),
                    target("c", c.base_url, priority=2),
                )
            ],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    reply = sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert reply.choices[0].message.content == "hello from b"
    assert (len(a.received), len(b.received), len(c.received)) == (1, 1, 0)


def test_no_failover_on_other_4xx(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    a.reset("status", status=400)
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url), target("b", b.base_url, priority=1))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    with pytest.raises(openai.BadRequestError) as excinfo:
        sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert "a says 400" in str(excinfo.value)
    assert len(b.received) == 0


def test_all_targets_failing_returns_last_upstream_error_and_bounded_attempts(
    upstreams, start_gateway
):
    for name in "abc":
        upstreams[name].reset("status", status=503)
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    *(target(n, upstreams[n].base_url, priority=i) for i, n in enumerate("abc")),
                    max_attempts=2,
                )
            ],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    resp = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "m", "messages": MSG},
        headers={"authorization": f"Bearer {STARTUP_KEY}"},
    )
    assert resp.status_code == 503
    assert [len(upstreams[n].received) for n in "abc"] == [1, 1, 0]


def test_connect_error_and_timeout_fail_over(upstreams, start_gateway):
    from tests.support.gateway import free_port

    a, b = upstreams["a"], upstreams["b"]
    a.reset("slow", delay=2.0)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(
        config(
            [
                route("dead", target("x", dead), target("b", b.base_url, priority=1)),
                route(
                    "slow",
                    target("a", a.base_url),
                    target("b", b.base_url, priority=1),
                    first_byte=0.3,
                ),
            ],
            [tier("t", STARTUP_KEY, ["dead", "slow"])],
        )
    )
    assert (
        sdk(gw).chat.completions.create(model="dead", messages=MSG).choices[0].message.content
        == "hello from b"
    )
    assert (
        sdk(gw).chat.completions.create(model="slow", messages=MSG).choices[0].message.content
        == "hello from b"
    )
    metrics = httpx.get(gw.url + "/metrics").text
    assert (
        'tiergate_gateway_upstream_attempts_total{outcome="connect_error",route="dead",target="x"} 1.0'
        in metrics
    )
    assert (
        'tiergate_gateway_upstream_attempts_total{outcome="timeout",route="slow",target="a"} 1.0'
        in metrics
    )
    assert 'tiergate_gateway_failovers_total{from_target="a",route="slow"} 1.0' in metrics


def test_only_dead_target_is_gateway_502(start_gateway):
    from tests.support.gateway import free_port

    gw = start_gateway(
        config(
            [route("m", target("x", f"http://127.0.0.1:{free_port()}/v1"))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    with pytest.raises(openai.InternalServerError) as excinfo:
        sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert excinfo.value.status_code == 502
    assert excinfo.value.body["type"] == "upstream_error"


def test_circuit_opens_after_consecutive_failures(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    a.reset("status", status=500)
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    target("a", a.base_url),
                    target("b", b.base_url, priority=1),
                    failures=2,
                    cooldown=600,
                )
            ],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    client = sdk(gw)
    for _ in range(5):
        assert (
            client.chat.completions.create(model="m", messages=MSG).choices[0].message.content
            == "hello from b"
        )
    assert len(a.received) == 2  # open after two failures: a is not tried again during the cooldown
    assert len(b.received) == 5
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'tiergate_gateway_circuit_state{route="m",target="a"} 1.0' in metrics


def test_missing_credential_fails_that_target_only(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    gw = start_gateway(
        config(
            [
                route(
                    "m",
                    target("a", a.base_url, credential=("nosuch", "key")),
                    target("b", b.base_url, priority=1),
                ),
                route("only", target("a", a.base_url, credential=("nosuch", "key"))),
            ],
            [tier("t", STARTUP_KEY, ["m", "only"])],
        )
    )
    assert (
        sdk(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content
        == "hello from b"
    )
    with pytest.raises(openai.InternalServerError) as excinfo:
        sdk(gw).chat.completions.create(model="only", messages=MSG)
    assert excinfo.value.status_code == 502
    assert excinfo.value.code == "upstream_credential_missing"
    assert len(a.received) == 0


def test_credential_file_change_is_picked_up(upstreams, start_gateway, credentials_dir):
    a = upstreams["a"]
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url, credential=("provider", "api-key")))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert a.received[-1].headers["Authorization"] == "Bearer target-secret-1"
    path = credentials_dir / "provider" / "api-key"
    path.with_suffix(".new").write_text("rotated-secret")
    path.with_suffix(".new").replace(path)
    import time

    deadline = time.monotonic() + 5
    while a.received[-1].headers["Authorization"] != "Bearer rotated-secret":
        assert time.monotonic() < deadline, "rotated credential never used"
        sdk(gw).chat.completions.create(model="m", messages=MSG)
        time.sleep(0.1)
