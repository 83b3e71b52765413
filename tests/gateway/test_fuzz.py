"""Fuzzing the HTTP surface: malformed JSON, wrong types, bad headers, huge bodies, broken HTTP.

With a healthy upstream, every 5xx would be gateway-made: none is allowed, and
the gateway must keep serving afterwards.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway import (
    STARTUP_KEY,
    GatewayThread,
    config,
    route,
    target,
    tier,
    write_config,
)
from tests.support.upstream import MockUpstream
from tiergate_gateway.settings import Settings

PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/x",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "unknown", ""]) | json_values,
        "messages": json_values,
        "stream": st.booleans() | json_values,
        "max_tokens": st.integers(-5, 100) | json_values,
        "stream_options": json_values,
        "input": json_values,
    },
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
    str.strip
)


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory) -> Iterator[str]:
    upstream = MockUpstream("f").start()
    folder: Path = tmp_path_factory.mktemp("fuzz")
    path = folder / "config.json"
    write_config(
        path, config([route("m", target("f", upstream.base_url))], [tier("t", STARTUP_KEY, ["m"])])
    )
    gw = GatewayThread(
        Settings(port=0, config_file=path, credentials_dir=folder, max_body_bytes=1024 * 1024)
    ).start()
    yield gw.url
    gw.stop()
    upstream.stop()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    body=payloads.map(lambda p: httpx.Request("POST", "/", json=p).content)
    | st.binary(max_size=300),
    auth=st.sampled_from([f"Bearer {STARTUP_KEY}", "Bearer nope", "", "Basic abc"]) | header_text,
    content_type=st.sampled_from(["application/json", "text/plain", ""]) | header_text,
    klass=st.none() | header_text,
)
def test_never_a_gateway_5xx(fuzz_gateway, path, method, body, auth, content_type, klass):
    headers = {"authorization": auth, "content-type": content_type}
    if klass is not None:
        headers["x-tiergate-class"] = klass
    resp = httpx.request(method, fuzz_gateway + path, content=body, headers=headers, timeout=10)
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]


def test_huge_body_is_413(fuzz_gateway):
    resp = httpx.post(
        fuzz_gateway + "/v1/chat/completions",
        content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"authorization": f"Bearer {STARTUP_KEY}", "content-type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["message"] == "request body too large"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.binary(max_size=400)
    | st.builds(
        lambda line, headers: line + b"\r\n" + headers + b"\r\n\r\n",
        st.sampled_from(
            [
                b"POST /v1/chat/completions HTTP/1.1",
                b"GET / HTTP/9.9",
                b"BREW /pot HTCPCP/1.0",
                b"GET",
            ]
        ),
        st.binary(max_size=200),
    )
)
def test_broken_http_never_crashes_the_server(fuzz_gateway, raw):
    port = int(fuzz_gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, answer
    assert httpx.get(fuzz_gateway + "/healthz").status_code == 200


def test_many_headers_are_refused(fuzz_gateway):
    resp = httpx.get(fuzz_gateway + "/healthz", headers={f"x-h{i}": "v" for i in range(150)})
    assert resp.status_code == 431
    assert "too many or too large request headers" in resp.json()["error"]["message"]


def test_expect_100_continue_is_answered(fuzz_gateway):
    port = int(fuzz_gateway.rsplit(":", 1)[1])
    body = b'{"model":"m","messages":[]}'
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
            + STARTUP_KEY.encode()
            + b"\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n"
            % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK")


def test_pipelined_requests_answer_in_order(fuzz_gateway):
    port = int(fuzz_gateway.rsplit(":", 1)[1])
    requests = b"".join(
        b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path for path in (b"/healthz", b"/nope", b"/readyz")
    )
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(requests)
        while answer.count(b"HTTP/1.1 ") < 3:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"404", b"200"]


def test_idle_and_stalled_connections_are_closed(tmp_path):
    import time

    folder = tmp_path
    path = folder / "config.json"
    write_config(
        path,
        config([route("m", target("f", "http://127.0.0.1:9/v1"))], [tier("t", STARTUP_KEY, ["m"])]),
    )
    gw = GatewayThread(
        Settings(port=0, config_file=path, credentials_dir=folder, idle_seconds=0.3)
    ).start()
    try:
        with (
            socket.create_connection(("127.0.0.1", gw.port), timeout=5) as idle,
            socket.create_connection(("127.0.0.1", gw.port), timeout=5) as stalled,
        ):
            stalled.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"
            )
            started = time.monotonic()
            assert idle.recv(100) == b""  # closed by the server
            assert stalled.recv(100) == b""
            assert time.monotonic() - started < 4
        assert httpx.get(gw.url + "/healthz").status_code == 200
    finally:
        gw.stop()
