"""Redis as platform teams run it, each a real redis-server on 127.0.0.1 in front of a real
gateway and the openai SDK: TLS (rediss://), a sentinel (redis+sentinel://, followed through a
failover) and a three-node cluster (redis+cluster://, every tier's keys in one slot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis as sync_redis

from tests.support.gateway import STARTUP_KEY, config, route, target, tier
from tests.support.redis_servers import (
    RedisServer,
    TlsFiles,
    start_cluster,
    start_redis,
    start_sentinel,
    tls_files,
)
from tiergate_contract import Limits
from tiergate_gateway.leases import RedisLeases
from tiergate_gateway.redis_client import RedisOptions, connect

pytestmark = pytest.mark.redis
MSG = [{"role": "user", "content": "hi"}]


def _config(upstream_url: str, names: list[str], keys: list[str]):  # type: ignore[no-untyped-def]
    return config(
        [route("m", target("a", upstream_url))],
        [
            tier(name, key, ["m"], limits=Limits(requests_per_minute=2), budget=("1", "2"))
            for name, key in zip(names, keys, strict=True)
        ],
    )


def _sdk(url: str, key: str = STARTUP_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _two_then_refused(url: str, key: str = STARTUP_KEY) -> None:
    client = _sdk(url, key)
    for _ in range(2):
        assert client.chat.completions.create(model="m", messages=MSG).choices  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    assert "requests per minute" in str(refused.value)


def _nothing_held(options: RedisOptions, tiers: list[str]) -> None:
    async def check() -> None:
        client = connect(options)
        try:
            leases = RedisLeases(client)
            for name in tiers:
                assert await leases.held(name) == (0, 0), name
        finally:
            await client.aclose()

    asyncio.run(check())


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return tls_files(tmp_path / "tls")


@pytest.fixture
def tls_redis(tmp_path: Path, tls: TlsFiles) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis-tls", tls=tls)
    yield server
    server.stop()


def test_tls_with_the_ca_serves_and_limits(upstreams, start_gateway, tls, tls_redis):
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    gw = start_gateway(
        _config(upstreams["a"].base_url, ["t"], [STARTUP_KEY]),
        redis_url=url,
        redis_tls_ca_file=tls.ca,
    )
    _two_then_refused(gw.url)
    _nothing_held(RedisOptions(url, tls_ca_file=tls.ca), ["t"])


def test_tls_without_trusting_the_servers_ca_fails_closed(upstreams, start_gateway, tls_redis):
    # The system's CAs do not know the throwaway one: no call goes upstream unaccounted.
    gw = start_gateway(
        _config(upstreams["a"].base_url, ["t"], [STARTUP_KEY]),
        redis_url=f"rediss://127.0.0.1:{tls_redis.port}/0",
    )
    with pytest.raises(openai.InternalServerError) as down:
        _sdk(gw.url).chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    assert down.value.status_code == 503
    assert down.value.code == "limits_unavailable"
    assert upstreams["a"].received == []


def test_a_plain_url_to_a_tls_port_fails_closed(upstreams, start_gateway, tls_redis):
    gw = start_gateway(
        _config(upstreams["a"].base_url, ["t"], [STARTUP_KEY]),
        redis_url=f"redis://127.0.0.1:{tls_redis.port}/0",
        redis_timeout_seconds=0.5,
    )
    with pytest.raises(openai.InternalServerError):
        _sdk(gw.url).chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    assert upstreams["a"].received == []


@pytest.fixture
def sentinel_pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, RedisServer]]:
    master = start_redis(tmp_path / "master")
    replica = start_redis(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    sentinel = start_sentinel(tmp_path / "sentinel", master)
    yield master, replica, sentinel
    for server in (sentinel, replica, master):
        server.stop()


def test_sentinel_finds_the_master_and_follows_a_failover(upstreams, start_gateway, sentinel_pair):
    master, replica, sentinel = sentinel_pair
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/tiergate/0"
    gw = start_gateway(_config(upstreams["a"].base_url, ["t"], [STARTUP_KEY]), redis_url=url)
    _two_then_refused(gw.url)
    # The limits live on the master the sentinel named, and reached its replica.
    old = sync_redis.Redis(port=master.port)
    assert old.exists("tiergate:limits:{t}:req") == 1
    assert old.wait(1, 5000) == 1

    sync_redis.Redis(port=sentinel.port).execute_command("SENTINEL", "FAILOVER", "tiergate")
    deadline = time.monotonic() + 20
    while (
        sync_redis.Redis(port=replica.port).info("replication")["role"] != "master"
        or old.info("replication")["role"] != "slave"
    ):
        assert time.monotonic() < deadline, "the sentinel did not fail over"
        time.sleep(0.1)
    # The gateway follows: the promoted replica answers, with the request bucket it replicated.
    client = _sdk(gw.url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
            pytest.fail("the replicated request bucket was lost in the failover")
        except openai.RateLimitError:
            break  # answered by the new master, with the old master's state
        except openai.InternalServerError:
            assert time.monotonic() < deadline, "the gateway never reached the new master"
            time.sleep(0.2)
    assert sync_redis.Redis(port=replica.port).exists("tiergate:limits:{t}:req") == 1
    _nothing_held(RedisOptions(url), ["t"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisServer]:
    first = start_cluster(tmp_path / "cluster")
    yield first
    first.stop()


def test_cluster_runs_each_tiers_scripts_in_its_own_slot(upstreams, start_gateway, cluster):
    names = [f"tier-{index}" for index in range(6)]
    keys = [f"sk-cluster-key-{index:04d}" for index in range(6)]
    url = f"redis+cluster://127.0.0.1:{cluster.port}"
    gw = start_gateway(_config(upstreams["a"].base_url, names, keys), redis_url=url)
    for key in keys:
        _two_then_refused(gw.url, key)
    _nothing_held(RedisOptions(url), names)
    # The tiers are spread over the nodes, each tier's keys on one of them.
    holders: dict[str, set[int]] = {name: set() for name in names}
    for server in [cluster, *cluster.extra]:
        for raw in sync_redis.Redis(port=server.port).keys("tiergate:*"):
            key = raw.decode()
            holders[key[key.index("{") + 1 : key.index("}")]].add(server.port)
    assert all(len(ports) == 1 for ports in holders.values()), holders
    assert len(set().union(*holders.values())) > 1, holders
