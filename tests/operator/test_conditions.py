"""set_condition keeps lastTransitionTime unless the status flips; route/tier Ready logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tiergate_operator.conditions import route_conditions, set_condition, tier_conditions
from tiergate_operator.models import Condition
from tiergate_operator.plans import Problem

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def by_type(conditions: list[Condition]) -> dict[str, tuple[str, str, str, int | None]]:
    return {
        c.type: (c.status, c.reason, c.last_transition_time, c.observed_generation)
        for c in conditions
    }


def test_set_condition_adds_with_the_time_of_now() -> None:
    (condition,) = set_condition([], "Ready", "True", "Served", "ok", 3, T0)
    assert condition.last_transition_time == "2025-03-01T12:00:00Z"
    assert condition.observed_generation == 3
    assert condition.model_dump(mode="json", exclude_none=True) == {
        "type": "Ready",
        "status": "True",
        "reason": "Served",
        "message": "ok",
        "observedGeneration": 3,
        "lastTransitionTime": "2025-03-01T12:00:00Z",
    }


def test_same_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], "Ready", "False", "Progressing", "wait", 1, T0)
    second = set_condition(first, "Ready", "False", "GatewayUnavailable", "down", 2, T1)
    assert by_type(second) == {"Ready": ("False", "GatewayUnavailable", "2025-03-01T12:00:00Z", 2)}


def test_a_flip_moves_the_transition_time() -> None:
    first = set_condition([], "Ready", "False", "Progressing", "wait", 1, T0)
    second = set_condition(first, "Ready", "True", "Served", "ok", 1, T1)
    assert by_type(second)["Ready"][2] == "2025-03-01T12:05:00Z"


def test_other_conditions_and_their_order_are_kept() -> None:
    start = set_condition(
        set_condition([], "Accepted", "True", "Accepted", "", 1, T0),
        "Ready",
        "True",
        "Served",
        "",
        1,
        T0,
    )
    updated = set_condition(start, "Accepted", "False", "MissingSecret", "gone", 2, T1)
    assert [c.type for c in updated] == ["Accepted", "Ready"]
    assert updated[1] == start[1]
    assert start[0].status == "True"


@pytest.mark.parametrize(
    ("problem", "gateways", "applied", "ready"),
    [
        (None, ["tiergate-shared"], True, ("True", "Served")),
        (None, ["tiergate-shared"], False, ("False", "Progressing")),
        (None, [], True, ("True", "NotServed")),
        (
            Problem("MissingSecret", "Secret x does not exist"),
            ["tiergate-shared"],
            True,
            ("False", "MissingSecret"),
        ),
    ],
)
def test_route_conditions(
    problem: Problem | None, gateways: list[str], applied: bool, ready: tuple[str, str]
) -> None:
    conditions = route_conditions(
        [], problem=problem, gateways=gateways, configs_applied=applied, generation=4, now=T0
    )
    states = by_type(conditions)
    assert states["Accepted"][0] == ("False" if problem else "True")
    assert states["Ready"][:2] == ready


def test_a_broken_route_says_its_last_good_state_is_served() -> None:
    conditions = route_conditions(
        [],
        problem=Problem("MissingSecret", "Secret x does not exist"),
        gateways=["tiergate-a"],
        configs_applied=True,
        generation=1,
        now=T0,
    )
    assert (
        conditions[1].message
        == "Secret x does not exist; its gateways keep serving its last good state"
    )


@pytest.mark.parametrize(
    ("problem", "gateway", "applied", "replicas", "ready"),
    [
        (None, "tiergate-acme", True, 3, ("True", "Served")),
        (None, "tiergate-acme", True, 0, ("False", "GatewayUnavailable")),
        (None, "tiergate-acme", False, 3, ("False", "Progressing")),
        (None, None, True, 0, ("False", "Progressing")),
        (Problem("EmptyAllowlist", "models is empty"), None, True, 0, ("False", "EmptyAllowlist")),
    ],
)
def test_tier_conditions(
    problem: Problem | None,
    gateway: str | None,
    applied: bool,
    replicas: int,
    ready: tuple[str, str],
) -> None:
    conditions = tier_conditions(
        [],
        problem=problem,
        gateway=gateway,
        configs_applied=applied,
        ready_replicas=replicas,
        generation=2,
        now=T0,
    )
    assert by_type(conditions)["Ready"][:2] == ready
    assert {c.observed_generation for c in conditions} == {2}
