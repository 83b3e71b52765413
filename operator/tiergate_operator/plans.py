"""What translation decides for a namespace: one plan per gateway, and each object's problem;
and what a gateway whose objects could not be written reports instead (``Failure``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tiergate_contract import GatewayConfig
from tiergate_operator.models import (
    Autoscaling,
    Isolation,
    PodDisruptionBudget,
    Resources,
    ServiceLevelObjectives,
)

__all__ = ["Failure", "GatewayPlan", "OwnerRef", "Problem", "TierObjectives", "Translation"]


@dataclass(frozen=True)
class Problem:
    """Why an object is not served as specified: a CamelCase reason and a message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Failure(Problem):
    """Why a gateway's objects were not written (its name is held by someone else, the API
    server refused a write): its routes and tiers are not Ready, their spec stays Accepted.
    ``transient`` failures (timeouts, 5xx, throttling) read as Reconciling, the others as
    Stalled: they need someone to act."""

    transient: bool = False


@dataclass(frozen=True)
class OwnerRef:
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool


@dataclass(frozen=True)
class TierObjectives:
    """One tier's ``spec.slo``, and the tier as the owner of its PrometheusRule."""

    owner: OwnerRef
    slo: ServiceLevelObjectives


@dataclass(frozen=True)
class GatewayPlan:
    name: str
    namespace: str
    isolation: Isolation
    owners: tuple[OwnerRef, ...]
    config: GatewayConfig
    # None: the shared pool's replicas (from the settings), or an HPA's when autoscaling is set.
    replicas: int | None = None
    autoscaling: Autoscaling | None = None
    resources: Resources | None = None
    pod_disruption_budget: PodDisruptionBudget | None = None
    # Secrets holding upstream credentials the config refers to, mounted as files.
    credential_secrets: tuple[str, ...] = ()
    # The objectives of the gateway's tiers that set ``spec.slo``, by tier name.
    objectives: tuple[TierObjectives, ...] = ()


@dataclass(frozen=True)
class Translation:
    plans: tuple[GatewayPlan, ...] = ()
    route_problems: Mapping[str, Problem] = field(default_factory=dict)
    tier_problems: Mapping[str, Problem] = field(default_factory=dict)
    # ModelRoute name -> gateways whose config holds it (current or last good).
    route_gateways: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # ApiKeyTier name -> the gateway whose config holds it (current or last good).
    tier_gateways: Mapping[str, str] = field(default_factory=dict)

    def plan(self, gateway: str) -> GatewayPlan | None:
        return next((plan for plan in self.plans if plan.name == gateway), None)

    @property
    def configs(self) -> dict[str, GatewayConfig]:
        return {plan.name: plan.config for plan in self.plans}
