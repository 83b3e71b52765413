"""The operator's readiness probe (TIERGATE_READINESS): 200 once the operator can serve.

Ready means: the reconciler loop runs, and either every watched kind has finished its
initial listing, or this replica stands by (kopf peering paused it for a replica of
higher priority; it must be Ready too, or its PodDisruptionBudget would block drains).

The listing signal: kopf calls no handler before the initial listing of every indexed
kind (ModelRoute, ApiKeyTier, Secret, the child kinds) is complete, so the first call
of a handler proves it. A handler needs an object to be called for, and the watched
kinds may all be empty; the tiergate CRDs are not, wherever the operator can serve.
So ``handlers`` watches them too and reports each here (``crd_observed``): both seen
Established means both kinds are served and every kind is listed.

The standby signal: kopf says nothing when it starts a replica paused, so while the
replica is not ready yet, the probe reads the ClusterKopfPeering itself and applies
kopf's rule (a live peer of higher priority pauses this one).

Once ready, a replica stays ready while its loop runs: an API error later is not a
reason to take it out (nothing routes to it; only rollouts and drains read it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from kubernetes import client as k8s_client

from tiergate_operator.registry import CRD_KINDS
from tiergate_operator.settings import ReadinessEndpoint, SettingsError

__all__ = [
    "TIERGATE_CRDS",
    "PeeringStandby",
    "Readiness",
    "ReadinessServer",
    "Verdict",
    "higher_priority_peer_alive",
    "is_established",
    "serve_readiness",
]

logger = logging.getLogger("tiergate.readiness")

TIERGATE_CRDS = frozenset(kind.resource for kind in CRD_KINDS)
StandbyCheck = Callable[[], Awaitable[bool]]


def is_established(crd: Mapping[str, Any]) -> bool:
    """Whether a CustomResourceDefinition is served (its Established condition is True)."""
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def higher_priority_peer_alive(
    peering: Mapping[str, Any], priority: int, now: datetime | None = None
) -> bool:
    """kopf's rule: a live peer of a higher priority in the peering object pauses this one.

    ``status`` maps each peer's identity to its ``priority``, ``lifetime`` (seconds) and
    ``lastseen``; a peer is alive until ``lastseen + lifetime``.
    """
    now = now or datetime.now(UTC)
    for peer in (peering.get("status") or {}).values():
        if not isinstance(peer, Mapping):
            continue
        try:
            higher = int(peer.get("priority", 0)) > priority
            seen = datetime.fromisoformat(str(peer["lastseen"]))
            lifetime = timedelta(seconds=int(peer.get("lifetime", 60)))
        except (KeyError, TypeError, ValueError):
            continue  # not a peer kopf would count either
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        if higher and seen + lifetime > now:
            return True
    return False


@dataclass(frozen=True)
class Verdict:
    ready: bool
    waiting_for: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        return {"ready": True} if self.ready else {"ready": False, "waiting_for": self.waiting_for}


@dataclass
class Readiness:
    """What the probe answers: a state machine fed by the handlers and the peering check."""

    loop: asyncio.Task[None] | None = None  # the reconciler's, once started
    crds: frozenset[str] = TIERGATE_CRDS
    established: set[str] = field(default_factory=set)
    standby: bool = False
    standby_problem: str | None = None
    ready_once: bool = False

    def crd_observed(self, name: str, established: bool) -> None:
        """kopf called the CRD handler: every indexed kind has been listed."""
        if name in self.crds:
            (self.established.add if established else self.established.discard)(name)

    def standby_observed(self, standby: bool, problem: str | None = None) -> None:
        self.standby, self.standby_problem = standby, problem

    @property
    def listed(self) -> bool:
        return self.established >= self.crds

    def verdict(self) -> Verdict:
        if self.loop is None or self.loop.done():
            return Verdict(False, ("the reconciler loop to run",))
        if self.ready_once or self.listed or self.standby:
            self.ready_once = True
            return Verdict(True)
        waiting = [
            "the initial listing of every watched kind (kopf holds its handlers until then)",
            *(
                f"CustomResourceDefinition {crd} to be Established"
                for crd in sorted(self.crds - self.established)
            ),
        ]
        if self.standby_problem:
            waiting.append(f"the peering check: {self.standby_problem}")
        return Verdict(False, tuple(waiting))


class PeeringStandby:
    """Is this replica paused by kopf peering? Reads the ClusterKopfPeering (at most every
    ``interval`` seconds) through the kubernetes client, in a thread."""

    def __init__(
        self,
        configuration: k8s_client.Configuration,
        name: str,
        priority: int,
        interval: float = 5.0,
    ) -> None:
        self.name, self.priority, self.interval = name, priority, interval
        self._api = k8s_client.CustomObjectsApi(k8s_client.ApiClient(configuration))
        self._checked_at: float | None = None
        self._standby = False

    def _read(self) -> dict[str, Any]:
        found = self._api.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", self.name, _request_timeout=5
        )
        return found if isinstance(found, dict) else {}

    async def __call__(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self._checked_at is None or now - self._checked_at >= self.interval:
            self._checked_at = now
            peering = await asyncio.to_thread(self._read)
            self._standby = higher_priority_peer_alive(peering, self.priority)
        return self._standby


class ReadinessServer:
    """A small aiohttp server answering GET ``endpoint.path`` with the readiness verdict."""

    def __init__(
        self,
        endpoint: ReadinessEndpoint,
        readiness: Readiness,
        standby_check: StandbyCheck | None = None,
    ) -> None:
        self.endpoint, self.readiness, self.standby_check = endpoint, readiness, standby_check
        app = web.Application()
        app.router.add_get(endpoint.path, self._answer)
        self._runner = web.AppRunner(app, access_log=None)

    async def _check_standby(self) -> None:
        if self.standby_check is None or self.readiness.ready_once:
            return
        try:
            standby = await asyncio.wait_for(self.standby_check(), timeout=10)
        except Exception as error:  # any failure means: not known yet
            self.readiness.standby_observed(False, f"{type(error).__name__}: {error}"[:300])
        else:
            self.readiness.standby_observed(standby)

    async def _answer(self, _: web.Request) -> web.Response:
        await self._check_standby()
        verdict = self.readiness.verdict()
        return web.json_response(verdict.body(), status=200 if verdict.ready else 503)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.endpoint.host, self.endpoint.port)
        await site.start()
        logger.info(
            "readiness probe on http://%s:%d%s",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.path,
        )

    async def stop(self) -> None:
        await self._runner.cleanup()


async def serve_readiness(
    readiness: Readiness,
    endpoint: ReadinessEndpoint | None,
    configuration: k8s_client.Configuration,
    peering_name: str | None,
    priority: int,
) -> ReadinessServer | None:
    """Serve ``readiness`` at ``endpoint`` (None: no server); with ``peering_name``, a replica
    that kopf peering pauses reports ready. A port that cannot be bound is a SettingsError."""
    if endpoint is None:
        return None
    standby = PeeringStandby(configuration, peering_name, priority) if peering_name else None
    server = ReadinessServer(endpoint, readiness, standby)
    try:
        await server.start()
    except OSError as error:
        await server.stop()
        raise SettingsError(
            f"TIERGATE_READINESS: cannot listen on {endpoint.host}:{endpoint.port} ({error})"
        ) from None
    return server
