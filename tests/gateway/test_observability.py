"""What the gateway tells people: the access log, request ids and trace context, warnings,
rate-limited repeats, and the time-to-first-token and overhead histograms.

A real gateway process per module (its stdout is the access log, its stderr its own JSON
log), real upstreams on 127.0.0.1, and the openai SDK as the client.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import (
    STARTUP_KEY,
    GatewayProcess,
    config,
    free_port,
    route,
    target,
    tier,
    write_config,
)
from tests.support.upstream import MockUpstream
from tiergate_contract import KeyName, Limits, hash_client_key

KEY = "web-keys/startup"  # the client key's name: <secret>/<data key>
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, MockUpstream]]:
    pool = {name: MockUpstream(name).start() for name in ("first", "second")}
    yield pool
    for upstream in pool.values():
        upstream.stop()


@pytest.fixture(scope="module")
def gateway(
    upstreams: dict[str, MockUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("observability")
    path = folder / "config.json"
    write_config(
        path,
        config(
            [
                route(
                    "m",
                    target("first", upstreams["first"].base_url, priority=0),
                    target("second", upstreams["second"].base_url, priority=1),
                    failures=1,
                )
            ],
            [
                tier("t", STARTUP_KEY, ["m"], limits=Limits()).model_copy(
                    update={"key_names": (KeyName(sha256=hash_client_key(STARTUP_KEY), name=KEY),)}
                )
            ],
        ),
    )
    process = GatewayProcess(
        "--config-file",
        str(path),
        "--credentials-dir",
        str(folder),
        "--ttft-buckets",
        "0.05,0.5,2.5",
        "--overhead-buckets",
        "0.001,0.01",
    ).start()
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess, upstreams: dict[str, MockUpstream]) -> openai.OpenAI:
    for upstream in upstreams.values():
        upstream.reset("ok")
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)


def access_lines(gateway: GatewayProcess, request_id: str) -> list[dict[str, Any]]:
    """The access-log lines of ``request_id`` (they are written within a second)."""
    deadline = time.monotonic() + 5
    while True:
        found = [
            entry
            for entry in map(_json, gateway.output().splitlines())
            if entry is not None and entry.get("request_id") == request_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def sent_headers(upstream: MockUpstream) -> dict[str, str]:
    """The headers of the upstream's last request, names in lower case."""
    return {name.lower(): value for name, value in upstream.received[-1].headers.items()}


def _json(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def test_a_plain_call_has_one_access_line_and_keeps_the_clients_request_id(
    gateway: GatewayProcess, client: openai.OpenAI, upstreams: dict[str, MockUpstream]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="m",
        messages=MESSAGES,
        extra_headers={"x-request-id": "client-id-1", "traceparent": TRACEPARENT},
    )
    assert raw.headers["x-request-id"] == "client-id-1"
    sent = sent_headers(upstreams["first"])
    assert sent["x-request-id"] == "client-id-1"
    assert sent["traceparent"] == TRACEPARENT
    (line,) = access_lines(gateway, "client-id-1")
    assert line["status"] == 200 and line["error"] is None
    assert line["tier"] == "t" and line["route"] == "m" and line["target"] == "first"
    assert line["key"] == KEY  # its name, never its value (below)
    assert line["targets"] == ["first"] and line["attempts"] == 1
    assert line["prompt_tokens"] == 10 and line["completion_tokens"] == 5
    assert line["cost_usd"] == pytest.approx((10 * 1 + 5 * 2) / 1e6)
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert STARTUP_KEY not in gateway.output()


def test_a_request_id_is_made_when_the_client_sends_none_or_a_bad_one(
    gateway: GatewayProcess, client: openai.OpenAI, upstreams: dict[str, MockUpstream]
) -> None:
    for given in (None, "has spaces in it", "x" * 129):
        headers = {} if given is None else {"x-request-id": given}
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, extra_headers=headers
        )
        made = raw.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), made
        assert sent_headers(upstreams["first"])["x-request-id"] == made
        assert access_lines(gateway, made)


def test_a_malformed_traceparent_is_not_sent_upstream(
    client: openai.OpenAI, upstreams: dict[str, MockUpstream]
) -> None:
    for bad in ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "junk", TRACEPARENT + "-extra"):
        client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"traceparent": bad}
        )
        assert "traceparent" not in sent_headers(upstreams["first"])


def test_a_stream_is_logged_when_it_ends_with_its_usage(
    gateway: GatewayProcess, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_headers={"x-request-id": "stream-1"}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    (line,) = access_lines(gateway, "stream-1")
    assert line["stream"] is True and line["status"] == 200 and line["error"] is None
    assert line["completion_tokens"] == 5 and line["tokens_reported"] is True
    assert line["ttft_ms"] <= line["duration_ms"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_stream_that_arrives_whole_is_answered_and_billed_as_one_that_arrives_in_pieces(
    gateway: GatewayProcess,
    client: openai.OpenAI,
    upstreams: dict[str, MockUpstream],
    include_usage: bool,
) -> None:
    """A stream the upstream sent in one piece goes out in one piece with a length, not
    through the relay; the client, the access log and the bill cannot tell the difference."""
    seen = {}
    for behaviour in ("one_piece_stream", "slow_stream"):
        upstreams["first"].reset(behaviour, delay=0.02, chunks=4)
        request_id = f"{behaviour}-{include_usage}"
        options = {"include_usage": True} if include_usage else openai.NOT_GIVEN
        raw = client.chat.completions.with_raw_response.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options=options,
            extra_headers={"x-request-id": request_id},
        )
        framing = "content-length" if behaviour == "one_piece_stream" else "transfer-encoding"
        assert framing in raw.headers, raw.headers
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["cache-control"] == "no-cache"
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usages = [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage]
        (line,) = access_lines(gateway, request_id)
        logged = {key: line[key] for key in ("status", "error", "stream", "target")}
        billed = {key: line[key] for key in ("prompt_tokens", "completion_tokens", "cost_usd")}
        seen[behaviour] = (text, usages, logged, billed, line["tokens_reported"])
    assert seen["one_piece_stream"] == seen["slow_stream"]
    text, usages, logged, billed, reported = seen["one_piece_stream"]
    assert text == "first: part0 part1 part2 part3"
    assert usages == ([(10, 5)] if include_usage else [])  # asked for, or stripped
    assert logged == {"status": 200, "error": None, "stream": True, "target": "first"}
    assert billed["completion_tokens"] == 5 and reported is True
    assert billed["cost_usd"] == pytest.approx((10 * 1 + 5 * 2) / 1e6)


def test_refusals_are_logged_with_their_error_code_and_never_the_key(
    gateway: GatewayProcess,
) -> None:
    wrong_key = "sk-not-a-key-of-any-tier-123"
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {wrong_key}", "x-request-id": "refused-1"},
        json={"model": "m", "messages": MESSAGES},
    )
    assert answer.status_code == 401
    assert answer.headers["x-request-id"] == "refused-1"
    (line,) = access_lines(gateway, "refused-1")
    assert line["status"] == 401 and line["error"] == "invalid_api_key"
    assert "tier" not in line
    assert wrong_key not in gateway.output()


def test_a_failover_is_logged_as_a_warning_and_in_the_access_line(
    gateway: GatewayProcess, client: openai.OpenAI, upstreams: dict[str, MockUpstream]
) -> None:
    upstreams["first"].reset("status", status=503)
    reply = client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, extra_headers={"x-request-id": "failover-1"}
    )
    assert reply.parse().choices[0].message.content == "hello from second"
    (line,) = access_lines(gateway, "failover-1")
    assert line["targets"] == ["first", "second"] and line["attempts"] == 2
    assert line["target"] == "second"
    # One failure opens first's breaker (failures=1).
    warnings = [
        entry
        for entry in map(_json, gateway.output().splitlines())
        if entry is not None and entry.get("level") == "warning"
    ]
    messages = [entry["message"] for entry in warnings]
    assert "failover on route m: first -> second" in messages
    assert any(m.startswith("circuit of target first on route m opened") for m in messages)


def test_the_histograms_have_the_configured_buckets(
    gateway: GatewayProcess, client: openai.OpenAI
) -> None:
    client.chat.completions.create(model="m", messages=MESSAGES)
    httpx.get(gateway.url + "/metrics")  # flushes
    text = httpx.get(gateway.url + "/metrics").text
    ttft = re.findall(
        r'tiergate_gateway_time_to_first_token_seconds_bucket\{le="([^"]+)",route="m",tier="t"\}',
        text,
    )
    assert ttft == ["0.05", "0.5", "2.5", "+Inf"]
    overhead = re.findall(
        r'tiergate_gateway_overhead_seconds_bucket\{le="([^"]+)",route="m",tier="t"\}', text
    )
    assert overhead == ["0.001", "0.01", "+Inf"]
    served = re.search(r'tiergate_gateway_overhead_seconds_count\{route="m",tier="t"\} (\S+)', text)
    assert served is not None and float(served.group(1)) >= 1


def test_too_deep_a_body_is_a_400_and_leaves_the_breaker_alone(
    gateway: GatewayProcess, client: openai.OpenAI, upstreams: dict[str, MockUpstream]
) -> None:
    for depth in (65, 300, 2000):
        nested = "[" * depth + "]" * depth
        answer = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {STARTUP_KEY}", "content-type": "application/json"},
            content=f'{{"model":"m","messages":[],"x":{nested}}}',
        )
        assert answer.status_code == 400, (depth, answer.text)
        assert answer.json()["error"]["code"] == "invalid_json"
    received = sum(len(upstream.received) for upstream in upstreams.values())
    # Deep but within the limit (64 levels, the body's own object included) is sent as it is.
    nested = "[" * 62 + "]" * 62
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {STARTUP_KEY}"},
        content=f'{{"model":"m","messages":[],"x":{nested}}}',
    )
    assert answer.status_code == 200
    assert sum(len(upstream.received) for upstream in upstreams.values()) == received + 1
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices


def test_an_outage_of_redis_is_one_error_line_a_second(tmp_path: Path) -> None:
    """18,300 ERROR lines in a 10 s Redis outage before: now one per cause per second."""
    port = free_port()  # nothing listens there: Redis is down from the start
    upstream = MockUpstream("up").start()
    path = tmp_path / "config.json"
    write_config(
        path,
        config(
            [route("m", target("up", upstream.base_url))],
            [tier("t", STARTUP_KEY, ["m"], limits=Limits(requests_per_minute=1_000_000))],
        ),
    )
    gateway = GatewayProcess(
        "--config-file",
        str(path),
        "--credentials-dir",
        str(tmp_path),
        "--redis-url",
        f"redis://127.0.0.1:{port}/0",
        "--access-log-sample",
        "0",
    ).start()
    try:
        started = time.monotonic()
        with httpx.Client(base_url=gateway.url) as http:
            refused = 0
            while time.monotonic() - started < 2.5:
                answer = http.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {STARTUP_KEY}"},
                    json={"model": "m", "messages": MESSAGES},
                )
                assert answer.status_code == 503
                refused += 1
        seconds = time.monotonic() - started
    finally:
        output = gateway.stop()
        upstream.stop()
    errors = [
        entry
        for entry in map(_json, output.splitlines())
        if entry is not None and entry.get("level") == "error"
    ]
    assert refused > 50
    assert 1 <= len(errors) <= seconds + 1, (refused, errors)
    assert any(entry.get("suppressed", 0) > 10 for entry in errors[1:]), errors
