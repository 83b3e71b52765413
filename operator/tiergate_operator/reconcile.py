"""Level-based reconciliation of one namespace: gather -> decide (pure) -> act.

``decide`` rebuilds every gateway of the namespace from all its inputs and
compares the result with what the watches saw live: only objects that differ
are applied, only children nobody wants are deleted, only statuses that changed
are written. ``Reconciler`` runs ``decide`` and acts on it for each namespace
that a watch event marked dirty, retrying failures with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tiergate_contract import GatewayConfig, config_from_configmap
from tiergate_operator.desired import desired_state
from tiergate_operator.drift import holds
from tiergate_operator.kube import KubeApi, KubeError
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import CONFIG_MAP, ROLE, SERVICE_ACCOUNT, PrefixedKeys
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.statuses import StatusChange, desired_statuses
from tiergate_operator.store import NamespaceState, Store

__all__ = ["ActFailed", "Decision", "Reconciler", "StatusChange", "act", "decide"]

logger = logging.getLogger("tiergate.reconcile")

Body = dict[str, Any]


@dataclass(frozen=True)
class Decision:
    apply: tuple[Body, ...] = ()
    delete: tuple[ObjectRef, ...] = ()
    statuses: tuple[StatusChange, ...] = ()

    @property
    def is_noop(self) -> bool:
        return not (self.apply or self.delete or self.statuses)


def _live_configs(state: NamespaceState, keys: PrefixedKeys) -> dict[str, GatewayConfig]:
    """The configs currently applied, per gateway: the 'last good' of each."""
    configs = {}
    for (kind, name), body in state.children.items():
        if kind != CONFIG_MAP.kind:
            continue
        gateway = _gateway_of(body, keys)
        try:
            configs[gateway] = GatewayConfig.model_validate_json(config_from_configmap(body) or b"")
        except ValidationError:
            logger.warning("ConfigMap %s holds no valid gateway config; ignoring it", name)
    return configs


def decide(
    namespace: str, state: NamespaceState, settings: OperatorSettings, now: datetime
) -> Decision:
    previous = _live_configs(state, settings.keys)
    outcome = desired_state(namespace, state, previous, settings)
    desired = {(m["kind"], m["metadata"]["name"]): m for m in outcome.manifests}
    apply = tuple(m for key, m in sorted(desired.items()) if not holds(state.children.get(key), m))
    delete = tuple(
        ObjectRef(kind, namespace, name)
        for (kind, name), body in sorted(state.children.items())
        if (kind, name) not in desired
        and _gateway_of(body, settings.keys) not in outcome.kept_gateways - outcome.planned_gateways
    )
    applying = frozenset(m["metadata"]["name"] for m in apply if m["kind"] == CONFIG_MAP.kind)
    statuses = tuple(desired_statuses(namespace, state, outcome, now, settings.keys, applying))
    return Decision(apply=apply, delete=delete, statuses=statuses)


def _gateway_of(body: Body, keys: PrefixedKeys) -> str:
    return str((body["metadata"].get("labels") or {}).get(keys.gateway_label, ""))


class ActFailed(Exception):
    """Some writes of a decision failed; the others were carried out."""

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__(f"{len(failures)} write(s) failed; first: {failures[0]}")
        self.failures = failures


async def act(
    kube: KubeApi, decision: Decision, now: datetime, concurrency: int = 16
) -> list[Body]:
    """Carry out a decision: configs first, then workloads, deletions and statuses.

    One object's failure (say, a config the API server refuses) does not stop the
    other objects; the failures are raised together, so the namespace is retried.
    Statuses are written only when every object landed, since they describe that.
    Returns what the API server answered: the objects as they now are.
    """
    limit = asyncio.Semaphore(concurrency)
    failures: list[BaseException] = []
    written: list[Body] = []

    async def bounded(call: Awaitable[Body | None]) -> Body | None:
        async with limit:
            return await call

    async def each(calls: Iterable[Awaitable[Body | None]]) -> None:
        results = await asyncio.gather(*(bounded(call) for call in calls), return_exceptions=True)
        for result in results:
            if isinstance(result, KubeError | OSError):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
            elif result:
                written.append(result)

    # What others refer to goes first: a ConfigMap before the workload that reads it (a new
    # pod never starts on a stale config), a Role before its RoleBinding (without it, the
    # API server's escalation check refuses the binding to an unprivileged operator).
    referenced = {CONFIG_MAP.kind, SERVICE_ACCOUNT.kind, ROLE.kind}
    await each(kube.apply(m) for m in decision.apply if m["kind"] in referenced)
    await each(kube.apply(m) for m in decision.apply if m["kind"] not in referenced)
    await each(kube.delete(ref) for ref in decision.delete)
    if failures:  # statuses assume the applies landed: report nothing until they do
        raise ActFailed(failures)
    await each(_report(kube, change, now) for change in decision.statuses)
    if failures:
        raise ActFailed(failures)
    return written


async def _report(kube: KubeApi, change: StatusChange, now: datetime) -> Body:
    patched = await kube.patch_status(change.ref, change.status)
    if change.warning:
        reason, message = change.warning
        await kube.event(change.body, type_="Warning", reason=reason, message=message, now=now)
    return patched


class Reconciler:
    """Reconciles each namespace a watch event marked dirty, one at a time."""

    def __init__(
        self,
        store: Store,
        kube: KubeApi,
        settings: OperatorSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        quiet_seconds: float = 0.3,
        max_delay_seconds: float = 5.0,
    ) -> None:
        self.store, self.kube, self.settings, self.clock = store, kube, settings, clock
        self.quiet_seconds, self.max_delay_seconds = quiet_seconds, max_delay_seconds
        self._wake = asyncio.Event()
        self._failures: dict[str, int] = {}
        self.passes = 0  # reconcile passes made, for benchmarks and tests

    def wake(self) -> None:
        """Something was observed: reconcile the namespaces the store marked dirty."""
        if self.store.dirty:
            self._wake.set()

    def retry(self, namespace: str) -> None:
        self.store.dirty.add(namespace)
        self._wake.set()

    async def close(self) -> None:
        await self.kube.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            # Let a burst of events land first: wait for a quiet spell, but not forever.
            deadline = loop.time() + self.max_delay_seconds
            while self._wake.is_set() and loop.time() < deadline:
                self._wake.clear()
                await asyncio.sleep(self.quiet_seconds)
            self._wake.clear()
            for namespace in self.store.take_dirty():
                await self._reconcile_safely(namespace)

    async def _reconcile_safely(self, namespace: str) -> None:
        try:
            await self.reconcile(namespace)
        except (ActFailed, KubeError, OSError, ValueError) as error:
            failures = self._failures[namespace] = self._failures.get(namespace, 0) + 1
            delay = min(60.0, 0.5 * 2 ** min(failures, 7))
            logger.error(
                "reconciling namespace %s failed (%s); retrying in %.1f s", namespace, error, delay
            )
            asyncio.get_running_loop().call_later(delay, self.retry, namespace)
        else:
            self._failures.pop(namespace, None)

    async def reconcile(self, namespace: str) -> Decision:
        now = self.clock()
        decision = decide(namespace, self.store.namespace(namespace), self.settings, now)
        self.passes += 1
        if not decision.is_noop:
            logger.info(
                "namespace %s: applying %d, deleting %d, %d status updates",
                namespace,
                len(decision.apply),
                len(decision.delete),
                len(decision.statuses),
            )
            for body in await act(self.kube, decision, now):
                self.store.record_own_write(body)
        return decision
