"""A gateway process's own settings (``runtime``): no call leaves a reference cycle behind, so
full collections can be rare; the open-file limit is raised to the hard one at start, and
running out of open files is the gateway's 503, not an upstream's failure."""

from __future__ import annotations

import gc
import http.client
import json
import os
import re
import resource
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.gateway import (
    STARTUP_KEY,
    GatewayProcess,
    config,
    route,
    target,
    tier,
    write_config,
)
from tiergate_gateway import runtime

MESSAGES = [{"role": "user", "content": "hi"}]
_TIERS = [tier("startup", STARTUP_KEY, ["m"])]


def _calls(url: str, upstreams) -> None:
    """Streamed, plain, left mid-stream and failed-over calls, each client closing its
    connections at the end (the server's connections end too)."""
    upstreams["a"].reset("slow_stream", delay=0.01, chunks=20)
    with openai.OpenAI(base_url=url + "/v1", api_key=STARTUP_KEY, max_retries=0) as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert len(list(stream)) >= 20
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        next(iter(stream))
        stream.close()  # the client leaves mid-stream: both connections are cut
    upstreams["a"].reset("ok")
    with openai.OpenAI(base_url=url + "/v1", api_key=STARTUP_KEY, max_retries=0) as client:
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content
    upstreams["a"].reset("status", status=500)
    with openai.OpenAI(base_url=url + "/v1", api_key=STARTUP_KEY, max_retries=0) as client:
        reply = client.chat.completions.create(model="m", messages=MESSAGES)  # a fails: b serves
        assert reply.choices[0].message.content == "hello from b"


def test_calls_leave_no_reference_cycle_of_the_gateway(start_gateway, upstreams) -> None:
    a, b = upstreams["a"], upstreams["b"]
    cfg = config(
        [route("m", target("a", a.base_url, priority=0), target("b", b.base_url, priority=1))],
        _TIERS,
    )
    gateway = start_gateway(cfg)
    _calls(gateway.url, upstreams)  # once first: imports, caches, pooled connections
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            _calls(gateway.url, upstreams)
        time.sleep(0.5)  # the gateway's side of the last closes
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = Counter(
            type(obj).__qualname__
            for obj in gc.garbage
            if type(obj).__module__.startswith("tiergate_gateway")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    # Before the server and the client broke their cycles at close, each of these calls left
    # its connection, parser, task, relay, admission, ... for a full collection to find.
    assert left == Counter()


def test_collections_are_rarer_after_tuning() -> None:
    before = gc.get_threshold()
    try:
        runtime.tune_collector()
        young, middle, full = gc.get_threshold()
        assert young > 700  # CPython's default
        assert young * middle * full >= 10 * 700 * 10 * 10  # full ones at least ten times rarer
    finally:
        gc.set_threshold(*before)


def _soft_file_limit(soft: int) -> Callable[[], None]:
    def lower() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return lower


def _soft_limit_of(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    return int(next(line.split()[3] for line in limits if line.startswith("Max open files")))


def test_the_gateway_raises_its_open_file_limit_to_the_hard_one(tmp_path, upstreams) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard open-file limit here ({hard}) leaves nothing to raise")
    path = tmp_path / "config.json"
    write_config(path, config([route("m", target("a", upstreams["a"].base_url))], _TIERS))
    fits = (hard - runtime.FILES_SPARE) // runtime.FILES_PER_CONNECTION
    # Started at a soft limit of 1,024 (as a container runtime may start it), with one
    # connection more than the hard limit holds.
    gateway = GatewayProcess(
        "--config-file",
        str(path),
        "--max-connections",
        str(fits + 1),
        preexec_fn=_soft_file_limit(1024),
    ).start()
    try:
        soft = _soft_limit_of(gateway.proc.pid)
    finally:
        output = gateway.stop()
    assert soft == hard
    assert f"below the {runtime.files_needed(fits + 1)} that --max-connections {fits + 1}" in output
    assert f"lower --max-connections to {fits}" in output


def test_a_limit_that_fits_is_raised_without_a_warning(tmp_path, upstreams) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard open-file limit here ({hard}) leaves nothing to raise")
    path = tmp_path / "config.json"
    write_config(path, config([route("m", target("a", upstreams["a"].base_url))], _TIERS))
    gateway = GatewayProcess(
        "--config-file", str(path), "--max-connections", "100", preexec_fn=_soft_file_limit(512)
    ).start()
    try:
        soft = _soft_limit_of(gateway.proc.pid)
    finally:
        output = gateway.stop()
    assert soft == hard
    assert "open-file limit" not in output


def test_files_needed_counts_two_descriptors_a_connection_and_a_spare() -> None:
    assert runtime.files_needed(10_000) == 20_000 + runtime.FILES_SPARE


def _lowest_free_descriptor() -> int:
    probe = os.open(os.devnull, os.O_RDONLY)  # a new file takes the lowest free number
    os.close(probe)
    return probe


def test_an_upstream_connect_without_a_free_file_is_a_503_that_blames_no_target(
    start_gateway, upstreams
) -> None:
    a, b = upstreams["a"], upstreams["b"]
    gateway = start_gateway(
        config([route("m", target("a", a.base_url), target("b", b.base_url))], _TIERS)
    )
    client = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    client.request("GET", "/readyz")  # the connection is accepted before files run out
    assert client.getresponse().read() is not None
    body = json.dumps({"model": "m", "messages": MESSAGES})
    headers = {"authorization": f"Bearer {STARTUP_KEY}", "content-type": "application/json"}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # No file can be opened in this process (the gateway's thread included) until it is back.
    resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_descriptor(), hard))
    try:
        client.request("POST", "/v1/chat/completions", body, headers)
        answer = client.getresponse()
        status, retry_after, error = answer.status, answer.getheader("retry-after"), answer.read()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        client.close()
    assert status == 503 and retry_after == "1"
    assert json.loads(error)["error"]["code"] == "gateway_out_of_files"
    assert not a.received and not b.received  # no failover: b would have fared no better
    metrics = httpx.get(gateway.url + "/metrics").text
    assert re.search(
        r'tiergate_gateway_upstream_attempts_total\{outcome="out_of_files",route="m",target="\w"\} 1\.0',
        metrics,
    )
    assert not re.search(r'tiergate_gateway_circuit_state\{route="m",target="\w"\} 1\.0', metrics)
    reply = openai.OpenAI(base_url=gateway.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    assert reply.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
