"""Pure status conditions: ``set_condition`` and the Accepted/Ready of routes and tiers.

Like cert-manager's: observedGeneration is always set, lastTransitionTime moves only
when the status flips, and the time comes from the caller (an injected clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from tiergate_operator.models import Condition, ConditionStatus
from tiergate_operator.plans import Failure, Problem

__all__ = [
    "ACCEPTED",
    "READY",
    "format_time",
    "route_conditions",
    "set_condition",
    "tier_conditions",
]

ACCEPTED = "Accepted"
READY = "Ready"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Condition],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int,
    now: datetime,
) -> list[Condition]:
    """A new list with condition ``type`` set; the others unchanged, order kept."""
    existing = next((c for c in conditions if c.type == type), None)
    transition = (
        existing.last_transition_time
        if existing and existing.status == status
        else format_time(now)
    )
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=observed_generation,
        last_transition_time=transition,
    )
    if existing is None:
        return [*conditions, updated]
    return [updated if c.type == type else c for c in conditions]


def _accepted(
    conditions: Sequence[Condition], problem: Problem | None, generation: int, now: datetime
) -> list[Condition]:
    if problem is None:
        return set_condition(
            conditions,
            ACCEPTED,
            "True",
            "Accepted",
            "the spec is valid and its references resolve",
            generation,
            now,
        )
    return set_condition(
        conditions, ACCEPTED, "False", problem.reason, problem.message, generation, now
    )


def _not_accepted_message(problem: Problem, served: bool) -> str:
    keeping = "its gateways keep serving its last good state" if served else "no gateway serves it"
    return f"{problem.message}; {keeping}"


def _failed(
    conditions: Sequence[Condition], failure: Failure, generation: int, now: datetime
) -> list[Condition]:
    return set_condition(
        conditions, READY, "False", failure.reason, failure.message, generation, now
    )


def route_conditions(
    conditions: Sequence[Condition],
    *,
    problem: Problem | None,
    gateways: Sequence[str],
    configs_applied: bool,
    generation: int,
    now: datetime,
    failure: Failure | None = None,
) -> list[Condition]:
    """Accepted and Ready of a ModelRoute.

    ``gateways`` serve it (from the translation); ``configs_applied`` says whether
    their ConfigMaps hold the configs just translated; ``failure`` says why one of them
    could not be written. A route no tier allows is Ready with reason NotServed: nothing
    is left to do for it.
    """
    updated = _accepted(conditions, problem, generation, now)
    if problem is not None:
        return set_condition(
            updated,
            READY,
            "False",
            problem.reason,
            _not_accepted_message(problem, bool(gateways)),
            generation,
            now,
        )
    if failure is not None:
        return _failed(updated, failure, generation, now)
    if not gateways:
        return set_condition(
            updated, READY, "True", "NotServed", "no ApiKeyTier allows this route", generation, now
        )
    if not configs_applied:
        return set_condition(
            updated,
            READY,
            "False",
            "Progressing",
            f"updating the config of {', '.join(gateways)}",
            generation,
            now,
        )
    return set_condition(
        updated, READY, "True", "Served", f"served by {', '.join(gateways)}", generation, now
    )


def tier_conditions(
    conditions: Sequence[Condition],
    *,
    problem: Problem | None,
    gateway: str | None,
    configs_applied: bool,
    ready_replicas: int,
    generation: int,
    now: datetime,
    failure: Failure | None = None,
) -> list[Condition]:
    """Accepted and Ready of an ApiKeyTier.

    Ready needs the tier's current spec in its gateway's applied config and at least
    one ready gateway replica; ``failure`` says why its gateway could not be written.
    """
    updated = _accepted(conditions, problem, generation, now)
    if problem is not None:
        return set_condition(
            updated,
            READY,
            "False",
            problem.reason,
            _not_accepted_message(problem, gateway is not None),
            generation,
            now,
        )
    if failure is not None:
        return _failed(updated, failure, generation, now)
    if gateway is None or not configs_applied:
        return set_condition(
            updated,
            READY,
            "False",
            "Progressing",
            f"updating the config of {gateway or 'its gateway'}",
            generation,
            now,
        )
    if ready_replicas < 1:
        return set_condition(
            updated,
            READY,
            "False",
            "GatewayUnavailable",
            f"gateway {gateway} has no ready replica",
            generation,
            now,
        )
    return set_condition(
        updated,
        READY,
        "True",
        "Served",
        f"served by {gateway} ({ready_replicas} ready)",
        generation,
        now,
    )
