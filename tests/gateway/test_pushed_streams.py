"""Streams past their first piece are pushed: the upstream connection's callbacks write to the
client's socket with no task step per piece. Every way such a stream can end releases what
the call holds (its slot, its upstream connection) and tells the client how it ended.

Real upstreams (``MockUpstream``) and a real gateway in a thread; the filter fault is injected
by patching ``SseFilter.take`` (the gateway's own code raising mid-stream, which no upstream can
cause on purpose).
"""

from __future__ import annotations

import re
import socket
import ssl
import time

import httpx
import openai
import pytest

from tests.support.gateway import STARTUP_KEY, config, raw_completion_request, route, target, tier
from tests.support.redis_servers import tls_files
from tests.support.upstream import MockUpstream
from tiergate_contract import Limits
from tiergate_gateway import sse

MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}


def _one_at_a_time(upstream_url: str):
    return config(
        [route("m", target("a", upstream_url))],
        [tier("t", STARTUP_KEY, ["m"], limits=Limits(concurrent_requests=1))],
    )


def _admitted_again(gw) -> None:
    deadline = time.monotonic() + 5
    while True:
        status = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "m", "messages": MSG},
            headers=AUTH,
            timeout=10,
        ).status_code
        if status != 429:
            assert status == 200
            return
        assert time.monotonic() < deadline, "the stream's slot was never released"
        time.sleep(0.02)


def _streamed_parts(gw) -> list[str | None]:
    """The content of each piece of one streamed answer, read with the openai SDK."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    return [
        chunk.choices[0].delta.content
        for chunk in client.chat.completions.create(model="m", messages=MSG, stream=True)
        if chunk.choices
    ]


def _metric(gw, name: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def test_a_long_stream_arrives_whole_and_in_order(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("slow_stream", delay=0.005, chunks=200)
    gw = start_gateway(_one_at_a_time(a.base_url))
    assert _streamed_parts(gw) == ["a:", *(f" part{i}" for i in range(200))]
    _admitted_again(gw)


def test_a_whole_stream_is_answered_before_its_call_is_left_and_a_client_leaving_frees_it(
    upstreams, start_gateway
):
    """A stream the upstream sent in one piece goes out with a length; the call is left once
    it is written, even when the client hangs up the moment it has read it."""
    a = upstreams["a"]
    a.reset("one_piece_stream", chunks=3)
    gw = start_gateway(_one_at_a_time(a.base_url))
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", gw.port)) as client:
            client.sendall(raw_completion_request(body))
            received = b""
            while not received.endswith(b"data: [DONE]\n\n"):
                received += client.recv(65536)
        assert b"content-length:" in received.lower() and b" part2" in received
        _admitted_again(gw)  # the slot (one at a time) was freed
    assert _metric(gw, 'tiergate_gateway_internal_errors_total{where="after_answer"}') == 0


def test_a_client_that_leaves_mid_push_frees_the_slot_and_the_upstream(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("hang_stream")  # keep-alive comments every 50 ms: pushed, never ending
    gw = start_gateway(_one_at_a_time(a.base_url))
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", gw.port)) as client:
        client.sendall(raw_completion_request(body))
        received = b""
        while received.count(b"keep-alive") < 3:  # pushed pieces, after the first
            received += client.recv(65536)
    assert a.disconnected.wait(5), "the upstream stream was not closed"
    _admitted_again(gw)
    assert _metric(gw, 'tiergate_gateway_internal_errors_total{where="stream"}') == 0


def test_a_fault_of_the_gateways_own_mid_push_cuts_the_stream_and_releases_everything(
    upstreams, start_gateway, monkeypatch: pytest.MonkeyPatch
):
    a = upstreams["a"]
    a.reset("slow_stream", delay=0.02, chunks=20)
    gw = start_gateway(_one_at_a_time(a.base_url))
    take = sse.SseFilter.take
    calls = {"n": 0}

    def failing_take(self: sse.SseFilter, piece: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("a bug in the filter")
        return take(self, piece)

    monkeypatch.setattr(sse.SseFilter, "take", failing_take)
    with (
        httpx.Client(base_url=gw.url, headers=AUTH, timeout=10) as client,
        client.stream(
            "POST", "/v1/chat/completions", json={"model": "m", "messages": MSG, "stream": True}
        ) as streamed,
    ):
        assert streamed.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # cut: no end of the chunked body
            b"".join(streamed.iter_raw())
    assert _metric(gw, 'tiergate_gateway_internal_errors_total{where="stream"}') == 1
    gw.expected_internal_errors = 1  # this one, injected
    monkeypatch.setattr(sse.SseFilter, "take", take)
    _admitted_again(gw)


@pytest.fixture
def tls_upstream(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A real upstream serving https with a throwaway CA the gateway is told to trust."""
    files = tls_files(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    upstream = MockUpstream("s", tls=context).start()
    # The gateway's client takes the default CAs when it first dials https: these, here.
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca))
    yield upstream
    upstream.stop()


def test_a_stream_over_tls_is_pushed_whole_and_frees_its_slot(tls_upstream, start_gateway):
    tls_upstream.reset("slow_stream", delay=0.002, chunks=300)
    gw = start_gateway(_one_at_a_time(tls_upstream.base_url))
    assert _streamed_parts(gw) == ["s:", *(f" part{i}" for i in range(300))]
    _admitted_again(gw)
