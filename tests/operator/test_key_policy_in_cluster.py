"""keyPolicy on the real API server: a key Secret's real creationTimestamp, seen months later.

A Secret cannot be created old, so the reconciler runs in this process with its clock
35 days ahead, against the real API server, from the store its watches would fill: the
tier reports ``KeyRotationDue`` (and a Warning event) for the Secret older than
``maxAgeDays``, and the config its gateway reads refuses that Secret's key at
creation + ``maxAgeDays`` + ``graceDays``, an expiry the gateways enforce by their clocks.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from tests.support.kube import apply_crds, condition, events, get
from tiergate_contract import GatewayConfig, config_from_configmap, hash_client_key
from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.key_lifecycle import parse_time
from tiergate_operator.kube import KubeApi, load_client_configuration
from tiergate_operator.reconcile import Reconciler
from tiergate_operator.settings import OperatorSettings
from tiergate_operator.store import Store

pytestmark = pytest.mark.cluster

OLD, NEW = "tg-policy-old-0001", "tg-policy-new-0002"


def _listed(plane: ControlPlane, namespace: str, kind: str) -> list[dict[str, Any]]:
    items = json.loads(plane.kubectl("-n", namespace, "get", kind, "-o", "json").stdout)["items"]
    return items  # type: ignore[no-any-return]


def _watched_store(plane: ControlPlane, namespace: str) -> Store:
    """What the operator's watches hold for ``namespace`` (handlers.py fills it the same way)."""
    store = Store()
    for body in _listed(plane, namespace, "modelroutes"):
        store.put_route(body | {"kind": "ModelRoute"})
    for body in _listed(plane, namespace, "apikeytiers"):
        store.put_tier(body | {"kind": "ApiKeyTier"})
    for body in _listed(plane, namespace, "secrets"):
        metadata = body["metadata"]
        store.put_secret(
            namespace, metadata["name"], body.get("data"), metadata.get("creationTimestamp")
        )
    return store


def test_a_secret_older_than_max_age_is_reported_and_refused_after_grace(
    control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = control_plane
    apply_crds(plane)
    plane.kubectl("-n", namespace, "create", "secret", "generic", "old", f"--from-literal=k={OLD}")
    plane.kubectl("-n", namespace, "create", "secret", "generic", "new", f"--from-literal=k={NEW}")
    target = {"name": "a", "baseURL": "http://127.0.0.1:9/v1", "upstreamModel": "up"}
    manifests = [
        {
            "apiVersion": "tiergate.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "chat"},
            "spec": {"model": "chat", "targets": [target]},
        },
        {
            "apiVersion": "tiergate.dev/v1alpha1",
            "kind": "ApiKeyTier",
            "metadata": {"name": "web"},
            "spec": {
                "isolation": "Shared",
                "keys": [{"secretRef": {"name": "old"}}, {"secretRef": {"name": "new"}}],
                "keyPolicy": {"maxAgeDays": 30, "graceDays": 10},
            },
        },
    ]
    plane.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    created = parse_time(get(plane, namespace, "secret", "old")["metadata"]["creationTimestamp"])
    assert created is not None
    later = created + timedelta(days=35)
    store = _watched_store(plane, namespace)
    # Only the old Secret has grown too old: the new one is ten days younger.
    new_created = created + timedelta(days=10)
    store.namespace(namespace).secret_created["new"] = new_created.strftime("%Y-%m-%dT%H:%M:%SZ")

    async def reconcile() -> None:
        monkeypatch.setenv("KUBECONFIG", str(plane.kubeconfig))
        reconciler = Reconciler(
            store, KubeApi(load_client_configuration()), OperatorSettings(), clock=lambda: later
        )
        try:
            await reconciler.reconcile(namespace)
        finally:
            await reconciler.close()

    asyncio.run(reconcile())

    tier = get(plane, namespace, "apikeytier", "web")
    due = condition(tier, "KeyRotationDue")
    assert (due["status"], due["reason"]) == ("True", "MaxAgeExceeded")
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"Secret old created at {stamp}" in due["message"]
    assert "Secret new" not in due["message"]
    (event,) = events(plane, namespace, "web", "MaxAgeExceeded")
    assert event["type"] == "Warning" and "Secret old" in event["message"]
    soon = condition(tier, "KeysExpiringSoon")
    refused_at = created + timedelta(days=40)
    assert (soon["status"], soon["reason"]) == ("True", "ExpiringSoon")
    assert f"Secret old expires at {refused_at.strftime('%Y-%m-%dT%H:%M:%SZ')}" in soon["message"]

    configmap = get(plane, namespace, "configmap", "tiergate-shared")
    config = GatewayConfig.model_validate_json(config_from_configmap(configmap) or b"")
    (web,) = config.tiers
    assert set(web.key_sha256) == {hash_client_key(OLD), hash_client_key(NEW)}
    expiry = {e.sha256: e.expires_at for e in web.key_expiry}
    # Every Secret of known age is refused after its own grace; the new one 10 days later.
    assert expiry == {
        hash_client_key(OLD): refused_at,
        hash_client_key(NEW): refused_at + timedelta(days=10),
    }
