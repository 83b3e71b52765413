"""What one namespace should hold: translation plus rendering, from the watched state (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiergate_contract import GatewayConfig
from tiergate_operator.access import render_gateway_access
from tiergate_operator.checks import redis_secret_problem
from tiergate_operator.names import gateway_for_tier
from tiergate_operator.plans import OwnerRef, Problem, Translation
from tiergate_operator.registry import API_KEY_TIER
from tiergate_operator.render import CONFIGMAP_LIMIT_BYTES, configmap_bytes, render
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.slo import render_slo_rules
from tiergate_operator.store import NamespaceState
from tiergate_operator.translate import translate

__all__ = ["DesiredState", "desired_state"]


@dataclass(frozen=True)
class DesiredState:
    translation: Translation
    manifests: tuple[dict[str, Any], ...]
    # Gateways rendered now, and gateways that must not be removed (a tier still wants them,
    # even one whose spec cannot be served right now: it keeps its last good gateway).
    planned_gateways: frozenset[str]
    kept_gateways: frozenset[str]
    # Why a gateway cannot serve as translated, whatever its routes and tiers say (its config
    # is too large for a ConfigMap, the Redis Secret its pods read is missing), and the
    # problem each route and tier reports: its own first, else one of its gateways'.
    gateway_problems: Mapping[str, Problem] = field(default_factory=dict)
    route_problems: Mapping[str, Problem] = field(default_factory=dict)
    tier_problems: Mapping[str, Problem] = field(default_factory=dict)
    # The owners of the namespace's access objects (every live tier), to render them again
    # without the gateways whose names someone else holds.
    access_owners: tuple[OwnerRef, ...] = ()

    @property
    def configs(self) -> dict[str, GatewayConfig]:
        return self.translation.configs


def _too_large(gateway: str, size: int) -> Problem:
    return Problem(
        "ConfigTooLarge",
        f"the config of gateway {gateway} would take {size:,} bytes in its ConfigMap (gzip-compressed), "
        f"over the {CONFIGMAP_LIMIT_BYTES:,} bytes a ConfigMap may hold, so none of it is applied; "
        "serve fewer routes, tiers or keys through it (narrow spec.models, or make large tiers Dedicated)",
    )


def _with_gateway_problems(
    own: Mapping[str, Problem],
    gateways: Mapping[str, tuple[str, ...]],
    problems: Mapping[str, Problem],
) -> dict[str, Problem]:
    merged = dict(own)
    for name, names in gateways.items():
        found = next((problems[g] for g in names if g in problems), None)
        if found is not None and name not in merged:
            merged[name] = found
    return merged


def desired_state(
    namespace: str,
    state: NamespaceState,
    previous: Mapping[str, GatewayConfig],
    settings: OperatorSettings,
    *,
    prometheus_rules: bool = False,
) -> DesiredState:
    """``prometheus_rules``: the cluster serves PrometheusRules, so tiers' ``spec.slo`` get one."""
    translation = translate(
        namespace,
        state.routes.values(),
        state.tiers.values(),
        state.secrets,
        previous,
        state.secret_created,
    )
    live_tiers = [
        body for body in state.tiers.values() if not body["metadata"].get("deletionTimestamp")
    ]
    kept = {
        gateway_for_tier(body["metadata"]["name"], body.get("spec", {}).get("isolation", "Shared"))
        for body in live_tiers
    }
    tier_owners = [
        OwnerRef(
            API_KEY_TIER.api_version,
            API_KEY_TIER.kind,
            body["metadata"]["name"],
            body["metadata"]["uid"],
            controller=False,
        )
        for body in live_tiers
    ]
    gateway_problems: dict[str, Problem] = {}
    gateway_manifests: list[dict[str, Any]] = []
    planned: set[str] = set()
    for plan in translation.plans:
        manifests = render(plan, settings)
        size = sum(configmap_bytes(m) for m in manifests if m["kind"] == "ConfigMap")
        if size > CONFIGMAP_LIMIT_BYTES:
            # The API server would refuse the ConfigMap: apply nothing of this gateway (no
            # half-applied state), keep its live objects, and report it instead of retrying.
            gateway_problems[plan.name] = _too_large(plan.name, size)
            continue
        planned.add(plan.name)
        gateway_manifests += manifests
        if prometheus_rules:
            gateway_manifests += render_slo_rules(plan, settings)
    if settings.redis_secret is not None and (
        missing := redis_secret_problem(settings.redis_secret, state.secrets)
    ):
        for plan in translation.plans:
            gateway_problems.setdefault(plan.name, missing)
    return DesiredState(
        translation=translation,
        manifests=(
            *render_gateway_access(namespace, kept, tier_owners, settings),
            *gateway_manifests,
        ),
        planned_gateways=frozenset(planned),
        kept_gateways=frozenset(kept),
        gateway_problems=gateway_problems,
        route_problems=_with_gateway_problems(
            translation.route_problems, translation.route_gateways, gateway_problems
        ),
        tier_problems=_with_gateway_problems(
            translation.tier_problems,
            {t: (g,) for t, g in translation.tier_gateways.items()},
            gateway_problems,
        ),
        access_owners=tuple(tier_owners),
    )
