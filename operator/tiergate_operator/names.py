"""Names the operator derives: gateways, and where a gateway finds its credentials."""

from __future__ import annotations

from tiergate_operator.models import Isolation

__all__ = ["CREDENTIALS_DIR", "SHARED_GATEWAY", "dedicated_gateway", "gateway_for_tier"]

SHARED_GATEWAY = "tiergate-shared"
CREDENTIALS_DIR = "/var/run/tiergate/credentials"


def dedicated_gateway(tier: str) -> str:
    return f"tiergate-{tier}"


def gateway_for_tier(tier: str, isolation: Isolation) -> str:
    return dedicated_gateway(tier) if isolation == "Dedicated" else SHARED_GATEWAY
