"""Limits and budgets shared through a real redis-server, across gateway processes and workers."""

from __future__ import annotations

import re
import time

import httpx
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
from tiergate_contract import Limits

pytestmark = pytest.mark.redis
MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": f"Bearer {STARTUP_KEY}"}


def limited_config(tmp_path, upstreams, redis_url, tier_name, *, requests_per_minute):
    """A one-route config whose tier has a requests/min limit, in a flushed Redis."""
    import redis as sync_redis

    path = tmp_path / "config.json"
    write_config(
        path,
        config(
            [route("m", target("a", upstreams["a"].base_url))],
            [
                tier(
                    tier_name,
                    STARTUP_KEY,
                    ["m"],
                    limits=Limits(requests_per_minute=requests_per_minute),
                )
            ],
        ),
    )
    sync_redis.Redis.from_url(redis_url).flushdb()
    return path


def test_limits_hold_across_two_gateway_processes(redis_url, upstreams, tmp_path, credentials_dir):
    path = limited_config(tmp_path, upstreams, redis_url, "shared", requests_per_minute=5)
    args = (
        "--config-file",
        str(path),
        "--credentials-dir",
        str(credentials_dir),
        "--redis-url",
        redis_url,
    )
    one, two = GatewayProcess(*args).start(), GatewayProcess(*args).start()
    try:
        statuses = []
        for _ in range(4):
            for gw in (one, two):
                statuses.append(
                    httpx.post(
                        gw.url + "/v1/chat/completions",
                        json={"model": "m", "messages": MSG},
                        headers=AUTH,
                    ).status_code
                )
        assert statuses.count(200) == 5
        assert statuses.count(429) == 3
        assert len(upstreams["a"].received) == 5
    finally:
        one.stop()
        two.stop()


def test_workers_share_port_limits_and_metrics(redis_url, upstreams, tmp_path, credentials_dir):
    path = limited_config(tmp_path, upstreams, redis_url, "w", requests_per_minute=4)
    gw = GatewayProcess(
        "--config-file",
        str(path),
        "--credentials-dir",
        str(credentials_dir),
        "--redis-url",
        redis_url,
        "--workers",
        "2",
    ).start()
    try:
        statuses = []
        for _ in range(8):
            # A new connection each time, so the kernel spreads them over both workers.
            with httpx.Client() as client:
                statuses.append(
                    client.post(
                        gw.url + "/v1/chat/completions",
                        json={"model": "m", "messages": MSG},
                        headers=AUTH,
                    ).status_code
                )
        assert sorted(statuses) == [200] * 4 + [429] * 4
        # Any worker answers /metrics with the sum over all workers (each flushes every second).
        deadline = time.monotonic() + 5
        while True:
            text = httpx.get(gw.url + "/metrics").text
            found = re.findall(
                r'tiergate_gateway_requests_total\{endpoint="chat",[^}]*\} (\S+)', text
            )
            if sum(float(v) for v in found) == 8.0:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        # A worker that dies takes the pod down (non-zero exit) instead of serving half.
        import psutil

        assert gw.proc is not None
        workers = psutil.Process(gw.proc.pid).children()
        assert len(workers) == 2
        workers[0].kill()
        assert gw.proc.wait(15) != 0
        assert not workers[1].is_running() or workers[1].status() == psutil.STATUS_ZOMBIE
    finally:
        output = gw.stop()
    assert output.count("gateway listening") == 2


def test_redis_down_fails_closed_with_a_clear_503(upstreams, start_gateway):
    import shutil
    import subprocess
    import time

    from tests.support.gateway import free_port

    port = free_port()
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis as sync_redis

        client = sync_redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except sync_redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        gw = start_gateway(
            config(
                [route("m", target("a", upstreams["a"].base_url))],
                [
                    tier(
                        "t",
                        STARTUP_KEY,
                        ["m"],
                        limits=Limits(requests_per_minute=100),
                        budget=("1", "2"),
                    )
                ],
            ),
            redis_url=f"redis://127.0.0.1:{port}/0",
        )
        body = {"model": "m", "messages": MSG}
        assert (
            httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 200
        )
    finally:
        proc.terminate()
        proc.wait(10)
    down = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH)
    assert down.status_code == 503
    error = down.json()["error"]
    assert (error["code"], error["type"]) == ("limits_unavailable", "server_error")
    assert down.headers["retry-after"] == "1"
    assert len(upstreams["a"].received) == 1  # nothing went upstream unaccounted
    assert httpx.get(gw.url + "/healthz").status_code == 200
