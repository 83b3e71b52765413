"""Fixtures for the gateway tests: mock upstreams, gateways, a real redis-server (emptied for
each test that takes ``redis`` or ``leases``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayThread, free_port, write_config
from tests.support.upstream import MockUpstream
from tiergate_contract import GatewayConfig
from tiergate_gateway.leases import RedisLeases
from tiergate_gateway.redis_client import RedisClient, RedisOptions, connect
from tiergate_gateway.settings import Settings


@pytest.fixture(scope="session")
def _upstream_pool() -> Iterator[dict[str, MockUpstream]]:
    pool = {name: MockUpstream(name).start() for name in ("a", "b", "c", "p")}
    yield pool
    for upstream in pool.values():
        upstream.stop()


@pytest.fixture
def upstreams(_upstream_pool: dict[str, MockUpstream]) -> dict[str, MockUpstream]:
    """Four real upstream servers (a, b, c, p), reset to answer normally."""
    for upstream in _upstream_pool.values():
        upstream.reset(
            "ok", prompt_tokens=10, completion_tokens=5, delay=0.0, chunks=3, status=500, headers={}
        )
    return _upstream_pool


@pytest.fixture
def credentials_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "credentials"
    for secret, key, value in (
        ("provider", "api-key", "target-secret-1"),
        ("acme", "token", "acme-tier-secret"),
    ):
        (folder / secret).mkdir(parents=True, exist_ok=True)
        (folder / secret / key).write_text(value + "\n")
    return folder


@pytest.fixture
def start_gateway(tmp_path: Path, credentials_dir: Path) -> Iterator[Callable[..., GatewayThread]]:
    """Start a gateway serving ``cfg`` from a hot-reloaded file; stopped after the test."""
    started: list[GatewayThread] = []

    def start(
        cfg: GatewayConfig | None, path: Path | None = None, **overrides: Any
    ) -> GatewayThread:
        path = path or tmp_path / "config.json"
        if cfg is not None:
            write_config(path, cfg)
        settings = Settings(
            port=0,
            config_file=path,
            credentials_dir=credentials_dir,
            reload_interval_seconds=0.05,
            grace_seconds=5,
            **overrides,
        )
        gateway = GatewayThread(settings).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server of its own on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the session's redis-server, its database emptied first."""
    client = connect(RedisOptions(redis_url, timeout_seconds=5.0))
    await client.execute("FLUSHDB")
    yield client
    await client.aclose()


@pytest.fixture
def leases(redis: RedisClient) -> RedisLeases:
    return RedisLeases(redis, owner="test")
