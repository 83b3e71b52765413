"""Streams that break, clients that leave, hot reload, readiness and SIGTERM draining."""

from __future__ import annotations

import os
import signal
import threading
import time
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
from tiergate_contract import canonical_json

MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}


def wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_reset_mid_stream_reaches_client_as_error_and_gateway_survives(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    a.reset("reset_mid_stream")
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url), target("b", b.base_url, priority=1))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    seen: list[str | None] = []

    def consume() -> None:
        for chunk in client.chat.completions.create(model="m", messages=MSG, stream=True):
            seen.append(chunk.choices[0].delta.content)

    with pytest.raises(openai.APIError) as excinfo:
        consume()
    assert seen == ["a:"]  # the first byte was sent, so no failover after it
    assert "broke off" in str(excinfo.value)
    assert len(b.received) == 0
    a.reset("ok")
    assert (
        client.chat.completions.create(model="m", messages=MSG).choices[0].message.content
        == "hello from a"
    )


def test_stream_fails_over_before_first_byte(upstreams, start_gateway):
    a, b = upstreams["a"], upstreams["b"]
    a.reset("status", status=502)
    gw = start_gateway(
        config(
            [route("m", target("a", a.base_url), target("b", b.base_url, priority=1))],
            [tier("t", STARTUP_KEY, ["m"])],
        )
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="m", messages=MSG, stream=True)
        if c.choices
    )
    assert text == "b: part0 part1 part2"


def test_client_disconnect_cancels_upstream(upstreams, start_gateway):
    a = upstreams["a"]
    a.reset("hang_stream")
    gw = start_gateway(
        config([route("m", target("a", a.base_url))], [tier("t", STARTUP_KEY, ["m"])])
    )
    with (
        httpx.Client(base_url=gw.url, headers=AUTH) as client,
        client.stream(
            "POST", "/v1/chat/completions", json={"model": "m", "messages": MSG, "stream": True}
        ) as resp,
    ):
        assert resp.status_code == 200
        first = next(resp.iter_raw())
        assert b"a:" in first
    assert a.disconnected.wait(5), "the upstream call was not cancelled"
    metrics = httpx.get(gw.url + "/metrics").text
    assert (
        'tiergate_gateway_upstream_attempts_total{outcome="ok",route="m",target="a"} 1.0' in metrics
    )


def test_hot_reload_and_rejected_config_keeps_serving(upstreams, start_gateway, tmp_path):
    a, b = upstreams["a"], upstreams["b"]
    tiers = [tier("t", STARTUP_KEY, ["m"])]
    gw = start_gateway(config([route("m", target("a", a.base_url))], tiers))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=STARTUP_KEY, max_retries=0)
    assert (
        client.chat.completions.create(model="m", messages=MSG).choices[0].message.content
        == "hello from a"
    )
    new = config([route("m", target("b", b.base_url))], tiers)
    write_config(tmp_path / "config.json", new)
    wait_for(
        lambda: httpx.get(gw.url + "/readyz").json()["generation"] == new.generation, what="reload"
    )
    assert (
        client.chat.completions.create(model="m", messages=MSG).choices[0].message.content
        == "hello from b"
    )

    bad_version = canonical_json(new).replace(b"gateway-config/v1", b"gateway-config/v9")
    for count, broken in enumerate(
        (
            bad_version,
            b"{truncated",
            b'{"version": "tiergate.dev/gateway-config/v1", "generation": ""}',
        ),
        start=1,
    ):
        write_config(tmp_path / "config.json", broken)
        wait_for(lambda c=count: _rejected(gw) == c, what=f"rejection {count}")
        assert httpx.get(gw.url + "/readyz").json()["generation"] == new.generation
        assert (
            client.chat.completions.create(model="m", messages=MSG).choices[0].message.content
            == "hello from b"
        )


def _rejected(gw) -> float:
    for line in httpx.get(gw.url + "/metrics").text.splitlines():
        if line.startswith("tiergate_gateway_config_rejected_total "):
            return float(line.split()[1])
    return 0.0


def test_kubernetes_symlink_swap_and_readiness(upstreams, start_gateway, tmp_path):
    a, b = upstreams["a"], upstreams["b"]
    tiers = [tier("t", STARTUP_KEY, ["m"])]
    mount = tmp_path / "mount"
    mount.mkdir()
    link = mount / "config.json"
    gw = start_gateway(None, path=link)
    assert httpx.get(gw.url + "/readyz").status_code == 503
    assert (
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "m"}, headers=AUTH).status_code
        == 503
    )

    def publish(version: str, cfg) -> None:
        data_dir = mount / f"..{version}"
        data_dir.mkdir()
        (data_dir / "config.json").write_bytes(canonical_json(cfg))
        tmp_link = mount / "..data_tmp"
        os.symlink(data_dir.name, tmp_link)
        os.replace(tmp_link, mount / "..data")
        if not link.is_symlink():
            os.symlink("..data/config.json", link)

    first = config([route("m", target("a", a.base_url))], tiers)
    publish("2024_01", first)
    wait_for(lambda: httpx.get(gw.url + "/readyz").status_code == 200, what="ready")
    second = config([route("m", target("b", b.base_url))], tiers)
    publish("2024_02", second)
    wait_for(
        lambda: httpx.get(gw.url + "/readyz").json()["generation"] == second.generation, what="swap"
    )
    reply = httpx.post(
        gw.url + "/v1/chat/completions", json={"model": "m", "messages": MSG}, headers=AUTH
    )
    assert reply.json()["choices"][0]["message"]["content"] == "hello from b"


def test_sigterm_drains_an_inflight_stream(upstreams, tmp_path, credentials_dir):
    a = upstreams["a"]
    a.reset("slow_stream", delay=0.2, chunks=5)
    path = tmp_path / "config.json"
    write_config(
        path, config([route("m", target("a", a.base_url))], [tier("t", STARTUP_KEY, ["m"])])
    )
    proc = GatewayProcess(
        "--config-file",
        str(path),
        "--credentials-dir",
        str(credentials_dir),
        "--grace-seconds",
        "10",
    ).start()
    body: list[bytes] = []
    done = threading.Event()

    def consume() -> None:
        with httpx.stream(
            "POST",
            proc.url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": "m", "messages": MSG, "stream": True},
        ) as resp:
            body.extend(resp.iter_raw())
        done.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert a.received_event.wait(5)
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert done.wait(10)
    reader.join()
    data = b"".join(body)
    assert data.count(b" part") == 5
    assert data.rstrip().endswith(b"data: [DONE]")
    assert proc.proc.wait(10) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(proc.url + "/healthz")
    assert STARTUP_KEY not in proc.stop()


def test_cli_rejects_bad_settings(tmp_path: Path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tiergate_gateway", "--workers", "2", "--config-file", "x.json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "redis_url" in result.stderr


def test_in_process_gateway_from_a_config_object(upstreams, credentials_dir):
    from tests.support.gateway import GatewayThread
    from tiergate_gateway.settings import Settings

    cfg = config(
        [route("m", target("a", upstreams["a"].base_url))], [tier("t", STARTUP_KEY, ["m"])]
    )
    gw = GatewayThread(Settings(port=0, credentials_dir=credentials_dir), cfg).start()
    try:
        assert httpx.get(gw.url + "/readyz").json()["generation"] == cfg.generation
        reply = httpx.post(
            gw.url + "/v1/chat/completions", json={"model": "m", "messages": MSG}, headers=AUTH
        )
        assert reply.json()["choices"][0]["message"]["content"] == "hello from a"
    finally:
        gw.stop()


def test_settings_from_environment_and_flags(monkeypatch, tmp_path):
    from tiergate_gateway.__main__ import parse_args

    for name, value in {
        "HOST": "0.0.0.0",
        "PORT": "9999",
        "CONFIGMAP": "ns/gw",
        "REDIS_URL": "redis://r:6379/0",
        "WORKERS": "2",
        "CREDENTIALS_DIR": str(tmp_path),
        "GRACE_SECONDS": "7",
    }.items():
        monkeypatch.setenv(f"TIERGATE_GATEWAY_{name}", value)
    settings, is_worker = parse_args([])
    assert (
        settings.host,
        settings.port,
        settings.configmap,
        settings.redis_url,
        settings.workers,
    ) == ("0.0.0.0", 9999, "ns/gw", "redis://r:6379/0", 2)
    assert (settings.credentials_dir, settings.grace_seconds, is_worker) == (tmp_path, 7.0, False)
    assert (
        parse_args(["--port", "1234", "--workers", "1"])[0].port == 1234
    )  # flags win over the environment
    monkeypatch.delenv("TIERGATE_GATEWAY_CONFIGMAP")
    with pytest.raises(SystemExit):
        parse_args([])
