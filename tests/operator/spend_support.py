"""Hand-written SpendReports and tiers for the ledger tests: what a gateway would write."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from tests.support.kube import get_or_none
from tiergate_contract.ledger import LEDGER_FINALIZER
from tiergate_devkit.cluster import ControlPlane

__all__ = [
    "LABELS",
    "USD",
    "create_report",
    "create_tier",
    "month",
    "report_body",
    "spend_of",
    "stamp",
    "wait_for",
]

USD = 1_000_000_000
LABELS = {"app.kubernetes.io/managed-by": "tiergate", "tiergate.dev/gateway": "tiergate-shared"}


def stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def report_body(
    name: str,
    tiers: dict[str, int],
    *,
    final: bool = False,
    reported_at: str | None = None,
    keys: dict[str, list[dict[str, Any]]] | None = None,
    labels: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
) -> dict[str, Any]:
    """A report of ``{tier: nano-USD}`` this month (one call per 0.01 USD, at least one)."""
    return {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "SpendReport",
        "metadata": {
            "name": name,
            "labels": LABELS if labels is None else labels,
            "finalizers": [LEDGER_FINALIZER] if finalizers is None else finalizers,
        },
        "spec": {
            "gateway": "tiergate-shared",
            "pod": "tiergate-shared-test",
            "startedAt": stamp(),
            "reportedAt": reported_at or stamp(),
            "final": final,
            "tiers": [
                {
                    "tier": tier,
                    "months": [
                        {
                            "month": month(),
                            "spentNano": nano,
                            "calls": max(1, nano // (USD // 100)),
                            **({"keys": keys[tier]} if keys and tier in keys else {}),
                        }
                    ],
                }
                for tier, nano in tiers.items()
            ],
        },
    }


def create_report(plane: ControlPlane, namespace: str, body: dict[str, Any]) -> None:
    plane.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(body))


def create_tier(plane: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    """A Shared tier with one key Secret (``<name>-keys``, data key ``k``)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-keys"},
        "type": "Opaque",
        "stringData": {"k": f"fake-key-of-{name}-{namespace}"},
    }
    tier = {
        "apiVersion": "tiergate.dev/v1alpha1",
        "kind": "ApiKeyTier",
        "metadata": {"name": name},
        "spec": {"isolation": "Shared", "keys": [{"secretRef": {"name": f"{name}-keys"}}], **spec},
    }
    items = {"apiVersion": "v1", "kind": "List", "items": [secret, tier]}
    plane.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(items))


def spend_of(plane: ControlPlane, namespace: str, tier: str) -> dict[str, Any]:
    body = get_or_none(plane, namespace, "apikeytier", tier) or {}
    return (body.get("status") or {}).get("spend") or {}


def wait_for(check: Any, timeout: float = 60, what: str = "") -> float:
    """Poll ``check`` until truthy; the seconds it took."""
    began = time.monotonic()
    last = None
    while time.monotonic() - began < timeout:
        last = check()
        if last:
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")
