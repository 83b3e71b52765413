"""Drain that suits a cluster: after SIGTERM a real gateway process keeps accepting while
/readyz answers 503 (endpoints take a while to leave a Service), then stops accepting and
finishes in-flight work; a stream the grace period cuts ends with an SSE error event."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.support.gateway import STARTUP_KEY, GatewayProcess, config, route, target, tier
from tests.support.gateway import write_config as write_gateway_config
from tests.support.upstream import MockUpstream

MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}


@pytest.fixture
def gateway(
    upstreams: dict[str, MockUpstream], tmp_path: Path, credentials_dir: Path
) -> Iterator[callable]:
    started: list[GatewayProcess] = []

    def start(*flags: str) -> GatewayProcess:
        path = tmp_path / "config.json"
        a = upstreams["a"]
        write_gateway_config(
            path, config([route("m", target("a", a.base_url))], [tier("t", STARTUP_KEY, ["m"])])
        )
        proc = GatewayProcess(
            "--config-file", str(path), "--credentials-dir", str(credentials_dir), *flags
        ).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        assert STARTUP_KEY not in proc.stop()


def _terminate(proc: GatewayProcess) -> float:
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    return time.monotonic()


def test_after_sigterm_new_connections_are_served_while_readyz_answers_503(
    upstreams: dict[str, MockUpstream], gateway
) -> None:
    upstreams["a"].reset("slow_stream", delay=0.4, chunks=12)
    proc = gateway("--drain-delay-seconds", "4", "--grace-seconds", "5")
    stream_body: list[bytes] = []

    def consume() -> None:  # a stream that runs across SIGTERM, the delay and into the grace
        with httpx.stream(
            "POST",
            proc.url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": "m", "messages": MSG, "stream": True},
            timeout=10,
        ) as response:
            stream_body.extend(response.iter_raw())

    reader = threading.Thread(target=consume)
    reader.start()
    assert upstreams["a"].received_event.wait(5)
    signalled = _terminate(proc)

    answers, readiness = [], []
    while time.monotonic() - signalled < 2.0:  # well inside the delay, on a busy machine too
        # A fresh connection each time, as a client the Service still routes here makes.
        with httpx.Client(timeout=5) as client:
            answer = client.post(
                proc.url + "/v1/chat/completions",
                headers=AUTH,
                json={"model": "m", "messages": MSG},
            )
            answers.append((answer.status_code, answer.headers.get("connection")))
        with httpx.Client(timeout=5) as client:
            readiness.append(client.get(proc.url + "/readyz").status_code)
    assert len(answers) >= 3
    assert set(answers) == {(200, "close")}  # none refused; each tells its client to move on
    assert set(readiness) == {503}

    reader.join(15)
    data = b"".join(stream_body)
    assert data.count(b" part") == 12
    assert data.rstrip().endswith(b"data: [DONE]")
    assert proc.proc is not None and proc.proc.wait(15) == 0
    assert time.monotonic() - signalled >= 4.0  # it did wait for the drain delay
    with pytest.raises(httpx.ConnectError):
        httpx.get(proc.url + "/healthz")


def test_the_listener_closes_once_the_delay_is_over_while_a_stream_still_runs(
    upstreams: dict[str, MockUpstream], gateway
) -> None:
    upstreams["a"].reset("slow_stream", delay=0.3, chunks=10)
    proc = gateway("--drain-delay-seconds", "0.5", "--grace-seconds", "10")
    done = threading.Event()
    body: list[bytes] = []

    def consume() -> None:
        with httpx.stream(
            "POST",
            proc.url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": "m", "messages": MSG, "stream": True},
            timeout=10,
        ) as response:
            body.extend(response.iter_raw())
        done.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert upstreams["a"].received_event.wait(5)
    signalled = _terminate(proc)
    time.sleep(1.0)
    assert not done.is_set()
    with pytest.raises(httpx.ConnectError):  # past the delay: no longer accepting
        httpx.get(proc.url + "/readyz", timeout=2)
    assert done.wait(10)
    reader.join()
    assert b"".join(body).count(b" part") == 10  # the stream in flight finished whole
    assert proc.proc is not None and proc.proc.wait(10) == 0
    assert time.monotonic() - signalled < 10


def test_a_stream_cut_by_the_grace_period_ends_with_an_sse_error_event(
    upstreams: dict[str, MockUpstream], gateway
) -> None:
    a = upstreams["a"]
    a.reset("hang_stream")
    a.disconnected.clear()
    proc = gateway("--drain-delay-seconds", "0", "--grace-seconds", "1")
    body: list[bytes] = []
    first_chunk = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            with httpx.stream(
                "POST",
                proc.url + "/v1/chat/completions",
                headers=AUTH,
                json={"model": "m", "messages": MSG, "stream": True},
                timeout=10,
            ) as response:
                for raw in response.iter_raw():
                    body.append(raw)
                    first_chunk.set()
        except BaseException as error:  # a bare EOF mid-chunked-body would land here
            failure.append(error)

    reader = threading.Thread(target=consume)
    reader.start()
    assert first_chunk.wait(5)
    _terminate(proc)
    reader.join(10)
    assert not failure, failure  # the chunked body was ended properly, not cut off
    events = [e for e in b"".join(body).split(b"\n\n") if e.startswith(b"data: ")]
    last = orjson.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "gateway_shutting_down"
    assert last["error"]["type"] == "server_error"
    assert a.disconnected.wait(5)  # the upstream stream was released
    assert proc.proc is not None and proc.proc.wait(10) == 0


def test_the_openai_sdk_raises_the_cut_as_an_api_error(
    upstreams: dict[str, MockUpstream], gateway
) -> None:
    upstreams["a"].reset("slow_stream", delay=1.0, chunks=30)
    proc = gateway("--grace-seconds", "1")
    client = openai.OpenAI(base_url=proc.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    seen: list[str | None] = []

    def consume() -> None:
        for chunk in client.chat.completions.create(model="m", messages=MSG, stream=True):
            seen.append(chunk.choices[0].delta.content if chunk.choices else None)
            if len(seen) == 1:
                _terminate(proc)

    with pytest.raises(openai.APIError) as raised:
        consume()
    assert "shut down before the stream ended" in str(raised.value)
    assert 1 <= len(seen) < 30
