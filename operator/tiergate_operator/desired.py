"""What one namespace should hold: translation plus rendering, from the watched state (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tiergate_gateway.contract import GatewayConfig
from tiergate_operator.access import render_gateway_access
from tiergate_operator.models import API_VERSION
from tiergate_operator.names import gateway_for_tier
from tiergate_operator.plans import OwnerRef, Translation
from tiergate_operator.render import render
from tiergate_operator.settings import OperatorSettings
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

    @property
    def configs(self) -> dict[str, GatewayConfig]:
        return self.translation.configs


def desired_state(
    namespace: str, state: NamespaceState, previous: Mapping[str, GatewayConfig],
    settings: OperatorSettings,
) -> DesiredState:
    translation = translate(namespace, state.routes.values(), state.tiers.values(),
                            state.secrets, previous)
    live_tiers = [body for body in state.tiers.values() if not body["metadata"].get("deletionTimestamp")]
    kept = {
        gateway_for_tier(body["metadata"]["name"], body.get("spec", {}).get("isolation", "Shared"))
        for body in live_tiers
    }
    tier_owners = [OwnerRef(API_VERSION, "ApiKeyTier", body["metadata"]["name"],
                            body["metadata"]["uid"], controller=False) for body in live_tiers]
    manifests = (
        *render_gateway_access(namespace, kept, tier_owners, settings),
        *(manifest for plan in translation.plans for manifest in render(plan, settings)),
    )
    return DesiredState(
        translation=translation, manifests=manifests,
        planned_gateways=frozenset(plan.name for plan in translation.plans),
        kept_gateways=frozenset(kept),
    )
