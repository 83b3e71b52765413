"""The Redis client limits and budgets use, built from the gateway's settings.

One URL names the deployment, as platform teams run it:

- ``redis://[user:password@]host:port[/db]``, ``rediss://...`` (TLS), ``unix:///path``
- ``redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/db]``: the master
  is asked of the sentinels and followed through a failover; ``rediss+sentinel://`` speaks TLS
  to the sentinels and the master. The user and password are the master's.
- ``redis+cluster://[user:password@]host:port[,host:port...]``: Redis Cluster, the nodes given
  are where discovery starts; ``rediss+cluster://`` speaks TLS. Every script touches the keys
  of one tier, hash-tagged ``{tier}``, so it runs on the one node holding that slot.

redis-py's connection pools raise once ``max_connections`` are in use (a burst of calls then
got ``503 limits_unavailable`` from a healthy Redis); here every command first waits for one
of ``max_connections`` slots, so a burst queues for a connection instead.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["RedisClient", "RedisOptions", "RedisScript", "RedisTarget", "connect", "parse_url"]

_PLAIN_SCHEMES = {"redis": False, "rediss": True}
_SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL names (without its password in any message)."""

    mode: str  # standalone | sentinel | cluster
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster seed nodes
    master: str = ""  # the sentinels' name for the master
    db: int = 0
    username: str | None = None
    password: str | None = None


def _schemes() -> str:
    return ", ".join(
        f"{s}://" for s in (*_PLAIN_SCHEMES, "unix", *_SENTINEL_SCHEMES, *_CLUSTER_SCHEMES)
    )


def _nodes(netloc: str, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
    hosts = netloc.rpartition("@")[2]
    found: list[tuple[str, int]] = []
    for item in hosts.split(","):
        match = _HOST_PORT.match(item.strip())
        if match is None:
            raise ValueError(f"redis URL: {what} {item.strip()!r} is not host[:port]")
        port = int(match["port"] or default_port)
        if not 1 <= port <= 65535:
            raise ValueError(f"redis URL: {what} port {port} is out of range")
        found.append((match["host"].strip("[]"), port))
    return tuple(found)


def parse_url(url: str) -> RedisTarget:
    """Check a Redis URL; a ``ValueError`` names what is wrong, never the password."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in _PLAIN_SCHEMES or scheme == "unix":
        if scheme != "unix" and not urlsplit(url).hostname:
            raise ValueError(f"redis URL: {scheme}:// needs a host")
        return RedisTarget("standalone", _PLAIN_SCHEMES.get(scheme, False))
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if scheme in _SENTINEL_SCHEMES:
        nodes = _nodes(parts.netloc, 26379, "sentinel")
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise ValueError(
                f"redis URL: {scheme}:// needs the master's name as its path: "
                f"{scheme}://host:26379/<master name>[/db]"
            )
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"redis URL: database {path[1]!r} is not a number")
        db = int(path[1]) if len(path) == 2 else 0
        tls = _SENTINEL_SCHEMES[scheme]
        return RedisTarget("sentinel", tls, nodes, unquote(path[0]), db, username, password)
    if scheme in _CLUSTER_SCHEMES:
        nodes = _nodes(parts.netloc, 6379, "cluster node")
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("redis URL: Redis Cluster has only database 0")
        return RedisTarget(
            "cluster", _CLUSTER_SCHEMES[scheme], nodes, username=username, password=password
        )
    raise ValueError(
        f"redis URL: unknown scheme {scheme + '://' if scheme else '(none)'}; use one of {_schemes()}"
    )


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """How to reach Redis: the URL and the settings around it (see ``Settings``)."""

    url: str
    max_connections: int = 50
    timeout_seconds: float = 2.0  # to connect, and for each command's answer
    tls_ca_file: Path | None = None  # CA bundle for TLS; the system's when None


class RedisScript:
    """A Lua script that waits for a connection slot, then runs with EVALSHA (loaded on first use)."""

    __slots__ = ("_script", "_slots")

    def __init__(self, script: Any, slots: asyncio.Semaphore) -> None:
        self._script = script
        self._slots = slots

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        async with self._slots:
            return await self._script(keys=keys, args=args)


class RedisClient:
    """A redis-py client (standalone, Sentinel or Cluster) running at most ``max_connections``
    commands at once."""

    def __init__(self, client: Any, target: RedisTarget, max_connections: int) -> None:
        from redis.exceptions import RedisError

        self.client = client
        self.target = target
        self.slots = asyncio.Semaphore(max_connections)
        # What a call to Redis raises when Redis is unreachable or refuses.
        self.errors: tuple[type[BaseException], ...] = (RedisError, OSError)

    def register_script(self, source: str) -> RedisScript:
        return RedisScript(self.client.register_script(source), self.slots)

    async def execute(self, *command: Any) -> Any:
        """One plain command (for inspection: not on the hot path)."""
        async with self.slots:
            return await self.client.execute_command(*command)

    async def aclose(self) -> None:
        await self.client.aclose()


def _tls_kwargs(target: RedisTarget, options: RedisOptions) -> dict[str, Any]:
    if not target.tls or options.tls_ca_file is None:
        return {}
    return {"ssl_ca_certs": str(options.tls_ca_file)}


def connect(options: RedisOptions) -> RedisClient:
    """A client for ``options.url`` (connections are made on first use)."""
    # Imported only when used: redis costs ~0.1 s of start-up.
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    target = parse_url(options.url)
    timeouts: dict[str, Any] = {
        "socket_timeout": options.timeout_seconds,
        "socket_connect_timeout": options.timeout_seconds,
    }
    tls = _tls_kwargs(target, options)
    client: Any
    if target.mode == "standalone":
        pool = ConnectionPool.from_url(
            options.url, max_connections=options.max_connections, **timeouts, **tls
        )
        client = Redis.from_pool(pool)
    elif target.mode == "sentinel":
        sentinel_tls = {"ssl": True, **tls} if target.tls else {}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes), sentinel_kwargs={**timeouts, **sentinel_tls}, **timeouts
        )
        client = sentinel.master_for(
            target.master,
            db=target.db,
            username=target.username,
            password=target.password,
            max_connections=options.max_connections,
            **({"ssl": True, **tls} if target.tls else {}),
        )
    else:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            # Per node; the semaphore keeps the whole client below it.
            max_connections=options.max_connections,
            **timeouts,
            **({"ssl": True, **tls} if target.tls else {}),
        )
    return RedisClient(client, target, options.max_connections)
