"""Level-based reconciliation of one namespace: gather -> decide (pure) -> act.

``decide`` rebuilds every gateway of the namespace from all its inputs and
compares the result with what the watches saw live: only objects that differ
are written, only children nobody wants are deleted, only statuses that changed
are written. ``Reconciler`` runs ``decide`` and acts on it for each namespace
that a watch event marked dirty.

Ownership before every write: the operator writes only what it created
(``ownership``). The watches see only labelled objects, so names the store does
not know are first ``probe``d (who holds them?) and, when free, created with a plain
create; objects of ours are applied with their uid, deleted with it as a precondition.

Failures stay local: writes go in groups, one per gateway plus the namespace's access
objects (``changes``). A group whose name someone else holds, or whose write the API
server refuses, is not written and marks only its own routes and tiers, saying what
failed; every status is still written in the same pass; the group is retried with
backoff (``Retry``), at once when what it should hold changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tiergate_contract import GatewayConfig, config_from_configmap
from tiergate_operator.access import render_gateway_access
from tiergate_operator.changes import (
    NAME_CONFLICT,
    NAMESPACE_ACCESS,
    WRITE_FAILED,
    Apply,
    Create,
    Deletion,
    GroupWrites,
    HandOver,
    Retry,
    Write,
    backoff,
    fingerprint,
    name_conflict,
    rule_group,
    written_kind,
)
from tiergate_operator.conditions import format_time
from tiergate_operator.desired import DesiredState, desired_state
from tiergate_operator.drift import holds
from tiergate_operator.key_lifecycle import next_key_moment, tier_spec
from tiergate_operator.kube import KubeApi, KubeError
from tiergate_operator.ownership import is_ours, may_delete, our_update_fields
from tiergate_operator.plans import Failure
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import ACCESS_KINDS, CONFIG_MAP, PROMETHEUS_RULE, PrefixedKeys
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.statuses import StatusChange, desired_statuses
from tiergate_operator.store import ChildKey, NamespaceState, Store
from tiergate_operator.writes import REFERENCED_KINDS, Outcome, carry_out, probe, write_statuses

__all__ = [
    "NAMESPACE_ACCESS",
    "NAME_CONFLICT",
    "WRITE_FAILED",
    "ActFailed",
    "Apply",
    "Create",
    "Decision",
    "Deletion",
    "GroupWrites",
    "HandOver",
    "Outcome",
    "Reconciler",
    "Retry",
    "StatusChange",
    "act",
    "backoff",
    "decide",
    "next_retries",
    "probe",
    "report",
]

logger = logging.getLogger("tiergate.reconcile")

Body = dict[str, Any]
Probed = Mapping[ChildKey, Body | Failure]
_ACCESS_KINDS = frozenset(kind.kind for kind in ACCESS_KINDS)


@dataclass(frozen=True)
class Decision:
    groups: tuple[GroupWrites, ...] = ()
    delete: tuple[Deletion, ...] = ()
    statuses: tuple[StatusChange, ...] = ()
    # Per group, why it is not written in this pass: a name someone else holds, a failure
    # still held back, the namespace access it needs. ``found`` is the part learnt from
    # ``probe`` (invisible to the watches, so retried with backoff).
    blocked: Mapping[str, Failure] = field(default_factory=dict)
    found: Mapping[str, Failure] = field(default_factory=dict)
    manifests: Mapping[str, tuple[Body, ...]] = field(default_factory=dict)  # per group
    desired: DesiredState | None = None

    @property
    def apply(self) -> tuple[Body, ...]:
        """Every manifest written (created or applied), by kind and name."""
        written = [
            w.manifest for g in self.groups for w in g.writes if isinstance(w, Create | Apply)
        ]
        return tuple(sorted(written, key=_key))

    @property
    def unverified(self) -> tuple[ObjectRef, ...]:
        """Names to create that the store does not know: who holds them is unknown."""
        return tuple(
            ObjectRef.of(w.manifest) for g in self.groups for w in g.writes if isinstance(w, Create)
        )

    @property
    def is_noop(self) -> bool:
        return not (self.groups or self.delete or self.statuses)


# --- decide (pure) -------------------------------------------------------------------------


def _key(body: Body) -> ChildKey:
    return (str(body["kind"]), str(body["metadata"]["name"]))


def _gateway_of(body: Body, keys: PrefixedKeys) -> str:
    return str((body["metadata"].get("labels") or {}).get(keys.gateway_label, ""))


def _group_of(body: Body, keys: PrefixedKeys) -> str:
    if body["kind"] in _ACCESS_KINDS:
        return NAMESPACE_ACCESS
    if body["kind"] == PROMETHEUS_RULE.kind:
        return rule_group(str((body["metadata"].get("labels") or {}).get(keys.tier_label, "")))
    return _gateway_of(body, keys) or str(body["metadata"]["name"])


def _live_configs(
    children: Mapping[ChildKey, Body], keys: PrefixedKeys
) -> dict[str, GatewayConfig]:
    """The configs currently applied, per gateway: the 'last good' of each."""
    configs = {}
    for (kind, name), body in children.items():
        if kind != CONFIG_MAP.kind:
            continue
        try:
            configs[_gateway_of(body, keys)] = GatewayConfig.model_validate_json(
                config_from_configmap(body) or b""
            )
        except ValidationError:
            logger.warning("ConfigMap %s holds no valid gateway config; ignoring it", name)
    return configs


@dataclass(frozen=True)
class _Holders:
    """Who holds each child name: objects of ours, and everything else (what the watches show
    without being ours, and what ``probe`` found)."""

    ours: dict[ChildKey, Body]
    others: dict[ChildKey, Body]
    probed_ours: dict[ChildKey, Body]

    @classmethod
    def of(cls, children: Mapping[ChildKey, Body], probed: Probed) -> _Holders:
        ours = {key: body for key, body in children.items() if is_ours(body)}
        others = {key: body for key, body in children.items() if key not in ours}
        probed_ours: dict[ChildKey, Body] = {}
        for key, holder in probed.items():
            if isinstance(holder, dict):
                (probed_ours if is_ours(holder) else others)[key] = holder
        return cls(ours, others, probed_ours)


def _grouped(manifests: Iterable[Body], keys: PrefixedKeys) -> dict[str, list[Body]]:
    groups: dict[str, list[Body]] = {}
    for manifest in manifests:
        groups.setdefault(_group_of(manifest, keys), []).append(manifest)
    return groups


def _why_blocked(
    group: str,
    manifests: list[Body],
    holders: _Holders,
    probed: Probed,
    retry: Retry | None,
    now: datetime,
) -> tuple[Failure | None, bool]:
    """Why ``group`` is not written now, and whether ``probe`` found why (then it is retried
    with backoff: the watches will not see that object go away)."""
    wanted = [_key(m) for m in manifests]
    taken = [key for key in wanted if key in holders.others]
    if taken:
        held = [holders.others[key] for key in taken]
        return name_conflict(group, held), any(key in probed for key in taken)
    unknown = next((p for p in (probed.get(k) for k in wanted) if isinstance(p, Failure)), None)
    if unknown is not None:
        return unknown, True
    if retry is not None and retry.holds_back(fingerprint(manifests), now):
        return retry.reported(), False
    return None, False


def _writes(manifests: list[Body], holders: _Holders) -> tuple[Write, ...]:
    writes: list[Write] = []
    for manifest in manifests:
        key = _key(manifest)
        live = holders.ours.get(key) or holders.probed_ours.get(key)
        if live is None:
            writes.append(Create(manifest))
            continue
        if our_update_fields(live):
            writes.append(HandOver(live))
        if key in holders.probed_ours or not holds(live, manifest):
            writes.append(Apply(manifest, str(live["metadata"]["uid"])))
    return tuple(sorted(writes, key=lambda w: written_kind(w) not in REFERENCED_KINDS))


def _with_access_failure(
    blocked: Mapping[str, Failure], gateways: Iterable[str]
) -> dict[str, Failure]:
    """A failure of the namespace access is every gateway's (each keeps one of its own)."""
    access = blocked.get(NAMESPACE_ACCESS)
    if access is None:
        return dict(blocked)
    return {**{gateway: access for gateway in gateways}, **blocked}


def _gateways(desired: DesiredState) -> set[str]:
    return {plan.name for plan in desired.translation.plans} | set(desired.kept_gateways)


def _access_without(
    namespace: str, taken: set[str], desired: DesiredState, settings: OperatorSettings
) -> list[Body] | None:
    """The access objects, their Role granting no ConfigMap whose name someone else holds;
    None when no gateway would be left (an empty ``resourceNames`` grants every name)."""
    return (
        render_gateway_access(
            namespace, desired.kept_gateways - taken, desired.access_owners, settings
        )
        or None
    )


def _configs_written(groups: Iterable[GroupWrites]) -> frozenset[str]:
    """Gateways whose ConfigMap the writes bring up to date."""
    return frozenset(
        w.manifest["metadata"]["name"]
        for g in groups
        for w in g.writes
        if isinstance(w, Create | Apply) and w.manifest["kind"] == CONFIG_MAP.kind
    )


def _deletions(
    namespace: str,
    holders: _Holders,
    wanted: set[ChildKey],
    spared_groups: set[str],
    desired: DesiredState,
    keys: PrefixedKeys,
) -> tuple[Deletion, ...]:
    """Objects of ours nobody wants, carrying our labels and a tiergate owner, outside the
    groups spared (blocked ones) and the gateways kept on their last good state."""
    kept_as_is = desired.kept_gateways - desired.planned_gateways
    return tuple(
        Deletion(ObjectRef(kind, namespace, name), str(body["metadata"].get("uid", "")), group)
        for (kind, name), body in sorted(holders.ours.items())
        if (kind, name) not in wanted
        and may_delete(body)
        and (group := _group_of(body, keys)) not in spared_groups
        and _gateway_of(body, keys) not in kept_as_is
    )


def decide(
    namespace: str,
    state: NamespaceState,
    settings: OperatorSettings,
    now: datetime,
    retries: Mapping[str, Retry] | None = None,
    probed: Probed | None = None,
    *,
    prometheus_rules: bool = False,
) -> Decision:
    """What to write, delete and report. ``retries``: groups that failed before; ``probed``:
    who holds names the store does not know (``probe``), or why asking failed;
    ``prometheus_rules``: the cluster serves PrometheusRules (tiers' SLOs get one)."""
    retries, probed = retries or {}, probed or {}
    keys = settings.keys
    holders = _Holders.of(state.children, probed)
    view = replace(state, children=holders.ours)
    desired = desired_state(
        namespace,
        view,
        _live_configs(holders.ours, keys),
        settings,
        prometheus_rules=prometheus_rules,
    )
    groups = _grouped(desired.manifests, keys)
    wanted = {_key(m) for m in desired.manifests}

    blocked: dict[str, Failure] = {}
    found: dict[str, Failure] = {}

    def check(group: str) -> None:
        why, by_probe = _why_blocked(group, groups[group], holders, probed, retries.get(group), now)
        if why is not None:
            blocked[group] = why
            if by_probe:
                found[group] = why

    for group in sorted(set(groups) - {NAMESPACE_ACCESS}):
        check(group)
    spared = set()
    taken = {g for g, why in blocked.items() if why.reason == NAME_CONFLICT}
    if NAMESPACE_ACCESS in groups and taken & desired.kept_gateways:
        if access := _access_without(namespace, taken, desired, settings):
            groups[NAMESPACE_ACCESS] = access
        else:  # no gateway left to grant: the access objects stay as they are
            del groups[NAMESPACE_ACCESS]
            spared.add(NAMESPACE_ACCESS)
    if NAMESPACE_ACCESS in groups:
        check(NAMESPACE_ACCESS)
    blocked = _with_access_failure(blocked, [g for g in groups if g != NAMESPACE_ACCESS])

    writes = [
        GroupWrites(group, group_writes)
        for group, manifests in sorted(groups.items())
        if group not in blocked and (group_writes := _writes(manifests, holders))
    ]
    statuses = desired_statuses(
        namespace,
        view,
        desired,
        now,
        keys,
        _configs_written(writes),
        _with_access_failure(blocked, _gateways(desired)),
    )
    return Decision(
        groups=tuple(writes),
        delete=_deletions(namespace, holders, wanted, spared | set(blocked), desired, keys),
        statuses=tuple(statuses),
        blocked=blocked,
        found=found,
        manifests={group: tuple(manifests) for group, manifests in groups.items()},
        desired=desired,
    )


def next_retries(
    previous: Mapping[str, Retry],
    decision: Decision,
    failed: Mapping[str, Failure],
    now: datetime,
) -> dict[str, Retry]:
    """The groups to hold back after this pass: those that failed now (one more attempt),
    and those still held; a group written, or no longer wanted, is forgotten."""
    retries = {}
    for group, manifests in decision.manifests.items():
        failure = failed.get(group) or decision.found.get(group)
        prior = previous.get(group)
        if failure is not None:
            identity = fingerprint(manifests)
            retries[group] = (
                prior.after(failure, identity, now)
                if prior
                else Retry.first(failure, identity, now)
            )
        elif prior is not None and group in decision.blocked:
            retries[group] = prior
    return retries


def report(
    namespace: str,
    state: NamespaceState,
    decision: Decision,
    settings: OperatorSettings,
    now: datetime,
    retries: Mapping[str, Retry],
    failed: Mapping[str, Failure],
) -> tuple[StatusChange, ...]:
    """The statuses once the writes were made: ``failed`` groups (and those ``probe`` found
    held) report their failure with its retries; the others are as ``decide`` assumed."""
    if decision.desired is None:
        return decision.statuses
    failures = dict(decision.blocked)
    for group in (*failed, *decision.found):
        if group in retries:
            failures[group] = retries[group].reported()
    written = [] if NAMESPACE_ACCESS in failures else decision.groups
    view = replace(state, children={k: b for k, b in state.children.items() if is_ours(b)})
    return tuple(
        desired_statuses(
            namespace,
            view,
            decision.desired,
            now,
            settings.keys,
            _configs_written(g for g in written if g.group not in failures),
            _with_access_failure(failures, _gateways(decision.desired)),
        )
    )


# --- act ---------------------------------------------------------------------------------------


class ActFailed(Exception):
    """Deletions or status writes failed; the others were carried out."""

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__(f"{len(failures)} write(s) failed; first: {failures[0]}")
        self.failures = failures


async def act(kube: KubeApi, decision: Decision, concurrency: int = 16) -> Outcome:
    """Carry out a decision's writes and deletions; a failure stops only its group."""
    return await carry_out(kube, decision.groups, decision.delete, concurrency)


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
        self._retries: dict[str, dict[str, Retry]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._key_timers: dict[str, asyncio.TimerHandle] = {}
        self.passes = 0  # reconcile passes made, for benchmarks and tests

    def wake(self) -> None:
        """Something was observed: reconcile the namespaces the store marked dirty."""
        if self.store.dirty:
            self._wake.set()

    def retry(self, namespace: str) -> None:
        self.store.dirty.add(namespace)
        self._wake.set()

    async def close(self) -> None:
        for timer in (*self._timers.values(), *self._key_timers.values()):
            timer.cancel()
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

    def _hold_back(self, namespace: str, retries: dict[str, Retry], now: datetime) -> None:
        """Remember the groups held back, and come back when the first one is due."""
        if timer := self._timers.pop(namespace, None):
            timer.cancel()
        if not retries:
            self._retries.pop(namespace, None)
            return
        self._retries[namespace] = retries
        due = min(r.next_attempt for r in retries.values())
        self._timers[namespace] = asyncio.get_running_loop().call_later(
            max(0.0, (due - now).total_seconds()), self.retry, namespace
        )

    def _wake_for_keys(self, namespace: str, state: NamespaceState, now: datetime) -> None:
        """Come back when a key Secret enters its warning window, expires or grows too old: the
        gateways need no write then (their clocks enforce expiries), but the statuses do."""
        if timer := self._key_timers.pop(namespace, None):
            timer.cancel()
        specs = [spec for body in state.tiers.values() if (spec := tier_spec(body)) is not None]
        due = next_key_moment(specs, state.secret_created, now)
        if due is not None:
            # At most a day ahead: a timer far in the future would not survive clock changes.
            delay = min((due - now).total_seconds(), 86_400.0)
            self._key_timers[namespace] = asyncio.get_running_loop().call_later(
                max(0.0, delay), self.retry, namespace
            )

    @staticmethod
    def _log_failures(namespace: str, retries: Mapping[str, Retry], groups: Iterable[str]) -> None:
        for group in sorted(set(groups)):
            retry = retries[group]
            logger.warning(
                "namespace %s: %s not written (attempt %d, next at %s): %s",
                namespace,
                group,
                retry.attempts,
                format_time(retry.next_attempt),
                retry.failure.message,
            )

    async def reconcile(self, namespace: str) -> Decision:
        now = self.clock()
        state = self.store.namespace(namespace)
        previous = self._retries.get(namespace, {})
        rules = self.store.prometheus_rules
        decision = decide(namespace, state, self.settings, now, previous, prometheus_rules=rules)
        if decision.unverified and (probed := await probe(self.kube, decision.unverified)):
            # Some names are held: decide again, knowing by whom.
            decision = decide(
                namespace, state, self.settings, now, previous, probed, prometheus_rules=rules
            )
        self.passes += 1
        outcome = Outcome()
        if decision.groups or decision.delete:
            logger.info(
                "namespace %s: applying %d, deleting %d, %d status updates",
                namespace,
                sum(len(g.writes) for g in decision.groups),
                len(decision.delete),
                len(decision.statuses),
            )
            outcome = await act(self.kube, decision)
            for body in outcome.written:
                self.store.record_own_write(body)
        retries = next_retries(previous, decision, outcome.failed, now)
        self._hold_back(namespace, retries, now)
        self._log_failures(namespace, retries, (*outcome.failed, *decision.found))
        statuses = decision.statuses
        if outcome.failed or decision.found:
            statuses = report(
                namespace, state, decision, self.settings, now, retries, outcome.failed
            )
        patched, errors = await write_statuses(self.kube, statuses, now)
        for body in patched:
            self.store.record_own_write(body)
        self._wake_for_keys(namespace, state, now)
        if outcome.errors or errors:
            raise ActFailed([*outcome.errors, *errors])
        return decision
