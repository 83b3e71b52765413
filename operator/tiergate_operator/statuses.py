"""The status each ModelRoute and ApiKeyTier should show, and which ones changed (pure).

``Accepted`` says whether the spec can be served (a reason names the problem);
``Ready`` (the kstatus summary) says whether it is served: accepted, every gateway
that serves it written (a ``Failure`` says why one was not) with its current config
and all replicas ready.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tiergate_operator.changes import rule_group
from tiergate_operator.conditions import (
    ACCEPTED,
    READY,
    route_conditions,
    set_condition,
    tier_conditions,
)
from tiergate_operator.key_lifecycle import key_conditions, tier_spec
from tiergate_operator.models import Condition
from tiergate_operator.plans import Failure, Problem
from tiergate_operator.refs import ObjectRef
from tiergate_operator.registry import CONFIG_MAP, DEPLOYMENT, PrefixedKeys
from tiergate_operator.store import NamespaceState

if TYPE_CHECKING:
    from tiergate_operator.desired import DesiredState

__all__ = [
    "GatewayHealth",
    "StatusChange",
    "desired_statuses",
    "gateway_health",
    "with_kstatus",
]

Body = dict[str, Any]


@dataclass(frozen=True)
class StatusChange:
    ref: ObjectRef
    body: Body  # the object, for events
    status: Body
    # (reason, message) of a Warning event to post, when the object just became not Ready.
    warning: tuple[str, str] | None = None
    # Further Warning events: a tier's keys that turned due for rotation or expiry.
    key_warnings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GatewayHealth:
    replicas: int
    ready: int
    current_config: bool


def gateway_health(
    state: NamespaceState,
    desired: DesiredState,
    gateway: str,
    keys: PrefixedKeys,
    applying: frozenset[str] = frozenset(),
) -> GatewayHealth:
    """Replicas and config of ``gateway``; a config in ``applying`` counts as applied, since
    statuses are written only after every apply of the same decision succeeded."""
    configmap = state.children.get((CONFIG_MAP.kind, gateway)) or {}
    plan = desired.translation.plan(gateway)
    annotations = configmap.get("metadata", {}).get("annotations") or {}
    applied = annotations.get(keys.config_generation_annotation)
    current = plan is not None and (applied == plan.config.generation or gateway in applying)
    deployment = state.children.get((DEPLOYMENT.kind, gateway))
    if deployment is None:
        return GatewayHealth(0, 0, current)
    status = deployment.get("status", {})
    observed = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    replicas = int(deployment.get("spec", {}).get("replicas", 1))
    ready = min(int(status.get("readyReplicas", 0)), int(status.get("updatedReplicas", 0)))
    return GatewayHealth(replicas, ready if observed else 0, current)


def _current_conditions(body: Body) -> list[Condition]:
    raw = (body.get("status") or {}).get("conditions") or []
    try:
        return [Condition.model_validate(c) for c in raw]
    except ValidationError:
        return []  # someone wrote conditions we cannot read: start afresh


def with_kstatus(
    conditions: list[Condition], generation: int, now: datetime, failure: Failure | None = None
) -> list[Condition]:
    """Add kstatus' abnormal-true conditions, which kubectl wait, Flux and Argo CD read.

    Not Ready because of a problem in the spec, or because a gateway could not be written
    for a reason that needs someone to act (``failure``, not transient): ``Stalled``; not
    Ready yet while work is under way or retried: ``Reconciling``; Ready: both False.
    """
    ready = next(c for c in conditions if c.type == READY)
    accepted = next(c for c in conditions if c.type == ACCEPTED)
    refused = accepted.status == "False"
    stalled = refused or (ready.status != "True" and failure is not None and not failure.transient)
    cause = accepted if refused else ready
    reconciling = ready.status != "True" and not stalled
    conditions = set_condition(
        conditions,
        "Reconciling",
        "True" if reconciling else "False",
        ready.reason if reconciling else "Done",
        ready.message if reconciling else "nothing to do",
        generation,
        now,
    )
    return set_condition(
        conditions,
        "Stalled",
        "True" if stalled else "False",
        cause.reason if stalled else "Accepted",
        cause.message if stalled else "the spec can be served",
        generation,
        now,
    )


def _dump(conditions: list[Condition]) -> list[Body]:
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


def _change(
    namespace: str,
    body: Body,
    status: Body,
    problem: Problem | None,
    key_warnings: tuple[tuple[str, str], ...] = (),
) -> StatusChange | None:
    current = body.get("status") or {}
    if all(current.get(key) == value for key, value in status.items()):
        return None
    was = {c["type"]: c for c in current.get("conditions") or []}.get("Ready", {})
    warning = None
    if problem and was.get("reason") != problem.reason:
        warning = (problem.reason, problem.message)
    ref = ObjectRef(body["kind"], namespace, body["metadata"]["name"])
    return StatusChange(
        ref=ref, body=body, status=status, warning=warning, key_warnings=key_warnings
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def catalog_summary(body: Body) -> str | None:
    """The printer column of a catalog route: how many models and patterns it serves."""
    catalog = (body.get("spec") or {}).get("catalog")
    if not isinstance(catalog, dict):
        return None
    models, patterns = catalog.get("models") or [], catalog.get("patterns") or []
    return f"{_count(len(models), 'model')}, {_count(len(patterns), 'pattern')}"


def desired_statuses(
    namespace: str,
    state: NamespaceState,
    desired: DesiredState,
    now: datetime,
    keys: PrefixedKeys,
    applying: frozenset[str] = frozenset(),
    failures: Mapping[str, Failure] | None = None,
) -> Iterator[StatusChange]:
    """Status changes; ``applying`` names the gateways whose ConfigMap was written in the
    same pass, ``failures`` the gateways that could not be written, and why."""
    failures = failures or {}
    translation = desired.translation
    health = {
        plan.name: gateway_health(state, desired, plan.name, keys, applying)
        for plan in translation.plans
    }
    for name, body in sorted(state.routes.items()):
        if body["metadata"].get("deletionTimestamp"):
            continue
        problem = desired.route_problems.get(name)
        gateways = list(translation.route_gateways.get(name, ()))
        failure = next((failures[g] for g in gateways if g in failures), None)
        generation = int(body["metadata"].get("generation", 0))
        conditions = route_conditions(
            _current_conditions(body),
            problem=problem,
            gateways=gateways,
            configs_applied=all(g in health and health[g].current_config for g in gateways),
            generation=generation,
            now=now,
            failure=failure,
        )
        conditions = with_kstatus(conditions, generation, now, None if problem else failure)
        status = {
            "observedGeneration": generation,
            "conditions": _dump(conditions),
            "gateways": gateways,
        }
        if (summary := catalog_summary(body)) is not None:
            status["catalog"] = summary
        if change := _change(namespace, body, status, problem or failure):
            yield change
    for name, body in sorted(state.tiers.items()):
        if body["metadata"].get("deletionTimestamp"):
            continue
        problem = desired.tier_problems.get(name)
        gateway = translation.tier_gateways.get(name)
        tier_health = health.get(gateway) if gateway else None
        failure = (failures.get(gateway) if gateway else None) or failures.get(rule_group(name))
        generation = int(body["metadata"].get("generation", 0))
        conditions = tier_conditions(
            _current_conditions(body),
            problem=problem,
            gateway=gateway,
            configs_applied=bool(tier_health and tier_health.current_config),
            ready_replicas=tier_health.ready if tier_health else 0,
            generation=generation,
            now=now,
            failure=failure,
        )
        conditions = with_kstatus(conditions, generation, now, None if problem else failure)
        conditions, key_warnings = key_conditions(
            conditions, tier_spec(body), state.secret_created, generation, now
        )
        status = {
            "observedGeneration": generation,
            "conditions": _dump(conditions),
            "gateway": gateway,
            "replicas": tier_health.replicas if tier_health else 0,
            "readyReplicas": tier_health.ready if tier_health else 0,
        }
        if change := _change(namespace, body, status, problem or failure, tuple(key_warnings)):
            yield change
