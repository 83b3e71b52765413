"""The Redis URL and settings: every mode parsed, every mistake named (never the password)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiergate_gateway.leases as leases
import tiergate_gateway.redis_client as redis_client
from tiergate_gateway.redis_client import RedisOptions, RedisTarget, parse_url
from tiergate_gateway.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://r:6379/0", RedisTarget("standalone", False)),
        ("rediss://:pw@redis.example:6380", RedisTarget("standalone", True)),
        ("unix:///run/redis.sock", RedisTarget("standalone", False)),
        (
            "redis+sentinel://s1:26379,s2,[::1]:26380/mymaster/2",
            RedisTarget(
                "sentinel", False, (("s1", 26379), ("s2", 26379), ("::1", 26380)), "mymaster", 2
            ),
        ),
        (
            "rediss+sentinel://app:s%40cret@s1/main",
            RedisTarget("sentinel", True, (("s1", 26379),), "main", 0, "app", "s@cret"),
        ),
        (
            "redis+cluster://n1:7000,n2:7001",
            RedisTarget("cluster", False, (("n1", 7000), ("n2", 7001))),
        ),
        (
            "rediss+cluster://:pw@n1/",
            RedisTarget("cluster", True, (("n1", 6379),), password="pw"),
        ),
    ],
)
def test_each_mode_is_read_from_the_url(url: str, expected: RedisTarget) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:hunter2@r:6379", "unknown scheme http://; use one of redis://, rediss://"),
        ("r:6379", "unknown scheme (none)"),
        ("redis+sentinel://:hunter2@s1:26379", "needs the master's name as its path"),
        ("redis+sentinel://s1/m/x", "database 'x' is not a number"),
        ("redis+sentinel://s1:99999/m", "sentinel port 99999 is out of range"),
        ("redis+cluster://:hunter2@n1:7000/3", "Redis Cluster has only database 0"),
        ("redis+cluster://n1:x", "cluster node 'n1:x' is not host[:port]"),
        ("rediss://:hunter2@", "rediss:// needs a host"),
    ],
)
def test_a_bad_url_is_named_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="redis URL") as bad:
        parse_url(url)
    assert message in str(bad.value)
    assert "hunter2" not in str(bad.value)


def test_settings_refuse_a_bad_url_and_out_of_range_redis_settings() -> None:
    with pytest.raises(ValueError, match="unknown scheme"):
        Settings(redis_url="redis+cluser://n1:7000")
    with pytest.raises(ValueError, match="redis_max_connections 0"):
        Settings(redis_url="redis://r", redis_max_connections=0)
    with pytest.raises(ValueError, match="redis_timeout_seconds 0"):
        Settings(redis_url="redis://r", redis_timeout_seconds=0)
    with pytest.raises(ValueError, match="lease_margin_seconds -1"):
        Settings(lease_margin_seconds=-1)
    assert Settings().redis_options() is None
    options = Settings(
        redis_url="rediss://r", redis_max_connections=8, redis_tls_ca_file=Path("/ca.pem")
    ).redis_options()
    assert options == RedisOptions("rediss://r", 8, 2.0, Path("/ca.pem"))


def test_redis_flags_and_their_environment_variables(monkeypatch, tmp_path) -> None:
    from tiergate_gateway.__main__ import parse_args

    monkeypatch.setenv("TIERGATE_GATEWAY_REDIS_MAX_CONNECTIONS", "16")
    monkeypatch.setenv("TIERGATE_GATEWAY_REDIS_TLS_CA_FILE", str(tmp_path / "ca.pem"))
    settings, _ = parse_args(
        [
            "--config-file",
            str(tmp_path / "c.json"),
            "--redis-url",
            "redis+sentinel://s1/m",
            "--redis-timeout-seconds",
            "0.5",
            "--lease-margin-seconds",
            "5",
        ]
    )
    assert (
        settings.redis_url,
        settings.redis_max_connections,
        settings.redis_timeout_seconds,
        settings.redis_tls_ca_file,
        settings.lease_margin_seconds,
    ) == ("redis+sentinel://s1/m", 16, 0.5, tmp_path / "ca.pem", 5.0)
    monkeypatch.delenv("TIERGATE_GATEWAY_REDIS_MAX_CONNECTIONS")
    defaults, _ = parse_args(["--config-file", str(tmp_path / "c.json")])
    assert (defaults.redis_max_connections, defaults.lease_margin_seconds) == (50, 30.0)


def test_public_exports() -> None:
    for module in (redis_client, leases):
        for name in module.__all__:
            assert hasattr(module, name), name
