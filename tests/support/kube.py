"""Small helpers for tests that drive the real control plane with kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tiergate_devkit.cluster import ControlPlane
from tiergate_operator.registry import CRD_KINDS, CUSTOM_KINDS, GATEWAY_KINDS, resources

__all__ = [
    "CHILD_KINDS",
    "CRDS",
    "CUSTOM_RESOURCES",
    "EXAMPLES",
    "EXAMPLE_OBJECTS",
    "apply_crds",
    "apply_examples",
    "condition",
    "create",
    "events",
    "eventually",
    "get",
    "get_or_none",
    "kstatus",
    "resource_versions",
    "wait_ready",
]

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = CRDS / "examples"
T = TypeVar("T")
# What the operator creates per gateway, for ``kubectl get``.
CHILD_KINDS = resources(*GATEWAY_KINDS)
CUSTOM_RESOURCES = resources(*CUSTOM_KINDS)


def eventually(
    check: Callable[[], T | None], timeout: float = 60, interval: float = 0.3, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what or check.__name__} (last: {last!r})")


def get(plane: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)  # type: ignore[no-any-return]


def get_or_none(plane: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = plane.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def resource_versions(plane: ControlPlane, namespace: str, kinds: str) -> dict[str, str]:
    """``{kind/name: resourceVersion}`` of every object of ``kinds`` (comma-separated)."""
    items = json.loads(plane.kubectl("-n", namespace, "get", kinds, "-o", "json").stdout)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def apply_crds(plane: ControlPlane) -> None:
    files = [arg for kind in CRD_KINDS for arg in ("-f", str(CRDS / f"{kind.plural}.yaml"))]
    plane.kubectl("apply", "--server-side", "--force-conflicts", *files)
    for kind in CRD_KINDS:
        plane.kubectl(
            "wait", "--for=condition=Established", f"crd/{kind.resource}", "--timeout=30s"
        )


def apply_examples(plane: ControlPlane, namespace: str) -> None:
    plane.kubectl("-n", namespace, "apply", "-k", str(EXAMPLES))


# The examples' route and tiers (crds/examples), as kubectl names them.
EXAMPLE_OBJECTS = ("modelroute/deepseek-chat", "apikeytier/startup", "apikeytier/enterprise-acme")


def wait_ready(plane: ControlPlane, namespace: str, *objects: str, timeout: int = 90) -> None:
    plane.kubectl(
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        *objects,
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


def create(plane: ControlPlane, *manifests: dict[str, Any]) -> None:
    """``kubectl create`` (never apply: no last-applied annotation, no field manager of ours)."""
    items = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    plane.kubectl("create", "-f", "-", input=json.dumps(items))


def kstatus(body: dict[str, Any]) -> str:
    """What kstatus (Flux, Argo CD, ``kubectl wait``'s conventions) reads from a custom resource:
    ``InProgress`` while the status lags the spec or ``Reconciling`` is True, ``Failed`` when
    ``Stalled`` is True, else ``Current``; an object without status reads ``Current``."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    return "Current"


def events(plane: ControlPlane, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    """Events about the object ``name`` with ``reason``."""
    listed = plane.kubectl(
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name},reason={reason}",
        "-o",
        "json",
    ).stdout
    return json.loads(listed)["items"]  # type: ignore[no-any-return]
